package cocoonfs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/tcg"
)

// strengthVectors are the reference's small images, one per hash family and
// strength; each holds 42 = small.bin and 43 = rand100k.bin.
var strengthVectors = []struct {
	image            string
	hash, cipher     string
	strength         int
	tree, root, base tcg.AlgID
}{
	{"s01-sha2-aes128-1m.img", "sha2", "aes", 128, tcg.AlgSHA256, tcg.AlgSHA256, tcg.AlgSHA256},
	{"s02-sha3-camellia128-1m.img", "sha3", "camellia", 128, tcg.AlgSHA3_256, tcg.AlgSHA3_256, tcg.AlgSHA3_256},
	{"s03-sm3-sm4-1m.img", "sm3", "sm4", 128, tcg.AlgSM3_256, tcg.AlgSM3_256, tcg.AlgSM3_256},
	{"s04-sha2-aes192-1m.img", "sha2", "aes", 192, tcg.AlgSHA384, tcg.AlgSHA256, tcg.AlgSHA256},
	{"s05-sha3-camellia192-1m.img", "sha3", "camellia", 192, tcg.AlgSHA3_384, tcg.AlgSHA3_256, tcg.AlgSHA3_256},
	{"s06-sha2-aes256-1m.img", "sha2", "aes", 256, tcg.AlgSHA512, tcg.AlgSHA256, tcg.AlgSHA256},
	{"s07-sha3-camellia256-1m.img", "sha3", "camellia", 256, tcg.AlgSHA3_512, tcg.AlgSHA3_256, tcg.AlgSHA3_256},
}

// TestStrengthVectors opens, verifies and reads the reference image of every
// hash family and strength, and checks that SelectAlgorithms (what mkfs
// uses) picks exactly the algorithms the reference's mkfs recorded.
func TestStrengthVectors(t *testing.T) {
	for _, v := range strengthVectors {
		t.Run(v.image, func(t *testing.T) {
			f, err := Open(openVector(t, v.image), vectorKey, nil)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer f.Close()
			l := f.layout
			got := []tcg.AlgID{tcg.AlgID(l.AuthTreeNodeHash), tcg.AlgID(l.AuthTreeDataHMACHash), tcg.AlgID(l.AuthTreeRootHMACHash), tcg.AlgID(l.PreauthHMACHash), tcg.AlgID(l.KDFHash)}
			want := []tcg.AlgID{v.tree, v.tree, v.root, v.base, v.base}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("image records node, data, root, preauth, kdf = %v, want %v", got, want)
			}
			node, data, root, pre, kdf, c, kb, err := SelectAlgorithms(v.hash, v.cipher, v.strength)
			if err != nil {
				t.Fatal(err)
			}
			picked := []uint16{node, data, root, pre, kdf, c, kb}
			recorded := []uint16{l.AuthTreeNodeHash, l.AuthTreeDataHMACHash, l.AuthTreeRootHMACHash, l.PreauthHMACHash, l.KDFHash, l.Cipher, l.CipherKeyBits}
			if fmt.Sprint(picked) != fmt.Sprint(recorded) {
				t.Errorf("SelectAlgorithms(%s, %s, %d) = %v, the reference recorded %v", v.hash, v.cipher, v.strength, picked, recorded)
			}
			for ino, name := range map[uint64]string{42: "small.bin", 43: "rand100k.bin"} {
				b, err := f.ReadFile(ino)
				if err != nil {
					t.Fatalf("ReadFile(%d): %v", ino, err)
				}
				if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != plainSHA[name] {
					t.Errorf("inode %d: wrong contents", ino)
				}
			}
			if rep, err := f.Verify(t.Context(), nil); err != nil {
				t.Fatalf("Verify: %v %v", err, rep.Problems)
			}
			if _, err := Open(openVector(t, v.image), []byte{0, 0x11, 0x22}, nil); err == nil {
				t.Error("a wrong key opened the image")
			}
		})
	}
}

// referenceTool returns the reference cocoonfs CLI: $SEALFS_REFERENCE_COCOONFS
// or ../shared/reference/cocoonfs. Without it the test skips, except under
// CI=true, where the reference is always there.
func referenceTool(t *testing.T) string {
	t.Helper()
	p := os.Getenv("SEALFS_REFERENCE_COCOONFS")
	if p == "" {
		_, file, _, _ := runtime.Caller(0)
		p = filepath.Join(filepath.Dir(file), "..", "..", "shared", "reference", "cocoonfs")
	}
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("reference cocoonfs tool missing at %s (set SEALFS_REFERENCE_COCOONFS)", p)
	}
	t.Skipf("reference cocoonfs tool missing at %s (set SEALFS_REFERENCE_COCOONFS); skipping the two-way interop check", p)
	return ""
}

