package fusemount

import (
	"errors"
	"io/fs"
	"testing"
)

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/a/b`: "/a/b", `/with\040space`: "/with space", `/tab\011and\012nl`: "/tab\tand\nnl",
		`/back\134slash`: `/back\slash`, `/short\04`: `/short\04`, `/not\999`: `/not\999`,
	} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Source("/img,with,commas"); got != "/img_with_commas" {
		t.Errorf("Source = %q", got)
	}
}

// TestList finds the root mount and refuses to unmount what is not a
// FUSE mount or not a mount at all.
func TestList(t *testing.T) {
	m, ok, err := Find("/")
	if err != nil || !ok || m.Mountpoint != "/" {
		t.Fatalf("Find(/) = %+v, %v, %v", m, ok, err)
	}
	if m.IsFUSE() {
		t.Skip("the root is a FUSE mount here")
	}
	if err := Unmount("/", false); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("Unmount(/) = %v, want fs.ErrInvalid", err)
	}
	if err := Unmount(t.TempDir(), false); !errors.Is(err, ErrNotMounted) {
		t.Errorf("Unmount(temp dir) = %v, want ErrNotMounted", err)
	}
	if IsDead(t.TempDir()) {
		t.Error("a plain directory is reported dead")
	}
}
