package nvram

import (
	"bytes"
	"errors"
	"io/fs"
	"testing"
)

// TestRename moves entries byte for byte, an unusable one included, over
// an existing name or not.
func TestRename(t *testing.T) {
	d, err := ParseDirectory(foreignDir)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := d.Get("tpm2-00.permall")
	// Over nothing.
	if err := d.Rename("tpm2-00.permall", "moved"); err != nil {
		t.Fatal(err)
	}
	if d.Has("tpm2-00.permall") {
		t.Fatal("old name still there")
	}
	got, err := d.Get("moved")
	if err != nil || got.Type != before.Type || !bytes.Equal(got.Data, before.Data) || len(got.Optional) != len(before.Optional) {
		t.Fatalf("renamed entry: %+v, %v; was %+v", got, err, before)
	}
	// An unusable entry (unknown mandatory attribute), over a usable one.
	if err := d.Rename("future", "moved"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Get("moved"); !errors.Is(err, ErrUnknownMandatory) {
		t.Fatalf("renamed unusable entry reads %v", err)
	}
	n := d.Len()
	// The directory encodes and reads back with the new names.
	d2, err := ParseDirectory(d.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if d2.Len() != n || d2.Has("future") || !d2.Has("moved") {
		t.Fatalf("reread: %d entries, %v", d2.Len(), d2.List())
	}
	if _, err := d2.Get("moved"); !errors.Is(err, ErrUnknownMandatory) {
		t.Fatalf("reread unusable entry: %v", err)
	}
	for _, c := range []struct {
		old, new string
		want     error
	}{
		{"missing", "x", fs.ErrNotExist},
		{"moved", "a/b", fs.ErrInvalid},
		{"moved", "", fs.ErrInvalid},
		{"moved", "..", fs.ErrInvalid},
	} {
		if err := d.Rename(c.old, c.new); !errors.Is(err, c.want) {
			t.Errorf("Rename(%q, %q) = %v, want %v", c.old, c.new, err, c.want)
		}
	}
	if err := d.Rename("moved", "moved"); err != nil || !d.Has("moved") {
		t.Errorf("rename to itself: %v", err)
	}
}
