package testutil

import (
	"bytes"
	"os"
	"os/exec"
	"sync"
	"testing"
)

// RequireTool returns the path of an external program a test compares
// against. Without it the test is skipped with a message, except under
// CI=true, where a missing tool means the machine was not set up by
// `make test` and the test fails.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if inCI() {
		t.Fatalf("%s is not installed; under CI=true every external tool is required (make test installs it)", name)
	}
	t.Skipf("%s is not installed; skipping the comparison with it (make test installs it)", name)
	return ""
}

func inCI() bool { return os.Getenv("CI") == "true" }

// missing skips the test (fails it under CI=true) because what is absent.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if inCI() {
		t.Fatalf(format+"; under CI=true ../shared is required", args...)
		return
	}
	t.Skipf(format+"; skipping (it is present in CI)", args...)
}

// RequireFUSE skips a test that mounts a file system when /dev/fuse cannot
// be opened or fusermount3 is missing (fails it under CI=true, where both
// are set up).
func RequireFUSE(t testing.TB) {
	t.Helper()
	RequireTool(t, "fusermount3")
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		if inCI() {
			t.Fatalf("/dev/fuse is not usable; under CI=true FUSE is required: %v", err)
		}
		t.Skipf("/dev/fuse is not usable; skipping the FUSE mount: %v", err)
	}
	f.Close()
}

// SyncBuffer is a bytes.Buffer safe for concurrent use: a log or an output
// a test reads while a server or process writes it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
