package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestReadOutputAtomic checks -o: the file appears whole or not at all, and
// no temporary file is left behind either way.
func TestReadOutputAtomic(t *testing.T) {
	k := imageOpts(keyFile(t, goodKey...))
	img, tampered := vector(t, v01), tamperedCopy(t)
	want, err := os.ReadFile(vector(t, "plaintext/rand100k.bin"))
	if err != nil {
		t.Fatal(err)
	}
	old := []byte("previous contents\n")
	for _, c := range []struct {
		name, image, ino string
		code             int
	}{
		{"ok", img, "43", ExitOK},
		{"missing inode", img, "99", ExitNotFound},
		{"tampered", tampered, "43", ExitAuthentication},
		{"wrong key", img, "43", ExitWrongKey},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := writeTemp(t, "out.bin", old)
			opts := readOptions{imageOptions: k, Output: out}
			if c.code == ExitWrongKey {
				opts.Key.File = keyFile(t, wrongKey...)
			}
			var stdout bytes.Buffer
			err := runRead(context.Background(), &opts, []string{c.image, c.ino}, &stdout, &stdout)
			if got := exitCode(err); got != c.code {
				t.Fatalf("exit code %d, want %d (err: %v)", got, c.code, err)
			}
			if stdout.Len() != 0 {
				t.Errorf("printed %d bytes to stdout with -o", stdout.Len())
			}
			got, _ := os.ReadFile(out)
			if c.code == ExitOK && !bytes.Equal(got, want) {
				t.Errorf("output differs from plaintext (%d bytes, want %d)", len(got), len(want))
			}
			if c.code != ExitOK && !bytes.Equal(got, old) {
				t.Errorf("failed read changed the output file")
			}
			if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 1 {
				t.Errorf("directory holds %d entries, want only the output file", len(ents))
			}
		})
	}
}

func TestReadOutputUnwritable(t *testing.T) {
	opts := readOptions{imageOptions: imageOpts(keyFile(t, goodKey...)), Output: filepath.Join(t.TempDir(), "no", "such", "dir", "out")}
	err := runRead(context.Background(), &opts, []string{vector(t, v01), "42"}, &bytes.Buffer{}, &bytes.Buffer{})
	if got := exitCode(err); got != ExitError {
		t.Fatalf("exit code %d, want %d (err: %v)", got, ExitError, err)
	}
}

func TestParseIno(t *testing.T) {
	for in, want := range map[string]uint64{"42": 42, "042": 42, "0x2a": 42, "0X2A": 42, "18446744073709551615": 1<<64 - 1} {
		if got, err := parseIno(in); err != nil || got != want {
			t.Errorf("parseIno(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "abc", "0x", "0xg", "-1", "+1", "4_2", "1e3", "18446744073709551616", " 42"} {
		if _, err := parseIno(in); exitCode(err) != ExitUsage {
			t.Errorf("parseIno(%q): err %v, want a usage error", in, err)
		}
	}
}
