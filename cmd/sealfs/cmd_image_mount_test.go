package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealfs/sealfs/image"
	"github.com/sealfs/sealfs/image/fusefs"
	"github.com/sealfs/sealfs/internal/testutil"
)

// Root digests `puzzlefs build` printed for the PuzzleFS vectors.
const (
	puzzleDigestV1 = "314681a11bb20115649ae2894391ed414ddb3c8d2fed2dbf00b086b0b62f70fd"
	puzzleDigestV2 = "06a168adaf388af1bacd73ba3aa28905c78c8492426510e9bf4506d7d870de5b"
)

func puzzleVectors(t testing.TB) string {
	t.Helper()
	return testutil.Vector(t, "puzzlefs")
}

// sealfsBinary is the test binary installed as "sealfs" in $PATH by
// TestMain (testscript.Main): running it runs main, so a background mount
// re-executes sealfs, not the tests.
func sealfsBinary(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("sealfs")
	if err != nil || !strings.Contains(p, "testscript-main") {
		t.Fatalf("sealfs in $PATH is %q (%v), not the copy TestMain installs", p, err)
	}
	return p
}

// runSealfs runs sealfs with a deadline (a mount must never hang its
// caller) and returns its exit code and combined output.
func runSealfs(t testing.TB, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sealfsBinary(t), args...)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("sealfs %q did not return within 60s:\n%s", args, out)
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	case err != nil:
		t.Fatalf("sealfs %q: %v", args, err)
	}
	return 0, string(out)
}

// mounted reports whether path is a mount point in /proc/self/mountinfo
// (paths the tests use have no characters mountinfo escapes).
func mounted(t testing.TB, path string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

// newMountpoint makes an empty directory and makes sure nothing stays
// mounted on it when the test ends.
func newMountpoint(t testing.TB) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if mounted(t, mnt) {
			t.Errorf("%s still mounted at the end of the test", mnt)
			if err := fusefs.Unmount(mnt); err != nil {
				exec.Command("fusermount3", "-u", "-z", mnt).Run()
			}
		}
	})
	return mnt
}

// serverRunning reports whether a live sealfs server process serves mnt.
func serverRunning(t testing.TB, mnt string) bool {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		cmdline, err := os.ReadFile(p + "/cmdline")
		if err != nil || !bytes.Contains(cmdline, []byte("--foreground\x00")) || !bytes.HasSuffix(cmdline, []byte("\x00"+mnt+"\x00")) {
			continue
		}
		stat, err := os.ReadFile(p + "/stat")
		// Field 3 is the state; a zombie has exited, whoever reaps it.
		if err == nil {
			if i := bytes.LastIndexByte(stat, ')'); i > 0 && len(stat) > i+2 && stat[i+2] == 'Z' {
				continue
			}
		}
		return true
	}
	return false
}

