package cocoonfs

import (
	"bytes"
	"testing"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

func TestDisguiseTransform(t *testing.T) {
	d := &disk.StagingDisguise{Cipher: 0x0006, KeyBits: 128, Key: bytes.Repeat([]byte{1}, 16), IVKey: bytes.Repeat([]byte{2}, 16)}
	g, err := newDisguise(d)
	if err != nil {
		t.Fatal(err)
	}
	plain := bytes.Repeat([]byte("same block bytes"), 16) // two identical 128 B blocks
	a := bytes.Clone(plain)
	g.transform(true, a, 100, 500, 128)
	if bytes.Equal(a[:128], plain[:128]) || bytes.Equal(a[:128], a[128:]) {
		t.Fatal("disguise leaves a block, or two identical blocks, recognizable")
	}
	b := bytes.Clone(plain)
	g.transform(true, b, 100, 501, 128)
	if bytes.Equal(a, b) {
		t.Fatal("the disguise does not depend on the staging location")
	}
	g.transform(false, a, 100, 500, 128)
	if !bytes.Equal(a, plain) {
		t.Fatal("undisguise does not restore the staging copy")
	}
	if _, err := newDisguise(&disk.StagingDisguise{Cipher: 0x1234, KeyBits: 128, Key: d.Key, IVKey: d.IVKey}); err == nil {
		t.Error("unknown disguise cipher accepted")
	}
	if _, err := newDisguise(&disk.StagingDisguise{Cipher: 0x0006, KeyBits: 128, Key: d.Key[:5], IVKey: d.IVKey}); err == nil {
		t.Error("short disguise key accepted")
	}
}
