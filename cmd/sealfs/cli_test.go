package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	goodKey  = []byte{0xaa, 0xbb, 0xcc}
	wrongKey = []byte{0x00, 0x11, 0x22}
)

// cliCase calls one runX function in-process and checks what it returns
// and prints.
type cliCase struct {
	name     string
	run      func(stdout, stderr io.Writer) error
	code     int
	stdout   []string // regexps that must match stdout
	noStdout []string // regexps that must not match stdout
	errMatch string   // regexp the error message must match
}

func (c cliCase) check(t *testing.T) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := c.run(&stdout, &stderr)
	if got := exitCode(err); got != c.code {
		t.Fatalf("exit code %d, want %d (err: %v)", got, c.code, err)
	}
	for _, re := range c.stdout {
		if !regexp.MustCompile(re).MatchString(stdout.String()) {
			t.Errorf("stdout does not match %q:\n%s", re, stdout.String())
		}
	}
	for _, re := range c.noStdout {
		if regexp.MustCompile(re).MatchString(stdout.String()) {
			t.Errorf("stdout matches %q:\n%s", re, stdout.String())
		}
	}
	if c.errMatch != "" && (err == nil || !regexp.MustCompile(c.errMatch).MatchString(err.Error())) {
		t.Errorf("error %v does not match %q", err, c.errMatch)
	}
	// Keys never appear, in any spelling the tests use.
	all := stdout.String() + stderr.String()
	if err != nil {
		all += err.Error()
	}
	for _, k := range []string{"aabbcc", "AABBCC", "001122", "\xaa\xbb\xcc"} {
		if strings.Contains(all, k) {
			t.Errorf("output or error contains key material %q", k)
		}
	}
}

func imageOpts(keyPath string) imageOptions { return imageOptions{Key: keyOptions{File: keyPath}} }

func info(o infoOptions, args ...string) func(io.Writer, io.Writer) error {
	return func(w, e io.Writer) error { return runInfo(context.Background(), &o, args, w, e) }
}

func ls(o lsOptions, args ...string) func(io.Writer, io.Writer) error {
	return func(w, e io.Writer) error { return runLs(context.Background(), &o, args, w, e) }
}

func read(o readOptions, args ...string) func(io.Writer, io.Writer) error {
	return func(w, e io.Writer) error { return runRead(context.Background(), &o, args, w, e) }
}

func verify(o verifyOptions, args ...string) func(io.Writer, io.Writer) error {
	return func(w, e io.Writer) error { return runVerify(context.Background(), &o, args, w, e) }
}