func waitServerGone(t testing.TB, mnt string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); serverRunning(t, mnt); {
		if time.Now().After(deadline) {
			t.Fatalf("the server for %s still runs 10s after umount", mnt)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestImageMountErrors: every failure is found before anything is mounted
// or any server started, and gets its exit code.
func TestImageMountErrors(t *testing.T) {
	vec := puzzleVectors(t)
	oci := filepath.Join(vec, "oci")
	tampered := filepath.Join(t.TempDir(), "oci")
	if err := os.CopyFS(tampered, os.DirFS(oci)); err != nil {
		t.Fatal(err)
	}
	// Flip a byte of v1's rootfs (the metadata blob): its sha256 fails.
	l, err := image.OpenLayout(tampered)
	if err != nil {
		t.Fatal(err)
	}
	m, err := l.Manifest("v1")
	if err != nil {
		t.Fatal(err)
	}
	flipByte(t, l.BlobPath(m.RootfsDigest), 100)
	mnt := newMountpoint(t)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name string
		args []string
		code int
		msg  string // in the output
	}{
		{"wrong digest", []string{"image", "mount", "--digest", puzzleDigestV2, oci + ":v1", mnt}, ExitAuthentication, "fs-verity digest"},
		{"wrong digest foreground", []string{"image", "mount", "--foreground", "--digest", puzzleDigestV2, oci + ":v1", mnt}, ExitAuthentication, "fs-verity digest"},
		{"tampered rootfs", []string{"image", "mount", tampered + ":v1", mnt}, ExitAuthentication, "sha256"},
		{"missing tag", []string{"image", "mount", oci + ":v9", mnt}, ExitNotFound, `no tag "v9"`},
		{"missing tag foreground", []string{"image", "mount", "-f", oci + ":v9", mnt}, ExitNotFound, `no tag "v9"`},
		{"missing layout", []string{"image", "mount", filepath.Join(t.TempDir(), "none") + ":v1", mnt}, ExitError, "oci-layout"},
		{"missing mountpoint", []string{"image", "mount", oci + ":v1", filepath.Join(mnt, "none")}, ExitError, "mount point"},
		{"mountpoint is a file", []string{"image", "mount", oci + ":v1", file}, ExitError, "not a directory"},
		{"malformed digest", []string{"image", "mount", "--digest", "abc", oci + ":v1", mnt}, ExitUsage, "--digest"},
		{"no tag", []string{"image", "mount", oci, mnt}, ExitUsage, "OCIDIR:TAG"},
		{"no mountpoint", []string{"image", "mount", oci + ":v1"}, ExitUsage, "missing MOUNTPOINT"},
		{"extra argument", []string{"image", "mount", oci + ":v1", mnt, "x"}, ExitUsage, "unexpected argument"},
		{"unknown flag", []string{"image", "mount", "--bogus", oci + ":v1", mnt}, ExitUsage, "bogus"},
		{"ready-fd without foreground", []string{"image", "mount", "--ready-fd=3", oci + ":v1", mnt}, ExitUsage, "foreground"},
		{"umount no argument", []string{"image", "umount"}, ExitUsage, "missing MOUNTPOINT"},
		{"umount not mounted", []string{"image", "umount", mnt}, ExitError, "not a mount point"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out := runSealfs(t, c.args...)
			if code != c.code || !strings.Contains(out, c.msg) {
				t.Errorf("exit %d, want %d; output should contain %q:\n%s", code, c.code, c.msg, out)
			}
			if mounted(t, mnt) {
				t.Fatalf("%s is mounted after a failed mount", mnt)
			}
			if serverRunning(t, mnt) {
				t.Errorf("a server for %s runs after a failed mount", mnt)
			}
		})
	}
}

