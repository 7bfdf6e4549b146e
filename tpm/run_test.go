package tpm

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"testing"

	"github.com/sealfs/sealfs/nvram"
)

func TestStateEntryType(t *testing.T) {
	for name, want := range map[string]string{
		PermAll: nvram.TypeTPM, Volatile: nvram.TypeTPM, "TMP2-00.permall": nvram.TypeTPM,
		LockFile: "", "tpm-ca-root.pem": "", "notes": "",
	} {
		if got := StateEntryType(name); got != want {
			t.Errorf("StateEntryType(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestRunRefusals: Run checks its options and the store before it mounts
// or starts anything.
func TestRunRefusals(t *testing.T) {
	s, f := newStore(t)
	dir := t.TempDir()
	for _, c := range []struct {
		opts *RunOptions
		want error
	}{
		{nil, fs.ErrInvalid},
		{&RunOptions{StateDir: dir, ServerPort: 2321}, fs.ErrInvalid},
		{&RunOptions{StateDir: dir, ServerPort: 2321, CtrlPort: 2321}, fs.ErrInvalid},
		{&RunOptions{StateDir: dir, ServerPort: 2321, CtrlPort: 70000}, fs.ErrInvalid},
		{&RunOptions{StateDir: dir, ServerPort: 2321, CtrlPort: 2322}, ErrNoState},
		{&RunOptions{StateDir: dir, CtrlPort: 2322, CtrlSocket: dir + "/ctrl"}, fs.ErrInvalid},
		{&RunOptions{StateDir: dir, ServerPort: 70000, CtrlSocket: dir + "/ctrl"}, fs.ErrInvalid},
		{&RunOptions{StateDir: dir, CtrlSocket: dir + "/ctrl"}, ErrNoState},
	} {
		if err := Run(context.Background(), f, c.opts); !errors.Is(err, c.want) {
			t.Errorf("Run(%+v) = %v, want %v", c.opts, err, c.want)
		}
	}
	// Stale temporaries are removed; a state directory that is not empty
	// is refused.
	err := s.Update(context.Background(), func(d *nvram.Directory) error {
		for _, name := range []string{PermAll, "TMP2-00.permall"} {
			if err := d.Put(&nvram.Entry{Name: name, Type: nvram.TypeTPM, Data: []byte("x")}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, dir+"/leftover")
	err = Run(context.Background(), f, &RunOptions{StateDir: dir, ServerPort: 2321, CtrlPort: 2322, Swtpm: "/bin/false"})
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("non-empty state directory: %v", err)
	}
	d, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if d.Has("TMP2-00.permall") || !d.Has(PermAll) {
		t.Fatalf("after Run: %v", d.List())
	}
}

func mustWrite(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
}
