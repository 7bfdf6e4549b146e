package fusefs

import (
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sealfs/sealfs/cocoonfs"
	"github.com/sealfs/sealfs/internal/testutil"
)

// mounted is a test mount.
type mounted struct {
	dir  string
	srv  *Server
	logs *testutil.SyncBuffer
}

// mountFS mounts fsys on a fresh directory; the mount is undone when the
// test ends, pass or fail (lazily if the test left it busy).
func mountFS(t testing.TB, f *cocoonfs.FS, opts Options) *mounted {
	t.Helper()
	testutil.RequireFUSE(t)
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	if opts.Logger == nil {
		opts.Logger = log.New(logs, "", 0)
	}
	srv, err := Mount(f, mnt, opts)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	m := &mounted{dir: mnt, srv: srv, logs: logs}
	t.Cleanup(func() { m.unmount(t) })
	return m
}

// unmount unmounts (lazily if busy) and waits for the server.
func (m *mounted) unmount(t testing.TB) {
	select {
	case <-m.srv.done:
		return // already unmounted
	default:
	}
	if err := m.srv.Unmount(); err != nil {
		if out, err2 := exec.Command("fusermount3", "-u", "-z", m.dir).CombinedOutput(); err2 != nil {
			t.Errorf("Unmount: %v; fusermount3 -u -z: %v: %s", err, err2, out)
		}
	}
	done := make(chan struct{})
	go func() { m.srv.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Errorf("server still running 20s after unmount")
	}
}

func (m *mounted) path(name string) string { return filepath.Join(m.dir, name) }
