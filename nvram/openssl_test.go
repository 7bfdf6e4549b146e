package nvram

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sealfs/sealfs/internal/testutil"
)

// TestOpenSSLReadsDirectory: the directory file, as the store writes it in
// a CocoonFS image, is read by `openssl asn1parse -inform DER`, which sees
// an indefinite-length SET of one SEQUENCE per entry closed by
// end-of-contents, with the names, types and attributes where the format
// puts them.
func TestOpenSSLReadsDirectory(t *testing.T) {
	openssl := testutil.RequireTool(t, "openssl")
	ctx := context.Background()
	_, fsys := newImage(t, 1<<20)
	tx, _ := fsys.Begin()
	tx.WriteFile(DirectoryInode, foreignDir, 0) // entries from another writer
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := Open(fsys, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, &Entry{Name: "tpm2-00.volatile", Type: TypeTPM, Data: make([]byte, 3000),
		Optional: []Attribute{OctetsAttribute("owner", []byte("sealfs-test"))}}); err != nil {
		t.Fatal(err)
	}
	dir, err := fsys.ReadFile(DirectoryInode)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "directory.der")
	if err := os.WriteFile(path, dir, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(openssl, "asn1parse", "-inform", "DER", "-in", path, "-i").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl asn1parse: %v\n%s", err, out)
	}
	text := string(out)
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if !regexp.MustCompile(`^\s*0:d=0\s+hl=2 l=inf\s+cons: SET`).MatchString(lines[0]) {
		t.Errorf("first line %q: want an indefinite-length SET", lines[0])
	}
	if !strings.Contains(lines[len(lines)-1], "d=1") || !strings.Contains(lines[len(lines)-1], "EOC") {
		t.Errorf("last line %q: want the end-of-contents octets", lines[len(lines)-1])
	}
	entries := regexp.MustCompile(`(?m)d=1\s+hl=\d+ l=\s*\d+ cons:\s+SEQUENCE`).FindAllString(text, -1)
	if len(entries) != 5 {
		t.Errorf("openssl sees %d entries, want 5:\n%s", len(entries), text)
	}
	for _, want := range []string{
		`d=2\s+hl=2 l=\s*16 prim:\s+UTF8STRING\s+:tpm2-00.volatile`,
		`d=3\s+hl=2 l=\s*3 prim:\s+IA5STRING\s+:tpm`,
		`d=5\s+hl=2 l=\s*8 prim:\s+IA5STRING\s+:realsize`,
		`d=5\s+hl=2 l=\s*8 prim:\s+OCTET STRING\s+\[HEX DUMP\]:0000000000000BB8`,
		`d=5\s+hl=2 l=\s*11 prim:\s+OCTET STRING\s+:sealfs-test`,
		`d=3\s+hl=4 l=\s*3000 prim:\s+OCTET STRING`,
		`d=5\s+hl=2 l=\s*12 prim:\s+IA5STRING\s+:x-compressed`,
		`d=5\s+hl=2 l=\s*1 prim:\s+INTEGER\s+:07`,
		`d=2\s+hl=2 l=\s*6 prim:\s+UTF8STRING\s+:future`,
	} {
		if !regexp.MustCompile(want).MatchString(text) {
			t.Errorf("openssl output lacks %q:\n%s", want, text)
		}
	}

	// The check can fail: openssl refuses a directory cut inside its last
	// entry.
	if err := os.WriteFile(path, dir[:len(dir)-10], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command(openssl, "asn1parse", "-inform", "DER", "-in", path).Run(); err == nil {
		t.Errorf("openssl accepts a truncated directory")
	}
}
