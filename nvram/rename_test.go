package nvram

import (
	"bytes"
	"errors"
	"fmt"
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

// FuzzDirectoryRename: renaming any entry of any directory that parses, to
// any name, either is refused (an invalid name: fs.ErrInvalid) or leaves a
// directory that encodes and parses back with the entry under its new name,
// its type, size, attributes and usability unchanged, and no entry lost
// but the one it replaced.
func FuzzDirectoryRename(f *testing.F) {
	f.Add(foreignDir, "moved")
	f.Add(foreignDir, "future")
	f.Add(foreignDir, "")
	f.Add(NewDirectory().Encode(), "x")
	f.Fuzz(func(t *testing.T, raw []byte, newName string) {
		d, err := ParseDirectory(raw)
		if err != nil {
			return
		}
		list := d.List()
		if len(list) == 0 || list[0].Name == "" {
			return
		}
		src := list[0]
		replaced := d.Has(newName) && newName != src.Name
		n := d.Len()
		err = d.Rename(src.Name, newName)
		if err != nil {
			if !errors.Is(err, fs.ErrInvalid) {
				t.Fatalf("Rename(%q, %q): %v", src.Name, newName, err)
			}
			return
		}
		d2, err := ParseDirectory(d.Encode())
		if err != nil {
			t.Fatalf("renamed directory does not parse: %v", err)
		}
		want := n
		if replaced {
			want--
		}
		if d2.Len() != want {
			t.Fatalf("%d entries after the rename, want %d", d2.Len(), want)
		}
		var got *Info
		for _, in := range d2.List() {
			if in.Name == newName {
				got = &in
			}
		}
		if got == nil {
			t.Fatalf("no entry named %q after the rename", newName)
		}
		if got.Type != src.Type || got.Size != src.Size || (got.Err == nil) != (src.Err == nil) ||
			fmt.Sprint(got.Mandatory, got.Optional) != fmt.Sprint(src.Mandatory, src.Optional) {
			t.Fatalf("renamed entry %+v, was %+v", *got, src)
		}
		if newName != src.Name && d2.Has(src.Name) {
			t.Fatalf("old name %q still there", src.Name)
		}
	})
}
