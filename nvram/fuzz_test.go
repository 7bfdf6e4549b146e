package nvram

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sealfs/sealfs/errs"
)

// describe renders everything a reader can learn from a directory, so two
// directories can be compared.
func describe(d *Directory) string {
	var b strings.Builder
	for _, in := range d.List() {
		fmt.Fprintf(&b, "%q %q %d m%v o%v err=%v\n", in.Name, in.Type, in.Size, in.Mandatory, in.Optional, in.Err)
		if in.Name == "" {
			continue
		}
		e, err := d.Get(in.Name)
		if (err == nil) != (in.Err == nil) {
			fmt.Fprintf(&b, "  Get and List disagree: %v vs %v\n", err, in.Err)
		}
		if err == nil {
			fmt.Fprintf(&b, "  data %x\n", e.Data)
		}
	}
	return b.String()
}

// FuzzParseDirectory: any input is either refused with ErrCorrupt or
// ErrDirectoryTooLarge, or accepted; an accepted directory re-encodes to
// CER that parses to the same entries, re-encodes to the same bytes (a
// fixed point), is at most two bytes longer than the input, keeps every
// entry's bytes, and survives an edit. Memory is bounded by ParseDirectory's
// limits (TestParseMemoryBounded).
func FuzzParseDirectory(f *testing.F) {
	for _, seed := range [][]byte{
		foreignDir, set(entryA, entryD), cer(), set(),
		cer(entry("data", [][]byte{realsize(9)}, nil, []byte("short"), ptr("e"))),
		cer(entry("tpm", nil, nil, []byte("s"), ptr("e")), entryB),
		cer(entry("data", nil, [][]byte{ia5("a"), seq(ia5("a"))}, nil, ptr("e"))),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		d, err := ParseDirectory(in)
		if err != nil {
			if d != nil {
				t.Fatalf("error %v with a directory", err)
			}
			if !errors.Is(err, errs.ErrCorrupt) && !errors.Is(err, ErrDirectoryTooLarge) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		enc := d.Encode()
		if len(enc) > len(in)+2 {
			t.Fatalf("%d input bytes encode to %d", len(in), len(enc))
		}
		for _, e := range d.entries {
			if !bytes.Contains(enc, e.raw) {
				t.Fatalf("entry %q lost on rewrite", e.name)
			}
		}
		d2, err := ParseDirectory(enc)
		if err != nil {
			t.Fatalf("the re-encoding of an accepted directory is refused: %v", err)
		}
		if a, b := describe(d), describe(d2); a != b {
			t.Fatalf("round trip changed the directory:\n%s\nvs\n%s", a, b)
		}
		if enc2 := d2.Encode(); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not a fixed point")
		}

		// An edit keeps the others: replace or add one entry, remove another.
		list := d2.List()
		if err := d2.Put(&Entry{Name: "fuzz-added", Type: "data", Data: in[:len(in)/2]}); err != nil {
			t.Fatal(err)
		}
		removed := ""
		for _, in := range list {
			if in.Name != "" && in.Name != "fuzz-added" {
				removed = in.Name
				if err := d2.Remove(removed); err != nil {
					t.Fatal(err)
				}
				break
			}
		}
		d3, err := ParseDirectory(d2.Encode())
		if err != nil {
			t.Fatalf("an edited directory is refused: %v", err)
		}
		if e, err := d3.Get("fuzz-added"); err != nil || !bytes.Equal(e.Data, in[:len(in)/2]) {
			t.Fatalf("the added entry reads back as %v, %v", e, err)
		}
		if removed != "" && d3.Has(removed) {
			t.Fatalf("removed entry %q is back", removed)
		}
		want := len(list) + 1
		if removed != "" {
			want--
		}
		if d.Has("fuzz-added") {
			want--
		}
		if d3.Len() != want {
			t.Fatalf("%d entries after the edit, want %d", d3.Len(), want)
		}
	})
}
