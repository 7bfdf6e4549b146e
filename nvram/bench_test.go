package nvram

import (
	"bytes"
	"context"
	"fmt"
	"testing"
)

// tpmSizedDirectory is a vTPM's store plus some firmware variables: a
// 64 KiB permanent state, a 16 KiB volatile state and 50 small entries.
func tpmSizedDirectory(b *testing.B) *Directory {
	d := NewDirectory()
	put := func(e *Entry) {
		if err := d.Put(e); err != nil {
			b.Fatal(err)
		}
	}
	put(&Entry{Name: "tpm2-00.permall", Type: TypeTPM, Data: bytes.Repeat([]byte{1}, 64<<10)})
	put(&Entry{Name: "tpm2-00.volatilestate", Type: TypeTPM, Data: bytes.Repeat([]byte{2}, 16<<10)})
	for i := 0; i < 50; i++ {
		put(&Entry{Name: fmt.Sprintf("var-%02d", i), Type: "uefi-var", Data: bytes.Repeat([]byte{3}, 200),
			Optional: []Attribute{OctetsAttribute("guid", []byte("8be4df61-93ca-11d2-aa0d-00e098032b8c"))}})
	}
	return d
}

// BenchmarkParseDirectory: decoding the directory, which every Store call
// does once.
func BenchmarkParseDirectory(b *testing.B) {
	enc := tpmSizedDirectory(b).Encode()
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseDirectory(enc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStoreUpdateTPM: what swtpm's state costs per change: permall
// and volatile state rewritten together in one transaction, on an
// in-memory image.
func BenchmarkStoreUpdateTPM(b *testing.B) {
	ctx := context.Background()
	_, fsys := newImage(b, 8<<20)
	s, err := Open(fsys, &Options{Create: true})
	if err != nil {
		b.Fatal(err)
	}
	d := tpmSizedDirectory(b)
	if err := s.Update(ctx, func(w *Directory) error {
		for _, in := range d.List() {
			e, _ := d.Get(in.Name)
			if err := w.Put(e); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	perm := bytes.Repeat([]byte{4}, 64<<10)
	vol := bytes.Repeat([]byte{5}, 16<<10)
	b.SetBytes(int64(len(perm) + len(vol)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		perm[0], vol[0] = byte(i), byte(i)
		err := s.Update(ctx, func(w *Directory) error {
			if err := w.Put(&Entry{Name: "tpm2-00.permall", Type: TypeTPM, Data: perm}); err != nil {
				return err
			}
			return w.Put(&Entry{Name: "tpm2-00.volatilestate", Type: TypeTPM, Data: vol})
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStoreGet: reading one entry (the directory is read and parsed
// each time).
func BenchmarkStoreGet(b *testing.B) {
	_, fsys := newImage(b, 8<<20)
	s, _ := Open(fsys, &Options{Create: true})
	d := tpmSizedDirectory(b)
	s.Update(context.Background(), func(w *Directory) error {
		for _, in := range d.List() {
			e, _ := d.Get(in.Name)
			w.Put(e)
		}
		return nil
	})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Get("tpm2-00.permall"); err != nil {
			b.Fatal(err)
		}
	}
}
