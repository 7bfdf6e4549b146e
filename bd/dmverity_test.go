package bd

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/internal/testutil"
)

// TestDmVerityVeritysetup opens an image whose hash device `veritysetup
// format` made, reads it back verified, refuses writes and detects a
// flipped data bit.
func TestDmVerityVeritysetup(t *testing.T) {
	vs := testutil.RequireTool(t, "veritysetup")
	dir := t.TempDir()
	dataPath, hashPath := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
	init := pattern(64*4096, 50)
	if err := os.WriteFile(dataPath, init, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(vs, "format", dataPath, hashPath).CombinedOutput()
	if err != nil {
		t.Fatalf("veritysetup format: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Root hash:\s+([0-9a-f]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no root hash in veritysetup output:\n%s", out)
	}
	root, _ := hex.DecodeString(string(m[1]))
	data := must(blockdev.OpenFile(dataPath, &blockdev.FileOptions{ReadOnly: true}))
	defer data.Close()
	hashDev := must(blockdev.OpenFile(hashPath, &blockdev.FileOptions{ReadOnly: true}))
	defer hashDev.Close()
	d, err := OpenDmVerity(data, hashDev, root, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkContents(t, d, init)
	if _, err := d.WriteAt(make([]byte, 4096), 0); !errors.Is(err, blockdev.ErrReadOnly) {
		t.Errorf("WriteAt = %v; want ErrReadOnly", err)
	}
	bad := bytes.Clone(root)
	bad[0] ^= 1
	d2, err := OpenDmVerity(data, hashDev, bad, nil)
	if err == nil {
		if _, err = readBlock(d2, 0); !isAuth(err) {
			t.Errorf("read with a wrong root = %v; want ErrAuthentication", err)
		}
	}
	// Flip one data bit: only that block fails.
	mem := blockdev.NewMemoryFrom(init, 512)
	blockdev.NewFaulty(mem).FlipBit(10*4096+3, 1)
	d3 := must(OpenDmVerity(mem, hashDev, root, nil))
	expectOnlyBad(t, d3, init, 10)
}
