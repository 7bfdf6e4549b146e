package cocoonfs

import (
	"bytes"
	"fmt"
	"testing"
)

// TestKeyCachesBounded writes and reads back more files than the keyring
// caches keys and ciphers for: every file still decrypts with its own key
// after others pushed it out, and neither cache grows past its bound.
func TestKeyCachesBounded(t *testing.T) {
	f := openRW(t, mkfsMem(t, 16<<20, &MkfsOptions{NoRandomizeUnallocated: true}))
	n := maxCachedKeys + 500
	content := func(i int) []byte { return []byte(fmt.Sprintf("file %d", i)) }
	tx, err := f.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := tx.WriteFile(uint64(100+i), content(i), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		for i := range n {
			got, err := f.ReadFile(uint64(100 + i))
			if err != nil || !bytes.Equal(got, content(i)) {
				t.Fatalf("round %d: inode %d: %q, %v", round, 100+i, got, err)
			}
		}
	}
	if len(f.keys.cache) > maxCachedKeys || len(f.keys.ciphers) > maxCachedKeys {
		t.Fatalf("%d subkeys and %d ciphers cached, the bound is %d", len(f.keys.cache), len(f.keys.ciphers), maxCachedKeys)
	}
}
