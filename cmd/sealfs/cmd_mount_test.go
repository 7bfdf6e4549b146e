package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs"
	"github.com/sealfs/sealfs/internal/fusemount"
	"github.com/sealfs/sealfs/internal/testutil"
	"golang.org/x/sys/unix"
)

// server is a sealfs process serving a mount (mount, nvram mount, tpm run),
// in its own process group.
type serverProc struct {
	cmd    *exec.Cmd
	stdout *bufio.Reader
	stderr *testutil.SyncBuffer
	done   chan struct{}
	err    error // after done
}

// startServer runs sealfs args in a new process group and waits for its
// first line on stdout (the ready line), which it returns. The whole group
// is killed and the mount point (if any) detached when the test ends.
func startServer(t *testing.T, mnt string, args ...string) (*serverProc, string) {
	t.Helper()
	return startServerEnv(t, mnt, nil, args...)
}

// startServerEnv is startServer with more environment variables.
func startServerEnv(t *testing.T, mnt string, env []string, args ...string) (*serverProc, string) {
	t.Helper()
	cmd := exec.Command(sealfsBinary(t), args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A pipe of our own rather than StdoutPipe: Wait would close that
	// one, losing what the server printed before it exited.
	out, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	cmd.Stdout = w
	p := &serverProc{cmd: cmd, stdout: bufio.NewReader(out), stderr: &testutil.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	err = cmd.Start()
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		if mnt != "" {
			detachIfMounted(mnt)
		}
	})
	line := make(chan string, 1)
	go func() {
		l, _ := p.stdout.ReadString('\n')
		line <- l
	}()
	select {
	case l := <-line:
		if l == "" {
			<-p.done
			t.Fatalf("sealfs %s exited before it was ready: %v\n%s", strings.Join(args, " "), p.err, p.stderr)
		}
		return p, l
	case <-time.After(60 * time.Second):
		t.Fatalf("sealfs %s not ready after 60s:\n%s", strings.Join(args, " "), p.stderr)
	}
	return nil, ""
}

