// Package testutil holds helpers shared by sealfs tests.
package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed; under CI=true every external tool is required (make test installs it)", name)
	}
	t.Skipf("%s is not installed; skipping the comparison with it (make test installs it)", name)
	return ""
}

// SharedDir returns the path of the shared/ directory that sits beside the
// repository (specs and reference vectors), failing the test if it is absent.
func SharedDir(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "..", "shared")
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("reference material missing: %s must sit beside the repository (%v)", dir, err)
	}
	return dir
}
