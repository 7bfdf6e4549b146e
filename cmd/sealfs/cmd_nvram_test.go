package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sealfs/sealfs/nvram"
)

// runIn executes a whole command line in-process with stdin.
func runIn(t *testing.T, stdin []byte, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = execute(context.Background(), args, bytes.NewReader(stdin), &o, &e)
	return code, o.String(), e.String()
}

// newKeyedImage makes a fresh 4 MiB image (4 KiB IO blocks, so no --force
// is needed on files) and returns its path and key file.
func newKeyedImage(t *testing.T) (img, key string) {
	t.Helper()
	dir := t.TempDir()
	img, key = filepath.Join(dir, "disk.img"), filepath.Join(dir, "disk.key")
	if code, _, stderr := run(t, "mkfs", img, "--size", "4M", "--io-block", "4K", "--gen-key", key); code != ExitOK {
		t.Fatalf("mkfs: exit %d: %s", code, stderr)
	}
	return img, key
}

// mustRun runs a command line and requires exit status code and stdout
// matching the regexp.
func mustRun(t *testing.T, code int, stdoutRE string, args ...string) string {
	t.Helper()
	got, stdout, stderr := run(t, args...)
	if got != code {
		t.Fatalf("%s: exit %d, want %d; stderr: %s", strings.Join(args, " "), got, code, stderr)
	}
	if !regexp.MustCompile(stdoutRE).MatchString(stdout) {
		t.Fatalf("%s: stdout does not match %q:\n%s", strings.Join(args, " "), stdoutRE, stdout)
	}
	return stdout + stderr
}

func TestNvramCommands(t *testing.T) {
	img, key := newKeyedImage(t)
	dir := t.TempDir()
	data := bytes.Repeat([]byte("variable store "), 500)
	file := filepath.Join(dir, "vars.fd")
	os.WriteFile(file, data, 0o600)

	mustRun(t, ExitOK, `^$`, "nvram", "ls", "-k", key, img) // no store yet: nothing
	mustRun(t, ExitOK, `(?m)^result: +stored 7500 bytes as OVMF_VARS.fd \(type uefi-vars\)\nroot digest: +[0-9a-f]{64}\nupdate counter: +\d+\n$`,
		"nvram", "put", "-k", key, img, "OVMF_VARS.fd", file, "--type", "uefi-vars", "--attr", "origin=installer", "--attr", "x-readonly")
	code, _, stderr := runIn(t, []byte("from stdin"), "nvram", "put", "-k", key, img, "two words")
	if code != ExitOK {
		t.Fatalf("put from stdin: %d %s", code, stderr)
	}
	mustRun(t, ExitOK, `^OVMF_VARS.fd uefi-vars 7500\n"two words" data 10\n$`, "nvram", "ls", "-k", key, img)
	out := mustRun(t, ExitOK, `.`, "--json", "nvram", "ls", "-k", key, img)
	var list []nvramLsEntry
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("ls --json: %v\n%s", err, out)
	}
	if len(list) != 2 || list[0].Name != "OVMF_VARS.fd" || len(list[0].Optional) != 2 ||
		list[0].Optional[0] != (nvramAttr{Name: "x-readonly", Flag: true}) || list[0].Optional[1] != (nvramAttr{Name: "origin", Octets: "696e7374616c6c6572"}) {
		t.Errorf("ls --json: %+v", list)
	}

	mustRun(t, ExitOK, `^from stdin$`, "nvram", "get", "-k", key, img, "two words")
	outFile := filepath.Join(dir, "out.fd")
	mustRun(t, ExitOK, `^$`, "nvram", "get", "-k", key, img, "OVMF_VARS.fd", "-o", outFile)
	if got, _ := os.ReadFile(outFile); !bytes.Equal(got, data) {
		t.Errorf("get -o wrote %d bytes", len(got))
	}
	if st, _ := os.Stat(outFile); st.Mode().Perm() != 0o600 {
		t.Errorf("get -o: mode %v", st.Mode().Perm())
	}

	// rm is all or nothing.
	out = mustRun(t, ExitNotFound, `^$`, "nvram", "rm", "-k", key, img, "two words", "missing")
	if !strings.Contains(out, `no entry named "missing"`) {
		t.Errorf("rm of a missing entry: %s", out)
	}
	mustRun(t, ExitOK, `"two words"`, "nvram", "ls", "-k", key, img)
	mustRun(t, ExitOK, `removed "two words"`, "nvram", "rm", "-k", key, img, "two words")
	mustRun(t, ExitNotFound, `^$`, "nvram", "get", "-k", key, img, "two words")

	// Usage errors, before the image is touched.
	before, _ := os.ReadFile(img)
	for _, args := range [][]string{
		{"nvram", "put", "-k", key, img, "a/b", file},
		{"nvram", "put", "-k", key, img, "..", file},
		{"nvram", "put", "-k", key, img, "x", file, "--type", ""},
		{"nvram", "put", "-k", key, img, "x", file, "--attr", "realsize=1"},
		{"nvram", "put", "-k", key, img, "x", file, "--attr", "a=1", "--attr", "a=2"},
		{"nvram", "put", "-k", "-", img, "x", "-"},
		{"nvram", "put", "-k", key, img},
		{"nvram", "get", "-k", key, img},
		{"nvram", "rm", "-k", key, img},
		{"nvram", "ls", "-k", key},
	} {
		if code, _, stderr := run(t, args...); code != ExitUsage {
			t.Errorf("%s: exit %d, want 2: %s", strings.Join(args, " "), code, stderr)
		}
	}
	// A wrong key: 3, and nothing is written.
	wrong := keyFile(t, bytes.Repeat([]byte{7}, 32)...)
	for _, args := range [][]string{
		{"nvram", "put", "-k", wrong, img, "x", file},
		{"nvram", "get", "-k", wrong, img, "OVMF_VARS.fd"},
		{"nvram", "ls", "-k", wrong, img},
		{"nvram", "rm", "-k", wrong, img, "OVMF_VARS.fd"},
	} {
		if code, stdout, stderr := run(t, args...); code != ExitWrongKey || stdout != "" {
			t.Errorf("%s: exit %d, want 3: %s%s", strings.Join(args, " "), code, stdout, stderr)
		}
	}
	if after, _ := os.ReadFile(img); !bytes.Equal(before, after) {
		t.Errorf("refused commands changed the image")
	}
}

