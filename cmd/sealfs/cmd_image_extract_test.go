package main

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sealfs/sealfs/internal/testutil"
)

const (
	imageExtractV1Digest = "314681a11bb20115649ae2894391ed414ddb3c8d2fed2dbf00b086b0b62f70fd"
	imageExtractV2Digest = "06a168adaf388af1bacd73ba3aa28905c78c8492426510e9bf4506d7d870de5b"
	imageExtractV3Digest = "0645fdfdb4eb83e8aab9a992a2fdecc401cf0dc9ea75528faf1ad70c7a425f8c"
	// A chunk blob (the tail of random.bin, all of subdir/nested.txt) that
	// v1's tree uses and v2's does not (v2 keeps it in its lower layer).
	imageExtractV1Chunk = "4f9474ed921e3de53c078b187e60b8824bde551add53745cb2b63f0ca4d56b4c"
)

// imageExtractLayout returns a PuzzleFS layout written by the reference
// puzzlefs tool (README of testdata/vectors/puzzlefs: trees and printed
// digests).
func imageExtractLayout(t *testing.T, name string) string {
	t.Helper()
	return testutil.Vector(t, "puzzlefs/"+name)
}

// imageExtractCopyLayout copies a vector layout somewhere writable.
func imageExtractCopyLayout(t *testing.T, name string) string {
	t.Helper()
	src := imageExtractLayout(t, name)
	dst := filepath.Join(t.TempDir(), name)
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(out, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// imageExtractFlip flips one bit in the middle of a blob of a layout copy.
func imageExtractFlip(t *testing.T, layout, digest string) {
	t.Helper()
	p := filepath.Join(layout, "blobs", "sha256", digest)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestImageExtractCommand(t *testing.T) {
	oci := imageExtractLayout(t, "oci")
	comp := imageExtractLayout(t, "oci-compressed-tree1")
	tampered := imageExtractCopyLayout(t, "oci")
	imageExtractFlip(t, tampered, imageExtractV1Chunk)
	nonEmpty := t.TempDir()
	if err := os.WriteFile(filepath.Join(nonEmpty, "mine"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tree1 := `: 4 files, 2 directories, 1 symlink, 1 hard link, 0 others; 300\.0 KiB \(307227 B\); `
	summary1 := `^extracted .*oci:v1 to .*` + tree1
	for _, c := range []struct {
		name   string
		args   []string // DIR is appended unless noDir
		noDir  bool
		code   int
		stdout string // regexp
		stderr string // regexp
	}{
		{name: "v1", args: []string{"image", "extract", oci + ":v1"}, stdout: summary1 + `sha256 checked\n$`},
		{name: "v1 digest", args: []string{"image", "extract", "--digest", imageExtractV1Digest, oci + ":v1"}, stdout: summary1 + `fs-verity chain checked\n$`},
		{name: "v2 digest", args: []string{"image", "extract", "--digest", imageExtractV2Digest, oci + ":v2"},
			stdout: `4 files, 2 directories, 1 symlink, 1 hard link, 0 others; 300\.1 KiB \(307252 B\); fs-verity chain checked`},
		{name: "v3 no digest", args: []string{"image", "extract", comp + ":v3"}, stdout: `^extracted .*:v3 to .*` + tree1 + `sha256 checked\n$`},
		{name: "v3 upstream's wrong fsVerityData", args: []string{"image", "extract", "--digest", imageExtractV3Digest, comp + ":v3"}, code: 4, stderr: `fs-verity`},
		{name: "wrong digest", args: []string{"image", "extract", "--digest", imageExtractV2Digest, oci + ":v1"}, code: 4, stderr: `not the trusted`},
		{name: "tampered chunk", args: []string{"image", "extract", tampered + ":v1"}, code: 4, stderr: `random\.bin.*sha256`},
		{name: "tampered chunk unused by v2", args: []string{"image", "extract", tampered + ":v2"}, stdout: `^extracted`},
		{name: "missing tag", args: []string{"image", "extract", oci + ":v9"}, code: 6, stderr: `no tag "v9"`},
		{name: "missing layout", args: []string{"image", "extract", filepath.Join(t.TempDir(), "nope") + ":v1"}, code: 1},
		{name: "bad ref", args: []string{"image", "extract", "oci"}, code: 2, stderr: `want OCIDIR:TAG`},
		{name: "bad digest", args: []string{"image", "extract", "--digest", "abc", oci + ":v1"}, code: 2, stderr: `--digest`},
		{name: "bad owners", args: []string{"image", "extract", "--owners", "some", oci + ":v1"}, code: 2, stderr: `--owners`},
		{name: "missing DIR", args: []string{"image", "extract", oci + ":v1"}, noDir: true, code: 2, stderr: `missing DIR`},
		{name: "non-empty DIR", args: []string{"image", "extract", oci + ":v1", nonEmpty}, noDir: true, code: 1, stderr: `not empty`},
	} {
		t.Run(c.name, func(t *testing.T) {
			parent := t.TempDir()
			out := filepath.Join(parent, "out")
			args := c.args
			if !c.noDir {
				args = append(args[:len(args):len(args)], out)
			}
			code, stdout, stderr := runCLI(t, nil, args...)
			if code != c.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, c.code, stdout, stderr)
			}
			if c.stdout != "" && !regexp.MustCompile(c.stdout).MatchString(stdout) {
				t.Errorf("stdout %q does not match %q", stdout, c.stdout)
			}
			if c.stderr != "" && !regexp.MustCompile(c.stderr).MatchString(stderr) {
				t.Errorf("stderr %q does not match %q", stderr, c.stderr)
			}
			ents, _ := os.ReadDir(parent)
			switch {
			case c.noDir:
			case code == 0:
				if b, err := os.ReadFile(filepath.Join(out, "subdir", "nested.txt")); err != nil || len(b) == 0 {
					t.Errorf("subdir/nested.txt: %v", err)
				}
				if len(ents) != 1 {
					t.Errorf("parent holds %d entries, want only out", len(ents))
				}
			case len(ents) != 0:
				t.Errorf("failed extraction left %s behind", ents[0].Name())
			}
			if b, _ := os.ReadDir(nonEmpty); len(b) != 1 {
				t.Errorf("the non-empty target changed: %d entries", len(b))
			}
		})
	}
}

func TestImageExtractJSON(t *testing.T) {
	oci := imageExtractLayout(t, "oci")
	out := filepath.Join(t.TempDir(), "out")
	code, stdout, stderr := runCLI(t, nil, "--json", "image", "extract", "--digest", imageExtractV2Digest, oci+":v2", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var r imageExtractResult
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if !r.Verity || r.Files != 4 || r.Dirs != 2 || r.Symlinks != 1 || r.Hardlinks != 1 || r.Bytes != 307252 || r.Dir != out || r.Warnings == nil {
		t.Errorf("JSON %s", stdout)
	}
	for _, k := range []string{`"files"`, `"hardlinks"`, `"bytes"`, `"owners"`, `"skipped_xattrs"`, `"warnings": []`} {
		if !strings.Contains(stdout, k) {
			t.Errorf("JSON lacks %s: %s", k, stdout)
		}
	}
}

func TestImageLsDu(t *testing.T) {
	oci := imageExtractLayout(t, "oci")
	code, stdout, stderr := runCLI(t, nil, "image", "ls", oci)
	want := `^TAG +MANIFEST +FILES +LOGICAL +STORED\n` +
		`v1 +5f3e11d54bb1 +4 +300\.0 KiB \(307227 B\) +302\.3 KiB \(309529 B\)\n` +
		`v2 +a7ec05948b0e +4 +300\.1 KiB \(307252 B\) +303\.6 KiB \(310914 B\)\n$`
	if code != 0 || !regexp.MustCompile(want).MatchString(stdout) {
		t.Errorf("ls: exit %d\n%s%s\nwant %s", code, stdout, stderr, want)
	}
	code, stdout, _ = runCLI(t, nil, "--json", "image", "ls", oci)
	var ls struct {
		Tags []imageLsTag `json:"tags"`
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &ls) != nil || len(ls.Tags) != 2 ||
		ls.Tags[1].Tag != "v2" || !strings.HasPrefix(ls.Tags[1].Manifest, "sha256:a7ec05948b0e") ||
		ls.Tags[1].LogicalBytes != 307252 || ls.Tags[1].StoredBytes != 310914 || ls.Tags[1].Files != 4 {
		t.Errorf("ls --json: exit %d\n%s", code, stdout)
	}

	code, stdout, _ = runCLI(t, nil, "image", "du", oci)
	for _, re := range []string{
		`(?m)^images: +2$`,
		`(?m)^shared: +2 blobs, 25\.7 KiB \(26306 B\) \(referenced by 2 or more images\)$`,
		`(?m)^unique: +8 blobs, 554\.5 KiB \(567831 B\)`,
		`(?m)^garbage: +0 blobs, 0 B`,
		`(?m)^total: +10 blobs, 580\.2 KiB \(594137 B\)`,
		`(?m)^only v1: +276\.6 KiB \(283223 B\) of 302\.3 KiB`,
	} {
		if code != 0 || !regexp.MustCompile(re).MatchString(stdout) {
			t.Errorf("du: exit %d, output does not match %s:\n%s", code, re, stdout)
		}
	}

	// Garbage shows up, in text and JSON.
	dirty := imageExtractCopyLayout(t, "oci")
	if err := os.WriteFile(filepath.Join(dirty, "blobs", "sha256", "leftover"), make([]byte, 2000), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ = runCLI(t, nil, "--json", "image", "du", dirty)
	var du struct {
		Garbage, Total imageDuSet
		Tags           []imageLsTag
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &du) != nil || du.Garbage != (imageDuSet{1, 2000}) || du.Total != (imageDuSet{11, 594137 + 2000}) || len(du.Tags) != 2 {
		t.Errorf("du --json with garbage: exit %d\n%s", code, stdout)
	}

	// Exit codes: a tampered manifest is 4, a missing layout 1, usage 2.
	tampered := imageExtractCopyLayout(t, "oci")
	imageExtractFlip(t, tampered, imageExtractBlobName(t, tampered, "a7ec05948b0e")) // v2's manifest
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"image", "ls", tampered}, 4},
		{[]string{"image", "du", tampered}, 4},
		{[]string{"image", "ls", filepath.Join(t.TempDir(), "nope")}, 1},
		{[]string{"image", "du"}, 2},
		{[]string{"image", "ls", oci, "extra"}, 2},
	} {
		if code, stdout, stderr := runCLI(t, nil, c.args...); code != c.code {
			t.Errorf("%q: exit %d, want %d\n%s%s", c.args, code, c.code, stdout, stderr)
		}
	}
}

// imageExtractBlobName completes a blob name from its prefix.
func imageExtractBlobName(t *testing.T, layout, prefix string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(layout, "blobs", "sha256", prefix+"*"))
	if err != nil || len(m) != 1 {
		t.Fatalf("blob %s…: %v %v", prefix, m, err)
	}
	return filepath.Base(m[0])
}
