package tpm

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/sealfs/sealfs/nvram"
)

func TestExportImport(t *testing.T) {
	ctx := context.Background()
	s, f := newStore(t)
	dir := filepath.Join(t.TempDir(), "state")
	if _, err := Export(s, dir); !errors.Is(err, ErrNoState) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Export of an empty store = %v, want ErrNoState", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a failed export created the directory")
	}
	perm, vol := bytes.Repeat([]byte("P"), 7000), []byte("volatile")
	err := s.Update(ctx, func(d *nvram.Directory) error {
		for _, e := range []*nvram.Entry{
			{Name: PermAll, Type: nvram.TypeTPM, Data: perm, Optional: []nvram.Attribute{nvram.OctetsAttribute("x-origin", []byte("test"))}},
			{Name: Volatile, Type: nvram.TypeTPM, Data: vol},
			{Name: "other", Type: "data", Data: []byte("not TPM state")},
		} {
			if err := d.Put(e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A stale savestate in the directory is removed by the export.
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, SaveState), []byte("stale"), 0o644)
	res, err := Export(s, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Files) != 2 || len(res.Removed) != 1 || res.Removed[0] != SaveState || res.Bytes != int64(len(perm)+len(vol)) {
		t.Errorf("Export = %+v", res)
	}
	for name, want := range map[string][]byte{PermAll: perm, Volatile: vol} {
		p := filepath.Join(dir, name)
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %v", name, err)
		}
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, st.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("the directory holds %d files, want the 2 state files", len(entries))
	}

	// swtpm changes permall and drops the volatile state: the import
	// mirrors that in one transaction and keeps permall's attributes.
	perm2 := bytes.Repeat([]byte("Q"), 9000)
	os.WriteFile(filepath.Join(dir, PermAll), perm2, 0o600)
	os.Remove(filepath.Join(dir, Volatile))
	os.WriteFile(filepath.Join(dir, "TMP2-00.permall"), []byte("half-written"), 0o600)
	os.WriteFile(filepath.Join(dir, ".lock"), nil, 0o600)
	counter := f.UpdateCounter()
	imp, err := Import(ctx, s, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(imp.Entries) != 1 || imp.Entries[0] != PermAll || len(imp.Removed) != 1 || imp.Removed[0] != Volatile {
		t.Errorf("Import = %+v", imp)
	}
	if c := f.UpdateCounter(); c.Sub(c, counter).Int64() != 1 {
		t.Errorf("Import took %v transactions, want 1", c)
	}
	e, err := s.Get(PermAll)
	if err != nil || !bytes.Equal(e.Data, perm2) || len(e.Optional) != 1 {
		t.Errorf("permall after import: %+v, %v", e, err)
	}
	if _, err := s.Get(Volatile); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("volatile state after import: %v", err)
	}
	if e, err := s.Get("other"); err != nil || string(e.Data) != "not TPM state" {
		t.Errorf("an unrelated entry changed: %v", err)
	}
}

func TestImportRefuses(t *testing.T) {
	ctx := context.Background()
	s, f := newStore(t)
	empty := t.TempDir()
	if _, err := Import(ctx, s, empty); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Import without permall = %v", err)
	}
	dirAsFile := t.TempDir()
	os.Mkdir(filepath.Join(dirAsFile, PermAll), 0o700)
	if _, err := Import(ctx, s, dirAsFile); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("Import of a directory named permall = %v", err)
	}
	unreadable := t.TempDir()
	os.WriteFile(filepath.Join(unreadable, PermAll), []byte("p"), 0o600)
	os.Symlink("/nonexistent", filepath.Join(unreadable, Volatile))
	// A dangling link is an absent file, as swtpm would see it.
	if res, err := Import(ctx, s, unreadable); err != nil || len(res.Entries) != 1 {
		t.Errorf("Import with a dangling volatile link = %+v, %v", res, err)
	}
	huge := t.TempDir()
	fh, _ := os.Create(filepath.Join(huge, PermAll))
	fh.Truncate(MaxStateFile + 1)
	fh.Close()
	before := f.UpdateCounter()
	if _, err := Import(ctx, s, huge); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("Import of an oversized file = %v", err)
	}
	if f.UpdateCounter().Cmp(before) != 0 {
		t.Errorf("a refused import changed the image")
	}
}

// An export never writes part of the state: an unusable state entry (a
// mandatory attribute from a newer writer) fails it before any file.
func TestExportRefusesUnusable(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	err := s.Update(ctx, func(d *nvram.Directory) error {
		if err := d.Put(&nvram.Entry{Name: PermAll, Type: nvram.TypeTPM, Data: []byte("p")}); err != nil {
			return err
		}
		return d.Put(&nvram.Entry{Name: Volatile, Type: nvram.TypeTPM, Data: []byte("v"),
			Mandatory: []nvram.Attribute{nvram.FlagAttribute("x-encrypted-v2")}})
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "out")
	if _, err := Export(s, dir); !errors.Is(err, nvram.ErrUnknownMandatory) {
		t.Fatalf("Export = %v, want ErrUnknownMandatory", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused export created %s", dir)
	}
	// A state entry of another type is not TPM state.
	s.Put(ctx, &nvram.Entry{Name: Volatile, Type: "data", Data: []byte("v")})
	if _, err := Export(s, dir); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("Export with a mistyped entry = %v", err)
	}
}
