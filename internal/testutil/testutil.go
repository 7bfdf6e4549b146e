package testutil

import (
	"os"
	"os/exec"
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
