package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealfs/sealfs/internal/testutil"
)

// TestTpmRefusals need no swtpm: a wrong key is refused before anything
// runs or is written, and missing state is exit 6.
func TestTpmRefusals(t *testing.T) {
	img, key := newKeyedImage(t)
	wrong := keyFile(t, bytes.Repeat([]byte{7}, 32)...)
	work := t.TempDir()
	dir := filepath.Join(t.TempDir(), "state")
	before, _ := os.ReadFile(img)

	for _, args := range [][]string{
		{"tpm", "manufacture", "-k", wrong, "--temp-dir", work, img},
		{"tpm", "export", "-k", wrong, img, dir},
		{"tpm", "import", "-k", wrong, img, dir},
	} {
		if code, stdout, stderr := run(t, args...); code != ExitWrongKey || stdout != "" {
			t.Errorf("%s: exit %d, want 3: %s%s", strings.Join(args, " "), code, stdout, stderr)
		}
	}
	mustBeEmptyDir(t, work)
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("export with a wrong key created %s", dir)
	}
	if after, _ := os.ReadFile(img); !bytes.Equal(before, after) {
		t.Errorf("a wrong key changed the image")
	}

	out := mustRun(t, ExitNotFound, `^$`, "tpm", "export", "-k", key, img, dir)
	if !strings.Contains(out, "holds no TPM state") {
		t.Errorf("export without state: %s", out)
	}
	// A directory without tpm2-00.permall: an error about DIR, not a missing entry.
	os.MkdirAll(dir, 0o700)
	mustRun(t, ExitError, `^$`, "tpm", "import", "-k", key, img, dir)
	mustRun(t, ExitUsage, `^$`, "tpm", "manufacture", "-k", key, "--rsa-keysize", "1024", img)
	mustRun(t, ExitUsage, `^$`, "tpm", "export", "-k", key, img)
	if after, _ := os.ReadFile(img); !bytes.Equal(before, after) {
		t.Errorf("refused commands changed the image")
	}
}

func mustBeEmptyDir(t *testing.T, dir string) {
	t.Helper()
	left, _ := os.ReadDir(dir)
	for _, e := range left {
		t.Errorf("%s left in %s", e.Name(), dir)
	}
}

// TestTpmCommands runs manufacture, export and import with the real
// swtpm_setup; the swtpm life cycle itself is tested in package tpm.
func TestTpmCommands(t *testing.T) {
	for _, tool := range []string{"swtpm", "swtpm_setup", "swtpm_localca"} {
		testutil.RequireTool(t, tool)
	}
	img, key := newKeyedImage(t)
	work := t.TempDir()
	mustRun(t, ExitOK, `(?m)^result: +manufactured a TPM 2.0 \(\d+ bytes of state\)\nentries: +tpm2-00.permall tpm-ca-root.pem tpm-ca-issuer.pem\nroot digest: +[0-9a-f]{64}\n`,
		"tpm", "manufacture", "-k", key, "--temp-dir", work, img)
	mustBeEmptyDir(t, work)
	mustRun(t, ExitOK, `(?m)^tpm-ca-issuer.pem x509-pem \d+\ntpm-ca-root.pem x509-pem \d+\ntpm2-00.permall tpm \d+\n$`, "nvram", "ls", "-k", key, img)

	out := mustRun(t, ExitError, `^$`, "tpm", "manufacture", "-k", key, "--temp-dir", work, img)
	if !strings.Contains(out, "--overwrite") {
		t.Errorf("second manufacture: %s", out)
	}
	mustBeEmptyDir(t, work)
	perm1 := mustRun(t, ExitOK, `.`, "nvram", "get", "-k", key, img, "tpm2-00.permall")
	mustRun(t, ExitOK, `manufactured`, "tpm", "manufacture", "-k", key, "--temp-dir", work, "--overwrite", "--pcr-banks", "sha256,sha384", "--rsa-keysize", "3072", img)
	perm2 := mustRun(t, ExitOK, `.`, "nvram", "get", "-k", key, img, "tpm2-00.permall")
	if perm1 == perm2 {
		t.Errorf("--overwrite did not make a new TPM")
	}

	dir := filepath.Join(t.TempDir(), "state")
	out = mustRun(t, ExitOK, `.`, "--json", "tpm", "export", "-k", key, img, dir)
	var res tpmResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Entries) != 1 || res.Entries[0] != "tpm2-00.permall" {
		t.Fatalf("export --json: %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "tpm2-00.permall")); string(got) != perm2 {
		t.Errorf("exported permall differs from the entry")
	}
	os.WriteFile(filepath.Join(dir, "tpm2-00.volatilestate"), []byte("volatile"), 0o600)
	mustRun(t, ExitOK, `(?m)^entries: +tpm2-00.permall tpm2-00.volatilestate\n`, "tpm", "import", "-k", key, img, dir)
	mustRun(t, ExitOK, `^volatile$`, "nvram", "get", "-k", key, img, "tpm2-00.volatilestate")
}
