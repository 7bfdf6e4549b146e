package fusefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs"
	"github.com/sealfs/sealfs/internal/testutil"
	"github.com/sealfs/sealfs/nvram"
)

var testKey = []byte("nvram fusefs test key, 32 bytes.")

// newStore makes an image with the given entries.
func newStore(t testing.TB, entries ...*nvram.Entry) (*cocoonfs.FS, *nvram.Store) {
	t.Helper()
	dev := blockdev.NewMemory(8<<20, 4096)
	if _, err := cocoonfs.Mkfs(dev, testKey, &cocoonfs.MkfsOptions{NoRandomizeUnallocated: true, IOBlock: 4096}); err != nil {
		t.Fatal(err)
	}
	f, err := cocoonfs.Open(dev, testKey, &cocoonfs.Options{ReadWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	s, err := nvram.Open(f, &nvram.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) > 0 {
		err := s.Update(context.Background(), func(d *nvram.Directory) error {
			for _, e := range entries {
				if err := d.Put(e); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return f, s
}

type mounted struct {
	dir  string
	srv  *Server
	logs *testutil.SyncBuffer
}

func mountStore(t testing.TB, f *cocoonfs.FS, opts Options) *mounted {
	t.Helper()
	testutil.RequireFUSE(t)
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	opts.Logger = log.New(logs, "", 0)
	srv, err := Mount(f, mnt, opts)
	if err != nil {
		t.Fatal(err)
	}
	m := &mounted{dir: mnt, srv: srv, logs: logs}
	t.Cleanup(func() { m.unmount(t) })
	return m
}

func (m *mounted) unmount(t testing.TB) {
	select {
	case <-m.srv.done:
		return
	default:
	}
	if err := m.srv.Unmount(); err != nil {
		if out, err2 := exec.Command("fusermount3", "-u", "-z", m.dir).CombinedOutput(); err2 != nil {
			t.Errorf("Unmount: %v; fusermount3 -u -z: %v: %s", err, err2, out)
		}
	}
	select {
	case <-m.srv.done:
	case <-time.After(20 * time.Second):
		t.Errorf("server still running 20s after unmount")
	}
}

func (m *mounted) path(name string) string { return filepath.Join(m.dir, name) }

func mustGet(t testing.TB, s *nvram.Store, name string) *nvram.Entry {
	t.Helper()
	e, err := s.Get(name)
	if err != nil {
		t.Fatalf("Get(%q): %v", name, err)
	}
	return e
}

// TestFSTest runs testing/fstest over the mounted store.
func TestFSTest(t *testing.T) {
	f, s := newStore(t,
		&nvram.Entry{Name: "tpm2-00.permall", Type: "tpm", Data: bytes.Repeat([]byte("perm"), 5000)},
		&nvram.Entry{Name: "OVMF_VARS.fd", Type: "uefi-vars", Optional: []nvram.Attribute{nvram.OctetsAttribute("origin", []byte("installer"))}, Data: []byte("vars")},
		&nvram.Entry{Name: "empty", Type: "data"},
		&nvram.Entry{Name: "with space and ünïcode", Type: "data", Data: []byte("x")},
	)
	for _, ro := range []bool{false, true} {
		m := mountStore(t, f, Options{ReadOnly: ro})
		want := []string{"OVMF_VARS.fd", "empty", "tpm2-00.permall", "with space and ünïcode"}
		if err := fstest.TestFS(os.DirFS(m.dir), want...); err != nil {
			t.Fatal(err)
		}
		for _, name := range want {
			got, err := os.ReadFile(m.path(name))
			if err != nil || !bytes.Equal(got, mustGet(t, s, name).Data) {
				t.Fatalf("%s: %v", name, err)
			}
		}
		m.unmount(t)
	}
}

// TestReplaceByRename does what swtpm does to store a state file: write a
// temporary file, fsync it, rename it over the entry, fsync the directory.
// The entry changes in one transaction and keeps its type and attributes;
// no temporary entry is left.
func TestReplaceByRename(t *testing.T) {
	f, s := newStore(t, &nvram.Entry{Name: "tpm2-00.permall", Type: "tpm", Optional: []nvram.Attribute{nvram.FlagAttribute("x-keep")}, Data: []byte("old state")})
	m := mountStore(t, f, Options{Type: func(name string) string {
		if strings.HasPrefix(name, "TMP2-") || strings.HasPrefix(name, "tpm2-") {
			return "tpm"
		}
		return ""
	}})
	for round := range 3 {
		state := bytes.Repeat([]byte{byte(round)}, 40000+round)
		fh, err := os.OpenFile(m.path("TMP2-00.permall"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o640)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fh.Write(state); err != nil {
			t.Fatal(err)
		}
		if err := fh.Sync(); err != nil {
			t.Fatal(err)
		}
		if got := mustGet(t, s, "TMP2-00.permall"); !bytes.Equal(got.Data, state) || got.Type != "tpm" {
			t.Fatalf("round %d: fsync did not commit the temporary file (type %q)", round, got.Type)
		}
		if err := fh.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(m.path("TMP2-00.permall"), m.path("tpm2-00.permall")); err != nil {
			t.Fatal(err)
		}
		dir, err := os.Open(m.dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := dir.Sync(); err != nil {
			t.Fatalf("fsync of the directory: %v", err)
		}
		dir.Close()
		got := mustGet(t, s, "tpm2-00.permall")
		if !bytes.Equal(got.Data, state) || got.Type != "tpm" {
			t.Fatalf("round %d: entry after rename: type %q, %d bytes", round, got.Type, len(got.Data))
		}
		if _, err := s.Get("TMP2-00.permall"); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("round %d: temporary entry left: %v", round, err)
		}
		if b, err := os.ReadFile(m.path("tpm2-00.permall")); err != nil || !bytes.Equal(b, state) {
			t.Fatalf("round %d: read back through the mount: %v", round, err)
		}
	}
	// The temporary file's attributes came with it: a fresh entry has none.
	if got := mustGet(t, s, "tpm2-00.permall"); len(got.Optional) != 0 {
		t.Fatalf("optional attributes %v after a rename of a new file over the entry", got.Optional)
	}
	// Writing in place keeps type and attributes.
	if err := s.Put(context.Background(), &nvram.Entry{Name: "vars", Type: "uefi-vars", Optional: []nvram.Attribute{nvram.FlagAttribute("x-keep")}, Data: []byte("v1")}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.path("vars"), []byte("version two"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, s, "vars"); string(got.Data) != "version two" || got.Type != "uefi-vars" || len(got.Optional) != 1 {
		t.Fatalf("vars after an in-place write: %+v", got)
	}
	// New files get the default type.
	if err := os.WriteFile(m.path("new"), []byte("n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, s, "new"); got.Type != DefaultType {
		t.Fatalf("new entry has type %q", got.Type)
	}
}

// TestUnknownMandatory: an entry a newer writer made is listed, cannot be
// read (EIO, logged with the attribute), and can be replaced, renamed and
// removed.
func TestUnknownMandatory(t *testing.T) {
	future := &nvram.Entry{Name: "future", Type: "x-type", Mandatory: []nvram.Attribute{nvram.FlagAttribute("x-compressed")}, Data: []byte("opaque")}
	f, s := newStore(t, future, &nvram.Entry{Name: "future2", Type: "x-type", Mandatory: []nvram.Attribute{nvram.FlagAttribute("x-compressed")}, Data: []byte("opaque")})
	m := mountStore(t, f, Options{})
	st, err := os.Stat(m.path("future"))
	if err != nil || st.Size() != 6 {
		t.Fatalf("stat: %v %v", st, err)
	}
	if _, err := os.ReadFile(m.path("future")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read: %v, want EIO", err)
	}
	if !strings.Contains(m.logs.String(), `entry "future" cannot be read`) || !strings.Contains(m.logs.String(), "x-compressed") {
		t.Fatalf("log does not name the entry and attribute:\n%s", m.logs)
	}
	// Rename moves it byte for byte; it is still unreadable under the new name.
	if err := os.Rename(m.path("future"), m.path("moved")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("moved"); !errors.Is(err, nvram.ErrUnknownMandatory) {
		t.Fatalf("moved entry: %v", err)
	}
	// O_TRUNC replaces it.
	if err := os.WriteFile(m.path("moved"), []byte("replaced"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, s, "moved"); string(got.Data) != "replaced" {
		t.Fatalf("replaced: %q", got.Data)
	}
	if err := os.Remove(m.path("future2")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("future2"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("removed entry: %v", err)
	}
}

// TestMemoryOnly: swtpm's .lock lives in memory, takes fcntl locks, and
// never reaches the store.
func TestMemoryOnly(t *testing.T) {
	f, s := newStore(t)
	m := mountStore(t, f, Options{MemoryOnly: func(name string) bool { return name == ".lock" }})
	fh, err := os.OpenFile(m.path(".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	if err := unix.FcntlFlock(fh.Fd(), unix.F_SETLK, &lk); err != nil {
		t.Fatalf("fcntl lock: %v", err)
	}
	if _, err := fh.Write([]byte("pid")); err != nil {
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.List(); len(list) != 0 {
		t.Fatalf("store holds %v", list)
	}
	if b, err := os.ReadFile(m.path(".lock")); err != nil || string(b) != "pid" {
		t.Fatalf(".lock reads %q, %v", b, err)
	}
	ents, _ := os.ReadDir(m.dir)
	if len(ents) != 1 || ents[0].Name() != ".lock" {
		t.Fatalf("ReadDir: %v", ents)
	}
	if err := os.Rename(m.path(".lock"), m.path("x")); !errors.Is(err, syscall.EXDEV) {
		t.Fatalf("rename of a memory-only file: %v", err)
	}
	if err := os.Remove(m.path(".lock")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.path(".lock")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after remove: %v", err)
	}
}

// TestFileOperations: truncate, unlink with an open handle, invalid
// names, two writers, statfs.
func TestFileOperations(t *testing.T) {
	f, s := newStore(t, &nvram.Entry{Name: "a", Type: "data", Data: []byte("0123456789")})
	m := mountStore(t, f, Options{})
	if err := os.Truncate(m.path("a"), 4); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, s, "a"); string(got.Data) != "0123" {
		t.Fatalf("after truncate: %q", got.Data)
	}
	fh, err := os.OpenFile(m.path("a"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt([]byte("X"), 6); err != nil {
		t.Fatal(err)
	}
	if err := fh.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, s, "a"); string(got.Data) != "0123\x00\x00X" {
		t.Fatalf("after write past the end: %q", got.Data)
	}
	if err := os.Remove(m.path("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("a"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after unlink: %v", err)
	}
	if _, err := fh.WriteAt([]byte("Y"), 0); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(io.NewSectionReader(fh, 0, 100))
	if err != nil || string(b) != "Y123\x00\x00X" {
		t.Fatalf("unlinked file's handle: %q, %v", b, err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("a"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("closing an unlinked file brought it back: %v", err)
	}
	for _, bad := range []string{"\xff\xfe", strings.Repeat("n", 256)} {
		err := os.WriteFile(m.path(bad), nil, 0o600)
		if !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENAMETOOLONG) {
			t.Errorf("create %q: %v", bad, err)
		}
	}
	if err := os.Mkdir(m.path("d"), 0o700); !errors.Is(err, syscall.EPERM) {
		t.Errorf("mkdir: %v", err)
	}
	// Two writers share the file; the last close commits both writes.
	w1, _ := os.Create(m.path("shared"))
	w2, err := os.OpenFile(m.path("shared"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	w1.WriteAt([]byte("11"), 0)
	w2.WriteAt([]byte("22"), 2)
	w1.Close()
	w2.Close()
	if got := mustGet(t, s, "shared"); string(got.Data) != "1122" {
		t.Fatalf("two writers: %q", got.Data)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(m.dir, &st); err != nil || st.Blocks == 0 || st.Bfree == 0 || st.Files != 1 {
		t.Fatalf("statfs: %+v, %v", st, err)
	}
	// No space: a file larger than the image fails at close, the store is unchanged.
	err = os.WriteFile(m.path("huge"), make([]byte, 9<<20), 0o600)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("9 MiB into an 8 MiB image: %v", err)
	}
	if _, err := s.Get("huge"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("huge: %v", err)
	}
}

// TestConcurrentEntries writes, renames and reads many entries at once
// (run with -race).
func TestConcurrentEntries(t *testing.T) {
	f, s := newStore(t)
	m := mountStore(t, f, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				tmp, name := m.path(fmt.Sprintf("tmp-%d-%d", w, i)), m.path(fmt.Sprintf("e-%d", w))
				data := bytes.Repeat([]byte{byte(w), byte(i)}, 500*(i+1))
				if err := os.WriteFile(tmp, data, 0o600); err != nil {
					errs <- err
					return
				}
				if err := os.Rename(tmp, name); err != nil {
					errs <- err
					return
				}
				if got, err := os.ReadFile(name); err != nil || !bytes.Equal(got, data) {
					errs <- fmt.Errorf("read back %s: %v", name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, in := range list {
		names = append(names, in.Name)
	}
	if !slices.Equal(names, []string{"e-0", "e-1", "e-2", "e-3"}) {
		t.Fatalf("entries: %v", names)
	}
	if rep, err := f.Verify(context.Background(), nil); err != nil {
		t.Fatalf("verify: %v %v", err, rep.Problems)
	}
}