func flipByte(t testing.TB, path string, off int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 1
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestImageMountBackground: the default mode returns once the mount
// serves; umount ends the mount and the server.
func TestImageMountBackground(t *testing.T) {
	testutil.RequireFUSE(t)
	vec := puzzleVectors(t)
	mnt := newMountpoint(t)
	if code, out := runSealfs(t, "image", "mount", "--digest", puzzleDigestV1, filepath.Join(vec, "oci")+":v1", mnt); code != 0 {
		t.Fatalf("mount: exit %d:\n%s", code, out)
	}
	if !mounted(t, mnt) {
		t.Fatal("mount returned 0 but nothing is mounted")
	}
	want, err := os.ReadFile(filepath.Join(vec, "src", "tree1", "hello.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "hello.txt")); err != nil || !bytes.Equal(got, want) {
		t.Errorf("hello.txt = %q, %v; want %q", got, err, want)
	}
	if code, out := runSealfs(t, "image", "umount", mnt); code != 0 {
		t.Fatalf("umount: exit %d:\n%s", code, out)
	}
	if mounted(t, mnt) {
		t.Fatal("still in mountinfo after umount")
	}
	waitServerGone(t, mnt)
}

// TestImageMountLog: a background server writes its read failures to
// --log: EIO for the tampered chunk, named by digest.
func TestImageMountLog(t *testing.T) {
	testutil.RequireFUSE(t)
	oci := filepath.Join(t.TempDir(), "oci")
	if err := os.CopyFS(oci, os.DirFS(filepath.Join(puzzleVectors(t), "oci"))); err != nil {
		t.Fatal(err)
	}
	// random.bin's second chunk in v1, used by nothing else.
	const bad = "7c3b641c4646ac642222e67870e456414d4fdcbde77e525f9e61d12c77f01f8b"
	flipByte(t, filepath.Join(oci, "blobs", "sha256", bad), 10)
	mnt := newMountpoint(t)
	logFile := filepath.Join(t.TempDir(), "server.log")
	if code, out := runSealfs(t, "image", "mount", "--log", logFile, oci+":v1", mnt); code != 0 {
		t.Fatalf("mount: exit %d:\n%s", code, out)
	}
	_, err := os.ReadFile(filepath.Join(mnt, "random.bin"))
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("reading random.bin: %v, want EIO", err)
	}
	if _, err := os.ReadFile(filepath.Join(mnt, "hello.txt")); err != nil {
		t.Errorf("hello.txt: %v", err)
	}
	if code, out := runSealfs(t, "image", "umount", mnt); code != 0 {
		t.Fatalf("umount: exit %d:\n%s", code, out)
	}
	waitServerGone(t, mnt)
	log, err := os.ReadFile(logFile)
	if err != nil || !bytes.Contains(log, []byte(bad)) {
		t.Errorf("--log %s = %q, %v; want the failing chunk's digest", logFile, log, err)
	}
}

// TestImageMountForeground: --foreground serves until SIGTERM, then
// unmounts and exits 0.
func TestImageMountForeground(t *testing.T) {
	testutil.RequireFUSE(t)
	vec := puzzleVectors(t)
	mnt := newMountpoint(t)
	cmd := exec.Command(sealfsBinary(t), "image", "mount", "--foreground", filepath.Join(vec, "oci")+":v2", mnt)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readyLine := make(chan string, 1)
	exited := make(chan struct{}) // closed once waitErr is set
	var waitErr error
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		readyLine <- line
		io.Copy(io.Discard, stdout) // never block the server on stdout
		waitErr = cmd.Wait()
		close(exited)
	}()
	defer func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	}()
	select {
	case line := <-readyLine:
		if !strings.HasPrefix(line, "mounted ") {
			t.Fatalf("first line %q, want the mounted message; stderr:\n%s", line, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no ready line within 30s")
	}
	if !mounted(t, mnt) {
		t.Fatal("not mounted after the ready line")
	}
	if _, err := os.Stat(filepath.Join(mnt, "subdir", "added.txt")); err != nil {
		t.Errorf("subdir/added.txt: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("server exited with %v after SIGTERM; stderr:\n%s", waitErr, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server still running 30s after SIGTERM")
	}
	if mounted(t, mnt) {
		t.Error("still mounted after SIGTERM")
	}
}

// TestImageMountBackgroundProtocol drives the readiness protocol with stand-in
// servers: each outcome ends the wait, with the server's exit code when it
// reports one, and a server that never reports is killed.
func TestImageMountBackgroundProtocol(t *testing.T) {
	testutil.RequireTool(t, "sh")
	for _, c := range []struct {
		name, script string
		code         int
		msg          string
	}{
		{"ok", `echo ok >&3`, ExitOK, ""},
		{"error with code", `echo "error 5 fusefs: directory loop" >&3; exit 5`, ExitCorrupt, "directory loop"},
		{"error without a valid code", `echo "error x what" >&3; exit 1`, ExitError, "what"},
		{"exit without a report", `echo oops >&2; exit 3`, ExitError, "exited before mounting"},
		{"no report", `exec sleep 30`, ExitError, "did not report"},
	} {
		t.Run(c.name, func(t *testing.T) {
			exe := filepath.Join(t.TempDir(), "server")
			if err := os.WriteFile(exe, []byte("#!/bin/sh\n"+c.script+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err := imageMountBackground(&imageMountOptions{}, exe, "oci:v1", "/nonexistent", 500*time.Millisecond)
			if got := exitCode(err); got != c.code || (c.msg != "" && !strings.Contains(err.Error(), c.msg)) {
				t.Errorf("exit %d (%v), want %d with %q", got, err, c.code, c.msg)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}
