package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/sealfs/sealfs/internal/testutil"
)

// TestMain lets the test binary double as the sealfs command, so scripts
// run the real main, exit codes included.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"sealfs": main})
}

// TestScripts runs testdata/script/*.txtar. Each script sees $VECTORS (the
// reference images: the repository's, and those of ../shared/vectors/cocoonfs
// when it is present), $WORK/key (the vectors' key, raw bytes, which a txtar
// file cannot hold without a trailing newline) and $WORK/wrongkey. A script
// that needs an image only ../shared has starts with
//
//	[!vector:NAME] skip 'needs ../shared/vectors/cocoonfs/NAME'
//
// and the condition is an error under CI=true, where ../shared is required.
func TestScripts(t *testing.T) {
	vectors := testutil.VectorDir(t, "cocoonfs")
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup: func(e *testscript.Env) error {
			e.Setenv("VECTORS", vectors)
			if err := os.WriteFile(filepath.Join(e.WorkDir, "key"), goodKey, 0o600); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(e.WorkDir, "wrongkey"), wrongKey, 0o600)
		},
		Condition: func(cond string) (bool, error) {
			name, ok := strings.CutPrefix(cond, "vector:")
			if !ok {
				return false, fmt.Errorf("unknown condition %q", cond)
			}
			if _, err := os.Stat(filepath.Join(vectors, name)); err != nil {
				if os.Getenv("CI") == "true" {
					return false, fmt.Errorf("reference vector %s is missing; under CI=true ../shared/vectors/cocoonfs is required: %w", name, err)
				}
				return false, nil
			}
			return true, nil
		},
		Cmds: map[string]func(*testscript.TestScript, bool, []string){
			"exitcode": cmdExitcode,
			"validjson": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 1 {
					ts.Fatalf("usage: validjson FILE")
				}
				ok := jsonValid(ts.ReadFile(args[0]))
				if ok == neg {
					ts.Fatalf("%s: valid JSON is %v", args[0], ok)
				}
			},
			"tamper": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 0 {
					ts.Fatalf("usage: tamper (writes tampered.img: v01 with one bit flipped in inode 43's data)")
				}
				b, err := os.ReadFile(filepath.Join(vectors, v01))
				ts.Check(err)
				b[tamperOffset] ^= 1
				ts.Check(os.WriteFile(ts.MkAbs("tampered.img"), b, 0o600))
			},
		},
	})
}

// cmdExitcode runs "exitcode N PROG ARGS..." and requires exit status N;
// testscript's own "! exec" only checks for failure. stdout and stderr stay
// available to the following stdout/stderr commands.
func cmdExitcode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exitcode N PROG [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		got = ee.ExitCode()
	} else if err != nil {
		ts.Fatalf("exec %s: %v", args[1], err)
	}
	// A user command's output replaces exec's; hand exec's on.
	fmt.Fprint(ts.Stdout(), ts.ReadFile("stdout"))
	fmt.Fprint(ts.Stderr(), ts.ReadFile("stderr"))
	if got != want {
		ts.Fatalf("exit status %d, want %d", got, want)
	}
}
