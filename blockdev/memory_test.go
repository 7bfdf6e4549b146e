package blockdev

import (
	"bytes"
	"errors"
	"testing"
)

func TestMemorySnapshots(t *testing.T) {
	src := pattern(4096, 11)
	orig := append([]byte(nil), src...)
	m := NewMemoryFrom(src, 0)
	if m.BlockSize() != DefaultBlockSize {
		t.Errorf("BlockSize with 0 = %d; want %d", m.BlockSize(), DefaultBlockSize)
	}
	// The device must own its bytes: crash tests rebuild many images from
	// one snapshot and rely on it staying intact.
	if _, err := m.WriteAt([]byte{0xff, 0xff}, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(src, orig) {
		t.Fatal("writing the device changed the slice it was made from")
	}
	src[100] ^= 1
	if b := m.Bytes(); b[100] != orig[100] {
		t.Fatal("changing the source slice changed the device")
	}
	snap := m.Bytes()
	snap[200] ^= 1
	if b := m.Bytes(); b[200] != orig[200] {
		t.Fatal("changing a Bytes snapshot changed the device")
	}
	if _, err := m.WriteAt([]byte{1}, 300); err != nil {
		t.Fatal(err)
	}
	if snap[300] != orig[300] {
		t.Fatal("a write changed an earlier Bytes snapshot")
	}
}

func TestMemorySetReadOnly(t *testing.T) {
	m := NewMemory(1024, 512)
	m.SetReadOnly(true)
	if _, err := m.WriteAt([]byte{1}, 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("WriteAt on read-only = %v", err)
	}
	m.SetReadOnly(false)
	if _, err := m.WriteAt([]byte{1}, 0); err != nil {
		t.Fatalf("WriteAt after SetReadOnly(false) = %v", err)
	}
	if m.ReadOnly() {
		t.Fatal("ReadOnly after SetReadOnly(false)")
	}
}

func TestMemoryPanicsOnBadArguments(t *testing.T) {
	for _, tc := range []struct {
		name string
		fn   func()
	}{
		{"negative size", func() { NewMemory(-1, 512) }},
		{"block size 256", func() { NewMemory(1024, 256) }},
		{"block size 1000", func() { NewMemory(1024, 1000) }},
		{"negative block size", func() { NewMemory(1024, -512) }},
		{"from, block size 3", func() { NewMemoryFrom(nil, 3) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			tc.fn()
		})
	}
}

func TestEqual(t *testing.T) {
	a := pattern(3<<20+5, 12) // spans several comparison chunks
	for _, tc := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"same", a, true},
		{"last byte", append(append([]byte(nil), a[:len(a)-1]...), a[len(a)-1]^1), false},
		{"second chunk", func() []byte { b := append([]byte(nil), a...); b[copyChunk+7] ^= 0x80; return b }(), false},
		{"shorter", a[:len(a)-1], false},
	} {
		got, err := Equal(NewMemoryFrom(a, 0), NewMemoryFrom(tc.b, 0))
		if err != nil || got != tc.want {
			t.Errorf("%s: Equal = %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	if ok, err := Equal(NewMemory(0, 0), NewMemory(0, 0)); !ok || err != nil {
		t.Errorf("empty devices: Equal = %v, %v", ok, err)
	}
}
