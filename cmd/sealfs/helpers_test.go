package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sealfs/sealfs/internal/testutil"
)

const v01 = "v01-sha2-aes128.img" // 42 → small.bin, 43 → rand100k.bin

// tamperOffset lies inside inode 43's data in v01 (allocation block 36,
// byte 40): flipping it leaves Open and inode 42 intact, so a read of 43 and
// verify must report an authentication failure rather than a wrong key.
// Found by flipping byte 40 of every allocation block and reading back.
const tamperOffset = 0x1228

// vector returns the path of an image written by the reference cocoonfs
// tool (README of ../shared/vectors/cocoonfs: keys, inodes, plaintext
// hashes), skipping the test when neither the repository nor ../shared has
// it.
func vector(t testing.TB, name string) string {
	t.Helper()
	return testutil.Vector(t, "cocoonfs/"+name)
}

// writeTemp writes data to a new file in a per-test directory.
func writeTemp(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func keyFile(t testing.TB, key ...byte) string { return writeTemp(t, "key", key) }

// tamperedCopy copies v01 and flips one bit at tamperOffset.
func tamperedCopy(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(vector(t, v01))
	if err != nil {
		t.Fatal(err)
	}
	b[tamperOffset] ^= 1
	return writeTemp(t, "tampered.img", b)
}