func TestCommands(t *testing.T) {
	good, wrong := keyFile(t, goodKey...), keyFile(t, wrongKey...)
	img, tampered := vector(t, v01), tamperedCopy(t)
	zero := writeTemp(t, "zero.img", make([]byte, 4096))
	small, err := os.ReadFile(vector(t, "plaintext/small.bin"))
	if err != nil {
		t.Fatal(err)
	}
	k := imageOpts(good)
	kJSON := k
	kJSON.JSON = true
	cases := []cliCase{
		{name: "info without key", run: info(infoOptions{}, img), stdout: []string{
			`(?m)^kind: +filesystem$`, `(?m)^auth tree node hash: +SHA256 \(0x000b\)$`,
			`(?m)^block cipher: +AES \(0x0006\), 128-bit key, CBC mode$`,
			`(?m)^allocation block: +128 bytes$`, `(?m)^io block: +512 bytes$`,
			`(?m)^salt: +ddeeff$`, `(?m)^journal: +empty$`, `(?m)^image size: +8388608 bytes$`,
		}, noStdout: []string{`root digest`, `update counter`}},
		{name: "info with key", run: info(infoOptions{k}, img), stdout: []string{
			`(?m)^root digest: +[0-9a-f]{64}$`, `(?m)^update counter: +[0-9]+$`,
			`(?m)^files: +2$`, `(?m)^total blocks: +65536$`, `(?m)^auth tree height: +[1-9]$`,
		}},
		{name: "info json with key", run: info(infoOptions{kJSON}, img), stdout: []string{
			`"root_digest": "[0-9a-f]{64}"`, `"update_counter": "[0-9]+"`, `"kind": "filesystem"`,
		}},
		{name: "info creation info header", run: info(infoOptions{}, vector(t, "v08-mkfsinfo-header-sha2-aes128.img")), stdout: []string{
			`(?m)^kind: +mkfsinfo$`, `filesystem creation info header only: the image is formatted on its first read-write open with a key`,
			`(?m)^aux metadata length: +\d+ bytes$`,
		}},
		{name: "info trimmed creation info header with key", run: info(infoOptions{k}, vector(t, "v09-mkfsinfo-header-trimmed.img")), stdout: []string{
			`(?m)^image size: +8388608 bytes$`, `(?m)^device size: +1024 bytes$`, `(?m)^key: +not checked`,
		}},
		{name: "info wrong key", run: info(infoOptions{imageOpts(wrong)}, img), code: ExitWrongKey, errMatch: "wrong key"},
		{name: "info not an image", run: info(infoOptions{}, zero), code: ExitCorrupt, errMatch: "not a CocoonFS image"},
		{name: "info missing image", run: info(infoOptions{}, filepath.Join(t.TempDir(), "none.img")), code: ExitError},

		{name: "ls", run: ls(lsOptions{k}, img), stdout: []string{`^42 0x00 51\n43 0x00 102400\n$`}},
		{name: "ls json", run: ls(lsOptions{kJSON}, img), stdout: []string{
			`^\[\s*\{\s*"inode": 42,\s*"flags": 0,\s*"size": 51\s*\},\s*\{\s*"inode": 43,`}},
		{name: "ls missing key", run: ls(lsOptions{}, img), code: ExitUsage,
			errMatch: "no key given: pass --key-file FILE, set SEALFS_KEY_FILE=FILE, or .*--key-hex"},
		{name: "ls both key flags", run: ls(lsOptions{imageOptions{Key: keyOptions{File: good, Hex: "aabbcc"}}}, img), code: ExitUsage, errMatch: "mutually exclusive"},
		{name: "ls key hex", run: ls(lsOptions{imageOptions{Key: keyOptions{Hex: "AABBCC"}}}, img), stdout: []string{`^42 `}},
		{name: "ls malformed key hex", run: ls(lsOptions{imageOptions{Key: keyOptions{Hex: "aabbcz"}}}, img), code: ExitUsage, errMatch: "not a hex string"},
		{name: "ls key from env file", run: ls(lsOptions{imageOptions{Key: keyOptions{EnvFile: good}}}, img), stdout: []string{`^42 `}},
		{name: "ls key from stdin", run: ls(lsOptions{imageOptions{Key: keyOptions{File: "-", Stdin: bytes.NewReader(goodKey)}}}, img), stdout: []string{`^42 `}},
		{name: "ls empty key file", run: ls(lsOptions{imageOpts(keyFile(t))}, img), code: ExitError, errMatch: "empty"},
		{name: "ls wrong key", run: ls(lsOptions{imageOpts(wrong)}, img), code: ExitWrongKey, errMatch: "wrong key"},
		{name: "ls no args", run: ls(lsOptions{k}), code: ExitUsage, errMatch: "missing IMAGE"},

		{name: "read 42", run: read(readOptions{imageOptions: k}, img, "42"), stdout: []string{"^" + regexp.QuoteMeta(string(small)) + "$"}},
		{name: "read hex ino", run: read(readOptions{imageOptions: k}, img, "0x2A"), stdout: []string{"^" + regexp.QuoteMeta(string(small)) + "$"}},
		{name: "read missing inode", run: read(readOptions{imageOptions: k}, img, "99"), code: ExitNotFound, errMatch: "inode 99"},
		{name: "read reserved inode", run: read(readOptions{imageOptions: k}, img, "1"), code: ExitUsage, errMatch: "reserved"},
		{name: "read garbage ino", run: read(readOptions{imageOptions: k}, img, "4x2"), code: ExitUsage, errMatch: `invalid inode number "4x2"`},
		{name: "read negative ino", run: read(readOptions{imageOptions: k}, img, "-1"), code: ExitUsage, errMatch: "invalid inode number"},
		{name: "read empty hex ino", run: read(readOptions{imageOptions: k}, img, "0x"), code: ExitUsage, errMatch: "invalid inode number"},
		{name: "read tampered", run: read(readOptions{imageOptions: k}, tampered, "43"), code: ExitAuthentication, errMatch: "authentication failed"},
		{name: "read tampered other file", run: read(readOptions{imageOptions: k}, tampered, "42"), stdout: []string{"^" + regexp.QuoteMeta(string(small)) + "$"}},
		{name: "read not an image", run: read(readOptions{imageOptions: k}, zero, "42"), code: ExitCorrupt},
		{name: "read creation info header", run: read(readOptions{imageOptions: k}, vector(t, "v08-mkfsinfo-header-sha2-aes128.img"), "42"), code: ExitNotFormatted},

		{name: "verify", run: verify(verifyOptions{k}, img), stdout: []string{
			`(?m)^data blocks authenticated: +[1-9]\d*$`, `(?m)^inodes: +2$`, `(?m)^bytes: +102451$`, `(?m)^status: +ok$`}},
		{name: "verify json", run: verify(verifyOptions{kJSON}, img), stdout: []string{`"inodes": 2`, `"bytes": 102451`}},
		{name: "verify tampered", run: verify(verifyOptions{k}, tampered), code: ExitAuthentication,
			stdout: []string{`(?m)^status: +[1-9]\d* problem\(s\)$`, `(?m)^problem: +.*authentication failed`}, errMatch: "authentication failed"},
		{name: "verify tampered json", run: verify(verifyOptions{kJSON}, tampered), code: ExitAuthentication, stdout: []string{`"problems": \[`}},
		{name: "verify wrong key", run: verify(verifyOptions{imageOpts(wrong)}, img), code: ExitWrongKey, errMatch: "wrong key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.check(t)
		})
	}
}

func jsonValid(s string) bool {
	var v any
	return json.Unmarshal([]byte(s), &v) == nil
}

// TestJSONValid checks that every --json output parses as one document.
func TestJSONValid(t *testing.T) {
	k := imageOpts(keyFile(t, goodKey...))
	k.JSON = true
	img := vector(t, v01)
	for name, run := range map[string]func(io.Writer, io.Writer) error{
		"info":   info(infoOptions{imageOptions{JSON: true}}, img),
		"info-k": info(infoOptions{k}, img),
		"ls":     ls(lsOptions{k}, img),
		"verify": verify(verifyOptions{k}, img),
	} {
		var out bytes.Buffer
		if err := run(&out, io.Discard); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !jsonValid(out.String()) {
			t.Errorf("%s: invalid JSON:\n%s", name, out.String())
		}
	}
}