// TestNvramForeignEntries: entries written by another (newer) writer, via
// the raw directory file: an unknown mandatory attribute makes that entry
// unreadable (5, naming the attribute) but listed and kept; a malformed
// directory is refused (5).
func TestNvramForeignEntries(t *testing.T) {
	img, key := newKeyedImage(t)
	ia5 := func(s string) []byte { return append([]byte{0x16, byte(len(s))}, s...) }
	seq := func(tag byte, parts ...[]byte) []byte {
		body := bytes.Join(parts, nil)
		return append([]byte{tag, byte(len(body))}, body...)
	}
	entry := seq(0x30, seq(0x30, ia5("data"), seq(0x31, ia5("x-sealed-by-v9")), seq(0x31), seq(0x04, []byte("opaque"))), seq(0x0c, []byte("future")))
	plain := seq(0x30, seq(0x30, ia5("data"), seq(0x31), seq(0x31), seq(0x04, []byte("plain"))), seq(0x0c, []byte("plain")))
	dir := append(append(append([]byte{0x31, 0x80}, entry...), plain...), 0, 0)
	dirFile := writeTemp(t, "dir.der", dir)
	ino := "0x4e56524d00000001"
	mustRun(t, ExitOK, `wrote`, "write", "-k", key, img, ino, dirFile)

	mustRun(t, ExitOK, `^future data 6 unusable: .*"x-sealed-by-v9".*\nplain data 5\n$`, "nvram", "ls", "-k", key, img)
	out := mustRun(t, ExitCorrupt, `^$`, "nvram", "get", "-k", key, img, "future")
	if !strings.Contains(out, `mandatory attribute "x-sealed-by-v9"`) {
		t.Errorf("get of an unusable entry: %s", out)
	}
	mustRun(t, ExitOK, `^plain$`, "nvram", "get", "-k", key, img, "plain")
	// Changing another entry keeps the unusable one byte for byte.
	mustRun(t, ExitOK, `stored`, "nvram", "put", "-k", key, img, "new", writeTemp(t, "n", []byte("n")))
	code, raw, _ := run(t, "read", "-k", key, img, ino)
	if code != ExitOK || !bytes.Contains([]byte(raw), entry) {
		t.Errorf("the unusable entry was not kept byte for byte")
	}
	if _, err := nvram.ParseDirectory([]byte(raw)); err != nil {
		t.Errorf("rewritten directory: %v", err)
	}

	mustRun(t, ExitOK, `wrote`, "write", "-k", key, img, ino, writeTemp(t, "bad", []byte{0x31, 0x80, 0x30, 0x05}))
	for _, args := range [][]string{{"ls", img}, {"get", img, "plain"}, {"put", img, "x", dirFile}, {"rm", img, "plain"}} {
		if code, _, stderr := run(t, append(append([]string{"nvram"}, args...), "-k", key)...); code != ExitCorrupt {
			t.Errorf("nvram %v on a malformed directory: exit %d: %s", args, code, stderr)
		}
	}
}

// TestNvramTampered: a flipped bit in the directory's data is an
// authentication failure (4), and nothing is output.
func TestNvramTampered(t *testing.T) {
	img, key := newKeyedImage(t)
	before, _ := os.ReadFile(img)
	big := bytes.Repeat([]byte{0x42}, 200<<10)
	mustRun(t, ExitOK, `stored`, "nvram", "put", "-k", key, img, "big", writeTemp(t, "big", big))
	after, _ := os.ReadFile(img)
	// Flip bytes in the middle of 4 KiB blocks the put wrote, until one
	// lands in the directory's data (metadata blocks fail differently).
	tried := 0
	for off := 0; off+4096 <= len(after) && tried < 200; off += 4096 {
		if bytes.Equal(before[off:off+4096], after[off:off+4096]) {
			continue
		}
		tried++
		b := bytes.Clone(after)
		b[off+2048] ^= 0x10
		p := writeTemp(t, "tampered.img", b)
		code, stdout, stderr := run(t, "nvram", "get", "-k", key, p, "big")
		if code == ExitAuthentication {
			if stdout != "" {
				t.Errorf("output despite the authentication failure")
			}
			if !strings.Contains(stderr, "authentication") {
				t.Errorf("stderr: %s", stderr)
			}
			return
		}
		if code == ExitOK && stdout != string(big) {
			t.Fatalf("tampered image at %d returned wrong data", off+2048)
		}
	}
	t.Fatalf("no flipped byte gave exit 4 (%d blocks tried)", tried)
}
