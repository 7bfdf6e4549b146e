package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sealfs/sealfs/internal/testutil"
)

// TestNvramMount serves a store as a process: a file written and renamed
// over an entry replaces it, new entries get --type, an entry written by a
// newer version is listed but unreadable, and fusermount3 -u stops it.
func TestNvramMount(t *testing.T) {
	testutil.RequireFUSE(t)
	img, key := newKeyedImage(t)
	file := writeTemp(t, "vars", []byte("first"))
	mustRun(t, ExitOK, ``, "nvram", "put", "-k", key, img, "OVMF_VARS.fd", file, "--type", "uefi-vars", "--attr", "origin=installer")
	mustRun(t, ExitUsage, `^$`, "nvram", "mount", "-k", key, "--type", "bad\ttype", img, t.TempDir())
	mnt := newMountpoint(t)
	p, ready := startServer(t, mnt, "nvram", "mount", "-k", key, "--type", "blob", img, mnt)
	if !strings.HasPrefix(ready, "mounted "+img+" on "+mnt) {
		t.Fatalf("ready: %q", ready)
	}
	tmp := filepath.Join(mnt, "vars.tmp")
	if err := os.WriteFile(tmp, []byte("second"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(mnt, "OVMF_VARS.fd")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "note"), []byte("n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "a/b"), nil, 0o600); err == nil {
		t.Fatal("a name with a slash was created")
	}
	if err := os.Mkdir(filepath.Join(mnt, "dir"), 0o700); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("mkdir: %v", err)
	}
	ents, err := os.ReadDir(mnt)
	if err != nil || len(ents) != 2 {
		t.Fatalf("ReadDir: %v %v", ents, err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != ExitOK {
		t.Fatalf("exit %d:\n%s", code, p.stderr)
	}
	mustRun(t, ExitOK, `^OVMF_VARS.fd blob 6\nnote blob 1\n$`, "nvram", "ls", "-k", key, img)
	mustRun(t, ExitOK, `^second$`, "nvram", "get", "-k", key, img, "OVMF_VARS.fd")
}