// wait waits for the server to exit and returns its exit code.
func (p *serverProc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("server did not exit within 60s:\n%s", p.stderr)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

// rest returns what the server printed on stdout after the ready line.
func (p *serverProc) rest() string {
	b, _ := io.ReadAll(p.stdout)
	return string(b)
}

// detachIfMounted lazily unmounts a dead or forgotten mount.
func detachIfMounted(mnt string) {
	if _, ok, _ := fusemount.Find(mnt); ok {
		fusemount.Unmount(mnt, true)
	}
}

func isMounted(t *testing.T, mnt string) bool {
	t.Helper()
	_, ok, err := fusemount.Find(mnt)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// pendingJournalImage returns an image whose journal holds a committed,
// unapplied transaction (a crash in the middle of a commit), and its key.
func pendingJournalImage(t *testing.T) (img, key string) {
	t.Helper()
	k := []byte("mount test key, thirty-two bytes")
	base := blockdev.NewMemory(1<<20, 4096)
	if _, err := cocoonfs.Mkfs(base, k, &cocoonfs.MkfsOptions{IOBlock: 4096, Files: map[uint64][]byte{20: []byte("old")}}); err != nil {
		t.Fatal(err)
	}
	start := base.Bytes()
	faulty := blockdev.NewFaulty(blockdev.NewMemoryFrom(bytes.Clone(start), 4096))
	f, err := cocoonfs.Open(faulty, k, &cocoonfs.Options{ReadWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	tx, _ := f.Begin()
	if err := tx.WriteFile(20, []byte("new"), 0); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	key = keyFile(t, k...)
	for _, op := range faulty.Log() {
		if op.Kind != blockdev.OpWrite {
			continue
		}
		copy(start[op.Off:], op.Data)
		h, err := cocoonfs.ReadHeaderInfo(blockdev.NewMemoryFrom(start, 4096))
		if err == nil && h.Journal == "active" {
			return writeTemp(t, "pending.img", start), key
		}
	}
	t.Fatal("no write left the journal pending")
	return "", ""
}

// TestMountRefusals: what cannot be served is refused before anything is
// mounted, with the exit codes of the other commands.
func TestMountRefusals(t *testing.T) {
	good, wrong := keyFile(t, goodKey...), keyFile(t, wrongKey...)
	img := writeTemp(t, "v01.img", mustReadFile(t, vector(t, v01)))
	pending, pkey := pendingJournalImage(t)
	header := mustReadFile(t, img)
	header[100] ^= 1 // the static header
	tamperedHeader := writeTemp(t, "header.img", header)
	zero := writeTemp(t, "zero.img", make([]byte, 1<<20))
	mnt := newMountpoint(t)
	pendingBefore := mustReadFile(t, pending)
	for _, c := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"wrong key", []string{"mount", "--force", "-k", wrong, img, mnt}, ExitWrongKey, "wrong key"},
		{"wrong key read-only", []string{"mount", "--read-only", "-k", wrong, img, mnt}, ExitWrongKey, "wrong key"},
		{"pending journal", []string{"mount", "-k", pkey, pending, mnt}, ExitNotFormatted, "sealfs replay " + pending},
		{"pending journal read-only", []string{"mount", "--read-only", "-k", pkey, pending, mnt}, ExitNotFormatted, "sealfs replay"},
		{"not an image", []string{"mount", "--force", "-k", good, zero, mnt}, ExitCorrupt, "not a CocoonFS image"},
		{"no mount point", []string{"mount", "--force", "-k", good, img, filepath.Join(mnt, "none")}, ExitError, "mount point"},
		{"no key", []string{"mount", img, mnt}, ExitUsage, "no key given"},
		{"one argument", []string{"mount", "-k", good, img}, ExitUsage, "missing MOUNTPOINT"},
	} {
		code, stdout, stderr := run(t, c.args...)
		if code != c.code || !strings.Contains(stderr, c.msg) || stdout != "" {
			t.Errorf("%s: exit %d, stderr %q, stdout %q; want exit %d naming %q", c.name, code, stderr, stdout, c.code, c.msg)
		}
		if isMounted(t, mnt) {
			t.Fatalf("%s: something was mounted", c.name)
		}
	}
	code, _, stderr := run(t, "mount", "--force", "-k", good, tamperedHeader, mnt)
	if code == ExitOK || isMounted(t, mnt) {
		t.Fatalf("tampered header: exit %d: %s", code, stderr)
	}
	t.Logf("tampered static header: exit %d: %s", code, strings.TrimSpace(stderr))
	if after := mustReadFile(t, pending); !bytes.Equal(after, pendingBefore) {
		t.Fatal("refusing changed the image")
	}
}

func mustReadFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMountServe runs `sealfs mount` as a process: files written through
// it are in the image, a second server on the image is refused, SIGTERM
// unmounts and prints the new root digest.
func TestMountServe(t *testing.T) {
	testutil.RequireFUSE(t)
	img, key := newKeyedImage(t)
	mnt := newMountpoint(t)
	p, ready := startServer(t, mnt, "mount", "-k", key, img, mnt)
	if !strings.HasPrefix(ready, "mounted "+img+" on "+mnt+" (read-write)") {
		t.Fatalf("ready line: %q", ready)
	}
	data := bytes.Repeat([]byte("through the mount "), 30000)
	if err := os.WriteFile(filepath.Join(mnt, "42"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "43"), []byte("small"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(mnt, "43"), filepath.Join(mnt, "44")); err != nil {
		t.Fatal(err)
	}
	// The image is locked while served.
	other := newMountpoint(t)
	if code, _, stderr := run(t, "mount", "-k", key, img, other); code != ExitError || !strings.Contains(stderr, "in use") {
		t.Fatalf("second mount: exit %d: %s", code, stderr)
	}
	if code, _, stderr := run(t, "mount", "--read-only", "-k", key, img, other); code != ExitError || !strings.Contains(stderr, "in use") {
		t.Fatalf("read-only mount beside a read-write one: exit %d: %s", code, stderr)
	}
	// So are the commands that change an image.
	for _, args := range [][]string{{"write", "-k", key, img, "50", key}, {"rm", "-k", key, img, "42"}, {"replay", "-k", key, img}} {
		if code, _, stderr := run(t, args...); code != ExitError || !strings.Contains(stderr, "in use") {
			t.Fatalf("%s while mounted: exit %d: %s", args[0], code, stderr)
		}
	}
	// A read waits for the lock a while, then refuses rather than see a
	// commit half-way.
	if code, _, stderr := run(t, "ls", "-k", key, img); code != ExitError || !strings.Contains(stderr, "in use") {
		t.Fatalf("ls while mounted read-write: exit %d: %s", code, stderr)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != ExitOK {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, p.stderr)
	}
	if rest := p.rest(); !strings.Contains(rest, "root digest:") {
		t.Fatalf("no final report: %q", rest)
	}
	if isMounted(t, mnt) {
		t.Fatal("still mounted after SIGTERM")
	}
	mustRun(t, ExitOK, `^42 0x00 540000\n44 0x00 5\n$`, "ls", "-k", key, img)
	mustRun(t, ExitOK, `status: +ok`, "verify", "-k", key, img)

	// Read-only, twice at once; unmounted from outside.
	p1, _ := startServer(t, mnt, "mount", "--read-only", "-k", key, img, mnt)
	p2, _ := startServer(t, other, "mount", "--read-only", "-k", key, img, other)
	got, err := os.ReadFile(filepath.Join(other, "42"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read-only read: %v", err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "45"), nil, 0o600); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write on a read-only mount: %v", err)
	}
	mustRun(t, ExitOK, `^42 0x00 540000\n44 0x00 5\n$`, "ls", "-k", key, img) // reads share the lock
	for _, s := range []struct {
		p   *serverProc
		mnt string
	}{{p1, mnt}, {p2, other}} {
		if err := fusemount.Unmount(s.mnt, false); err != nil {
			t.Fatal(err)
		}
		if code := s.p.wait(t); code != ExitOK {
			t.Fatalf("exit %d after fusermount3 -u:\n%s", code, s.p.stderr)
		}
	}
}

// TestMountCrash copies files through the mount in a loop, kills the
// server (kill -9) at a random moment, and checks that every file whose
// close returned is intact (the one being written when the server died
// may also hold its new contents, never anything else) and that the image
// verifies. make test runs a few rounds; SEALFS_LONG=1 many.
func TestMountCrash(t *testing.T) {
	testutil.RequireFUSE(t)
	rounds := 3
	if os.Getenv("SEALFS_LONG") != "" {
		rounds = 25
	}
	dir := t.TempDir()
	img, key := filepath.Join(dir, "disk.img"), filepath.Join(dir, "disk.key")
	mustRun(t, ExitOK, ``, "mkfs", img, "--size", "48M", "--io-block", "4K", "--gen-key", key)
	contents := func(ino uint64, version int) []byte {
		r := rand.New(rand.NewPCG(ino, uint64(version)))
		size := r.IntN(64 << 10)
		if version%5 == 0 {
			size = 300<<10 + r.IntN(1<<20) // streamed through a staged writer
		}
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	closed := map[uint64]int{} // inode → last version whose close returned
	version := 0
	for round := range rounds {
		mnt := newMountpoint(t)
		p, _ := startServer(t, mnt, "mount", "-k", key, img, mnt)
		seed := uint64(round)
		r := rand.New(rand.NewPCG(seed, 1))
		killAfter := time.Duration(50+r.IntN(400)) * time.Millisecond
		var inflight struct {
			ino     uint64
			version int
		}
		stop := make(chan struct{})
		copied := make(chan struct{})
		go func() {
			defer close(copied)
			for {
				select {
				case <-stop:
					return
				default:
				}
				version++
				ino := uint64(100 + r.IntN(30))
				inflight.ino, inflight.version = ino, version
				if err := writeThroughMount(filepath.Join(mnt, fmt.Sprint(ino)), contents(ino, version)); err != nil {
					return // the server is gone
				}
				closed[ino] = version
				inflight.ino = 0
			}
		}()
		time.Sleep(killAfter)
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		p.wait(t)
		close(stop)
		// A dead mount answers ENOTCONN; detach it so the copier returns.
		if err := fusemount.Unmount(mnt, true); err != nil {
			t.Fatalf("round %d: detaching the dead mount: %v", round, err)
		}
		<-copied

		// A commit cut in the middle leaves a pending journal.
		if code, _, _ := run(t, "ls", "-k", key, img); code == ExitNotFormatted {
			mustRun(t, ExitOK, `replayed`, "replay", "-k", key, img)
		}
		f, closeFS := openImageRO(t, img, key)
		n := 0
		for in, err := range f.Inodes() {
			if err != nil {
				t.Fatal(err)
			}
			n++
			got, err := f.ReadFile(in.Ino)
			if err != nil {
				t.Fatalf("round %d: inode %d: %v", round, in.Ino, err)
			}
			want, ok := closed[in.Ino]
			switch {
			case ok && bytes.Equal(got, contents(in.Ino, want)):
			case in.Ino == inflight.ino && bytes.Equal(got, contents(in.Ino, inflight.version)):
				closed[in.Ino] = inflight.version // the commit made it before the kill
			default:
				t.Fatalf("round %d: inode %d holds %d bytes: neither its last closed version %d nor the one in flight", round, in.Ino, len(got), want)
			}
		}
		if n != len(closed) {
			t.Fatalf("round %d: %d files in the image, %d closed", round, n, len(closed))
		}
		if rep, err := f.Verify(context.Background(), nil); err != nil {
			t.Fatalf("round %d: verify: %v %v", round, err, rep.Problems)
		}
		closeFS()
		t.Logf("round %d: killed after %v; %d files, %d versions written", round, killAfter, n, version)
	}
}

// writeThroughMount is os.WriteFile for a file that must be on a FUSE
// mount: once the dead mount is detached, the same path names the empty
// directory beneath, where a write would succeed and be taken for a close
// through the mount that returned.
func writeThroughMount(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil || st.Type != unix.FUSE_SUPER_MAGIC {
		f.Close()
		return fmt.Errorf("%s is not on the mount any more (%v)", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// openImageRO opens an image read-only with the library.
func openImageRO(t *testing.T, img, keyPath string) (*cocoonfs.FS, func()) {
	t.Helper()
	dev, err := blockdev.OpenFile(img, &blockdev.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	f, err := cocoonfs.Open(dev, mustReadFile(t, keyPath), nil)
	if err != nil {
		dev.Close()
		t.Fatal(err)
	}
	return f, func() { f.Close(); dev.Close() }
}