func runReference(t *testing.T, ref string, args ...string) string {
	t.Helper()
	out, err := exec.Command(ref, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("cocoonfs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestReferenceInteropEveryStrength goes both ways at every hash family and
// strength: images the reference makes and writes open and read in sealfs,
// and images sealfs makes and writes list and read in the reference.
func TestReferenceInteropEveryStrength(t *testing.T) {
	ref := referenceTool(t)
	for _, v := range strengthVectors {
		name := fmt.Sprintf("%s-%s-%d", v.hash, v.cipher, v.strength)
		payload := bytes.Repeat([]byte(name+"|"), 997)
		t.Run("reference-to-sealfs/"+name, func(t *testing.T) {
			dir := t.TempDir()
			img, in := filepath.Join(dir, "img"), filepath.Join(dir, "in")
			if err := os.WriteFile(in, payload, 0o600); err != nil {
				t.Fatal(err)
			}
			runReference(t, ref, "-f", "-i", img, "mkfs", "-K", "aabbcc", "-H", v.hash, "-C", v.cipher, "-t", strconv.Itoa(v.strength), "-I", "ddeeff", "-s", "1M", "-n")
			runReference(t, ref, "-f", "-i", img, "write-file", "-K", "aabbcc", "-i", in, "77")
			dev, err := blockdev.OpenFile(img, &blockdev.FileOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			f, err := Open(dev, vectorKey, nil)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if got, err := f.ReadFile(77); err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("ReadFile(77) = %d bytes, %v; want the %d bytes the reference wrote", len(got), err, len(payload))
			}
			if rep, err := f.Verify(t.Context(), nil); err != nil {
				t.Fatalf("Verify: %v %v", err, rep.Problems)
			}
		})
		t.Run("sealfs-to-reference/"+name, func(t *testing.T) {
			dir := t.TempDir()
			img, out := filepath.Join(dir, "img"), filepath.Join(dir, "out")
			dev, err := blockdev.CreateFile(img, 1<<20, nil)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Mkfs(dev, vectorKey, &MkfsOptions{Size: 1 << 20, Hash: v.hash, Cipher: v.cipher, Strength: v.strength, Force: true})
			if err != nil {
				t.Fatalf("Mkfs: %v", err)
			}
			m.Close()
			f, err := Open(dev, vectorKey, &Options{ReadWrite: true, Force: true})
			if err != nil {
				t.Fatal(err)
			}
			tx, err := f.Begin()
			if err != nil {
				t.Fatal(err)
			}
			if err := tx.WriteFile(77, payload, 0); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(t.Context()); err != nil {
				t.Fatal(err)
			}
			f.Close()
			dev.Close()
			if list := runReference(t, ref, "-f", "-i", img, "list-files", "-K", "aabbcc"); !strings.Contains(list, "77") {
				t.Fatalf("reference list-files does not show inode 77:\n%s", list)
			}
			runReference(t, ref, "-f", "-i", img, "read-file", "-K", "aabbcc", "-o", out, "77")
			if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("the reference read %d bytes (%v), want the %d sealfs wrote", len(got), err, len(payload))
			}
		})
	}
}

// TestReferenceReadsFragmentedFiles: files sealfs writes in pieces (segments
// around other files' blocks, so several extents and an extents list) read
// back byte for byte in the reference, and files the reference writes read
// in sealfs.
func TestReferenceReadsFragmentedFiles(t *testing.T) {
	ref := referenceTool(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	dev, err := blockdev.CreateFile(img, 16<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Mkfs(dev, vectorKey, &MkfsOptions{Size: 16 << 20, Force: true, NoRandomizeUnallocated: true})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	f, err := Open(dev, vectorKey, &Options{ReadWrite: true, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	// Fill most of the image, then free every other file: a large file
	// then has only the holes to go to.
	small := map[uint64][]byte{}
	for i := uint64(0); i < 40; i++ {
		small[100+i] = bytes.Repeat([]byte{byte(i)}, 300000+int(i)*999)
	}
	writeFiles(t, f, small)
	tx, _ := f.Begin()
	for i := uint64(0); i < 40; i += 2 {
		if err := tx.Remove(100 + i); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 5<<20+777)
	for i := range big {
		big[i] = byte(i*31 + i>>11)
	}
	writeFiles(t, f, map[uint64][]byte{200: big})
	rd, err := f.OpenFile(200)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(rd.snap.extents); n < 3 {
		t.Fatalf("the big file landed in %d extents; the test wants it fragmented", n)
	}
	f.Close()
	dev.Close()
	out := filepath.Join(dir, "out")
	runReference(t, ref, "-f", "-i", img, "read-file", "-K", "aabbcc", "-o", out, "200")
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("the reference read %d bytes of the fragmented file (%v), want %d", len(got), err, len(big))
	}
	runReference(t, ref, "-f", "-i", img, "read-file", "-K", "aabbcc", "-o", out, "101")
	if got, _ := os.ReadFile(out); !bytes.Equal(got, small[101]) {
		t.Fatal("the reference read inode 101 wrong")
	}
	// And back: the reference overwrites the big file; sealfs reads it.
	in := filepath.Join(dir, "in")
	if err := os.WriteFile(in, big[:3<<20], 0o600); err != nil {
		t.Fatal(err)
	}
	runReference(t, ref, "-f", "-i", img, "write-file", "-K", "aabbcc", "-i", in, "200")
	dev, err = blockdev.OpenFile(img, &blockdev.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	g, err := Open(dev, vectorKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := g.ReadFile(200); err != nil || !bytes.Equal(got, big[:3<<20]) {
		t.Fatalf("sealfs read %d bytes of the reference's rewrite (%v)", len(got), err)
	}
	if rep, err := g.Verify(t.Context(), nil); err != nil {
		t.Fatalf("Verify: %v %v", err, rep.Problems)
	}
}
