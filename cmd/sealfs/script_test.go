package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets the test binary double as the sealfs command, so scripts
// run the real main, exit codes included.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"sealfs": main})
}

// TestScripts runs testdata/script/*.txtar. Each script sees $VECTORS (the
// reference images), $WORK/key (the vectors' key, raw bytes, which a txtar
// file cannot hold without a trailing newline) and $WORK/wrongkey.
func TestScripts(t *testing.T) {
	vectors, err := filepath.Abs(vectorDir)
	if err != nil {
		t.Fatal(err)
	}
	vector(t, v01)
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
