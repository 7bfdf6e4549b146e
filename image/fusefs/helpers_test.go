package fusefs

import (
	"io"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealfs/sealfs/image"
	"github.com/sealfs/sealfs/internal/testutil"
)

// Root digests `puzzlefs build` printed for the reference vectors (their
// README; image/vectors_test.go).
const (
	digestV1 = "314681a11bb20115649ae2894391ed414ddb3c8d2fed2dbf00b086b0b62f70fd"
	digestV2 = "06a168adaf388af1bacd73ba3aa28905c78c8492426510e9bf4506d7d870de5b"
	digestV3 = "0645fdfdb4eb83e8aab9a992a2fdecc401cf0dc9ea75528faf1ad70c7a425f8c"
)

// vectors returns the PuzzleFS reference vectors directory.
func vectors(t testing.TB) string {
	t.Helper()
	return testutil.Vector(t, "puzzlefs")
}

// openImage opens TAG of the layout at dir, with the fs-verity chain when
// digest is not "".
func openImage(t testing.TB, dir, tag, digest string) *image.Image {
	t.Helper()
	l, err := image.OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	var root *image.Digest
	if digest != "" {
		d, err := image.ParseVerityDigest(digest)
		if err != nil {
			t.Fatal(err)
		}
		root = &d
	}
	im, err := l.OpenImage(tag, root)
	if err != nil {
		t.Fatal(err)
	}
	return im
}

// mountImage mounts im on a fresh directory and unmounts it when the test
// ends, pass or fail. It returns the mount point and the server's log.
func mountImage(t testing.TB, im *image.Image, opts Options) (string, *Server, *testutil.SyncBuffer) {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	if opts.Logger == nil {
		opts.Logger = log.New(logs, "", 0)
	}
	srv, err := Mount(im, mnt, opts)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() { unmountForCleanup(t, srv) })
	return mnt, srv, logs
}

// unmountForCleanup unmounts, lazily if a test left the mount busy, so
// that t.TempDir's removal never walks into a mount.
func unmountForCleanup(t testing.TB, srv *Server) {
	if err := srv.Unmount(); err != nil {
		t.Errorf("Unmount: %v", err)
		if out, err := exec.Command("fusermount3", "-u", "-z", srv.Mountpoint()).CombinedOutput(); err != nil {
			t.Errorf("fusermount3 -u -z: %v: %s", err, out)
		}
	}
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Errorf("server still running 10s after unmount")
	}
}

// expectedTree copies a vector source tree and restores what git cannot
// keep (vectors README): hardlink-hello.txt as a hard link to hello.txt,
// link-to-hello as a symlink (the plain copy holds its target), modes 0644
// for files and 0755 for directories.
func expectedTree(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "expected")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		return copyFile(p, out, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			err = os.Chmod(p, 0o755)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	hello := filepath.Join(dst, "hello.txt")
	hard := filepath.Join(dst, "hardlink-hello.txt")
	link := filepath.Join(dst, "link-to-hello")
	target, err := os.ReadFile(link)
	if err != nil || string(target) != "hello.txt" {
		t.Fatalf("source %s: link-to-hello holds %q, %v; want the symlink target hello.txt", src, target, err)
	}
	for _, p := range []string{hard, link} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(hello, hard); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(string(target), link); err != nil {
		t.Fatal(err)
	}
	return dst
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, perm)
}

// copyLayout copies an OCI layout to a writable temporary directory.
func copyLayout(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		return copyFile(p, filepath.Join(dst, rel), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// mountinfoLine returns the /proc/self/mountinfo line of the mount on
// path, or "".
func mountinfoLine(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	found := ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescapeMountinfo(f[4]) == path {
			found = line
		}
	}
	return found
}
