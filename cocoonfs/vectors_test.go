package cocoonfs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"strconv"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/internal/testutil"
)

var vectorKey = []byte{0xaa, 0xbb, 0xcc}

// plaintext sha256s from the vectors' README.
var plainSHA = map[string]string{
	"small.bin":    "904ef1fc335aed113b121f0478f5c68768486dd1f606e56bf5383ccde32c2d9d",
	"rand100k.bin": "92897f9b419d91a7b8306da82af298a57710f65ccd75c73376c32f27ee22461d",
	"rand1m.bin":   "faffc8956e7ef6f187ca37bb44e1ae851523c420c16e45b159b8d41ba06ef419",
	"empty.bin":    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
}

// formatted lists the formatted vector images and the files each holds.
var formatted = []struct {
	image string
	files map[uint64]string
}{
	{"v01-sha2-aes128.img", map[uint64]string{42: "small.bin", 43: "rand100k.bin"}},
	{"v02-sha2-aes128-removed42.img", map[uint64]string{43: "rand100k.bin"}},
	{"v04-sha3-camellia128.img", map[uint64]string{42: "small.bin", 43: "rand100k.bin"}},
	{"v05-sm3-sm4.img", map[uint64]string{42: "small.bin", 43: "rand100k.bin"}},
	{"v06-sha2-aes128-io4k.img", map[uint64]string{42: "small.bin", 43: "rand100k.bin", 44: "rand1m.bin", 45: "empty.bin"}},
	{"v11-sha2-aes128-auxmeta.img", map[uint64]string{42: "small.bin"}},
}

// vectorPath returns the path of a reference CocoonFS vector (README of
// ../shared/vectors/cocoonfs), skipping the test when neither the
// repository nor ../shared has it.
func vectorPath(t testing.TB, name string) string {
	t.Helper()
	return testutil.Vector(t, "cocoonfs/"+name)
}

// openVector opens a vector read-only as a file device.
func openVector(t testing.TB, name string) blockdev.Device {
	t.Helper()
	dev, err := blockdev.OpenFile(vectorPath(t, name), &blockdev.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	return dev
}

func TestVectorsOpenListRead(t *testing.T) {
	for _, v := range formatted {
		t.Run(v.image, func(t *testing.T) {
			f, err := Open(openVector(t, v.image), vectorKey, nil)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer f.Close()
			got := map[uint64]bool{}
			for ino, err := range f.Inodes() {
				if err != nil {
					t.Fatalf("Inodes: %v", err)
				}
				got[ino.Ino] = true
				if _, ok := v.files[ino.Ino]; !ok {
					t.Errorf("unexpected inode %d", ino.Ino)
				}
			}
			for ino, name := range v.files {
				if !got[ino] {
					t.Errorf("inode %d missing from the listing", ino)
				}
				data, err := f.ReadFile(ino)
				if err != nil {
					t.Fatalf("ReadFile(%d): %v", ino, err)
				}
				sum := sha256.Sum256(data)
				if hex.EncodeToString(sum[:]) != plainSHA[name] {
					t.Errorf("inode %d: sha256 %x, want %s (%s)", ino, sum, plainSHA[name], name)
				}
			}
			if _, err := f.ReadFile(4242); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("ReadFile(4242) = %v, want fs.ErrNotExist", err)
			}
		})
	}
}

func TestVectorsVerify(t *testing.T) {
	for _, v := range formatted {
		t.Run(v.image, func(t *testing.T) {
			f, err := Open(openVector(t, v.image), vectorKey, nil)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := f.Verify(t.Context(), nil)
			if err != nil {
				t.Fatalf("Verify: %v\n%v", err, rep.Problems)
			}
			if rep.Inodes != len(v.files) || rep.DataBlocks != f.tree.dataBlocks {
				t.Errorf("report %+v, want %d inodes and %d data blocks", rep, len(v.files), f.tree.dataBlocks)
			}
		})
	}
}

func formatIno(ino uint64) string { return strconv.FormatUint(ino, 10) }
