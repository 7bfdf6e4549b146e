package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// run executes a whole command line in-process, as main does.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = execute(context.Background(), args, strings.NewReader(""), &o, &e)
	return code, o.String(), e.String()
}

func TestExecute(t *testing.T) {
	key := keyFile(t, goodKey...)
	img := vector(t, v01)
	for _, c := range []struct {
		args   []string
		code   int
		stdout string // regexp
		stderr string // regexp; "" means stderr must be empty
	}{
		{[]string{"ls", "-k", key, img}, ExitOK, `^42 0x00 51\n43 0x00 102400\n$`, ""},
		{[]string{"--json", "ls", "-k", key, img}, ExitOK, `"inode": 43`, ""},
		{[]string{"ls", "--json", "--key-file", key, img}, ExitOK, `"inode": 43`, ""},
		{[]string{"info", "--key-hex", "001122", img}, ExitWrongKey, `^$`, `^sealfs: cocoonfs: wrong key[^\n]*\n$`},
		{[]string{"read", "-k", key, img, "nope"}, ExitUsage, `^$`, `^sealfs: invalid inode number "nope".*\nRun 'sealfs read --help' for usage.\n$`},
		{[]string{"ls", "-k", key}, ExitUsage, `^$`, `missing IMAGE`},
		{[]string{"ls", "--no-such-flag", img}, ExitUsage, `^$`, `^sealfs: unknown flag: --no-such-flag\nRun 'sealfs ls --help'`},
		{[]string{"frobnicate"}, ExitUsage, `^$`, `^sealfs: unknown command "frobnicate"`},
		{[]string{"--version"}, ExitOK, `^sealfs version \S+\n$`, ""},
		{[]string{"--help"}, ExitOK, `(?s)^sealfs keeps data on storage it does not trust.*Examples:.*Exit status.*3  wrong key.*8  device block size`, ""},
		{[]string{"verify", "--help"}, ExitOK, `(?s)--key-file.*visible to other users.*SEALFS_KEY_FILE.*Examples:.*-k, --key-file FILE`, ""},
		{[]string{"read", "--help"}, ExitOK, `(?s)-f, --force.*-o, --output FILE`, ""},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, stdout, stderr := run(t, c.args...)
			if code != c.code {
				t.Errorf("exit code %d, want %d; stderr: %s", code, c.code, stderr)
			}
			if !regexp.MustCompile(c.stdout).MatchString(stdout) {
				t.Errorf("stdout does not match %q:\n%s", c.stdout, stdout)
			}
			if (c.stderr == "" && stderr != "") || !regexp.MustCompile(c.stderr).MatchString(stderr) {
				t.Errorf("stderr does not match %q:\n%s", c.stderr, stderr)
			}
			if strings.Count(stderr, "sealfs: ") > 1 {
				t.Errorf("error printed more than once:\n%s", stderr)
			}
		})
	}
}

// TestKeyFileEnv checks SEALFS_KEY_FILE and that a flag takes precedence.
func TestKeyFileEnv(t *testing.T) {
	img := vector(t, v01)
	t.Setenv(keyFileEnv, keyFile(t, goodKey...))
	if code, _, stderr := run(t, "ls", img); code != ExitOK {
		t.Fatalf("ls with %s: exit %d: %s", keyFileEnv, code, stderr)
	}
	if code, _, _ := run(t, "ls", "-k", keyFile(t, wrongKey...), img); code != ExitWrongKey {
		t.Fatalf("--key-file did not override %s: exit %d", keyFileEnv, code)
	}
	t.Setenv(keyFileEnv, "/nonexistent/key")
	if code, _, stderr := run(t, "ls", img); code != ExitError || !strings.Contains(stderr, keyFileEnv) {
		t.Fatalf("missing env key file: exit %d: %s", code, stderr)
	}
}

// exitABI is the frozen exit code table. A failure here means a code was
// renumbered: add a new code instead.
var exitABI = map[string]int{
	"ExitOK": ExitOK, "ExitError": ExitError, "ExitUsage": ExitUsage, "ExitWrongKey": ExitWrongKey,
	"ExitAuthentication": ExitAuthentication, "ExitCorrupt": ExitCorrupt, "ExitNotFound": ExitNotFound,
	"ExitNotFormatted": ExitNotFormatted, "ExitIOBlockSize": ExitIOBlockSize,
	"ExitRollback": ExitRollback, "ExitNoSpace": ExitNoSpace,
	"ExitUnauthorized": ExitUnauthorized, "ExitRegistryNotFound": ExitRegistryNotFound,
	"ExitDigestMismatch": ExitDigestMismatch, "ExitNetwork": ExitNetwork,
}

func TestExitCodesDocumented(t *testing.T) {
	frozen := map[string]int{
		"ExitOK": 0, "ExitError": 1, "ExitUsage": 2, "ExitWrongKey": 3, "ExitAuthentication": 4,
		"ExitCorrupt": 5, "ExitNotFound": 6, "ExitNotFormatted": 7, "ExitIOBlockSize": 8,
		"ExitRollback": 9, "ExitNoSpace": 10,
		"ExitUnauthorized": 11, "ExitRegistryNotFound": 12, "ExitDigestMismatch": 13, "ExitNetwork": 14,
	}
	for name, code := range exitABI {
		if frozen[name] != code {
			t.Errorf("%s = %d, frozen as %d", name, code, frozen[name])
		}
	}
	f, err := os.Open("EXIT_CODES.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	row := regexp.MustCompile("^\\| *(\\d+) *\\| *`(\\w+)` *\\|")
	documented := map[string]int{}
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if m := row.FindStringSubmatch(sc.Text()); m != nil {
			documented[m[2]], _ = strconv.Atoi(m[1])
		}
	}
	if len(documented) != len(frozen) {
		t.Errorf("EXIT_CODES.md documents %d codes, want %d", len(documented), len(frozen))
	}
	for name, code := range frozen {
		if got, ok := documented[name]; !ok || got != code {
			t.Errorf("EXIT_CODES.md: %s documented as %d (present %v), want %d", name, got, ok, code)
		}
	}
	for _, code := range frozen {
		if !strings.Contains(exitStatusHelp, fmt.Sprintf("\n %3d  ", code)) {
			t.Errorf("root help does not list exit code %d", code)
		}
	}
}

func TestProgress(t *testing.T) {
	var buf bytes.Buffer
	if update, _ := progressLine(&buf, "verifying"); update != nil {
		t.Fatal("progress drawn on a non-terminal")
	}
	update, finish := drawProgress(&buf, "verifying")
	for i := uint64(0); i <= 1000; i++ {
		update(i, 1000)
	}
	finish()
	if n := strings.Count(buf.String(), "%"); n != 101 {
		t.Errorf("drew %d updates for 0..100%%, want 101", n)
	}
	if !strings.Contains(buf.String(), "verifying 100%") || !strings.HasSuffix(buf.String(), "\r") {
		t.Errorf("unexpected progress output %q", buf.String())
	}
}
