package tpm

import (
	"bytes"
	"os"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs"
	"github.com/sealfs/sealfs/nvram"
)

var testKey = bytes.Repeat([]byte{0xa5}, 32)

// newStore formats an in-memory CocoonFS image and opens its NVRAM store.
func newStore(t testing.TB) (*nvram.Store, *cocoonfs.FS) {
	t.Helper()
	dev := blockdev.NewMemory(4<<20, 512)
	f, err := cocoonfs.Mkfs(dev, testKey, &cocoonfs.MkfsOptions{NoRandomizeUnallocated: true})
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	f, err = cocoonfs.Open(dev, testKey, &cocoonfs.Options{ReadWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	s, err := nvram.Open(f, &nvram.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	return s, f
}

// mustBeEmpty fails unless dir exists and holds nothing.
func mustBeEmpty(t testing.TB, dir, when string) {
	t.Helper()
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("%s: %s left behind in %s", when, e.Name(), dir)
	}
}
