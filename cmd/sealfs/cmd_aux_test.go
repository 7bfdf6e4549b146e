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

	"github.com/sealfs/sealfs/blockdev"
)

const (
	v11        = "v11-sha2-aes128-auxmeta.img"
	v11UUIDStr = "12345678-9abc-def0-1122-334455667788"
)

func auxLs(o auxOptions, args ...string) func(io.Writer, io.Writer) error {
	return func(w, _ io.Writer) error { return runAuxLs(context.Background(), &o, args, w) }
}

func auxRead(o auxReadOptions, args ...string) func(io.Writer, io.Writer) error {
	return func(w, _ io.Writer) error { return runAuxRead(context.Background(), &o, args, w) }
}

func auxAdd(o auxOptions, stdin []byte, args ...string) func(io.Writer, io.Writer) error {
	return func(w, _ io.Writer) error {
		return runAuxAdd(context.Background(), &o, args, bytes.NewReader(stdin), w)
	}
}

func auxRm(o auxOptions, args ...string) func(io.Writer, io.Writer) error {
	return func(w, _ io.Writer) error { return runAuxRm(context.Background(), &o, args, w) }
}

func auxSetReserve(o auxOptions, args ...string) func(io.Writer, io.Writer) error {
	return func(w, _ io.Writer) error { return runAuxSetReserve(context.Background(), &o, args, w) }
}

// writableCopy copies a vector to a private, writable file.
func writableCopy(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(vector(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return writeTemp(t, name, b)
}

func TestAuxCommands(t *testing.T) {
	online, err := os.ReadFile(vector(t, "plaintext/aux-online.bin"))
	if err != nil {
		t.Fatal(err)
	}
	offline, err := os.ReadFile(vector(t, "plaintext/aux-offline.bin"))
	if err != nil {
		t.Fatal(err)
	}
	img11, img01, img08 := vector(t, v11), vector(t, v01), vector(t, "v08-mkfsinfo-header-sha2-aes128.img")
	js := auxOptions{JSON: true}
	force := auxOptions{Force: true}
	cases := []cliCase{
		{name: "ls v11", run: auxLs(auxOptions{}, img11), stdout: []string{
			`^` + v11UUIDStr + ` 0 35\n` + v11UUIDStr + ` 1 34\n$`}},
		{name: "ls v11 json", run: auxLs(js, img11), stdout: []string{
			`"uuid": "` + v11UUIDStr + `",\s*"index": 1,\s*"size": 34`, `"reserve": 1024`, `"capacity": 1494`, `"used": 137`, `"group": 0`}},
		{name: "ls v01 empty", run: auxLs(auxOptions{}, img01), stdout: []string{`^$`}},
		{name: "ls v01 json", run: auxLs(js, img01), stdout: []string{`"entries": \[\]`, `"reserve": 1024`}},
		{name: "ls creation info", run: auxLs(js, img08), stdout: []string{`"entries": \[\]`, `"reserve": 1024`, `"group": -1`}},
		{name: "ls not an image", run: auxLs(auxOptions{}, writeTemp(t, "zero.img", make([]byte, 4096))), code: ExitCorrupt, errMatch: "not a CocoonFS image"},
		{name: "ls missing image", run: auxLs(auxOptions{}, filepath.Join(t.TempDir(), "none.img")), code: ExitError},
		{name: "ls no args", run: auxLs(auxOptions{}), code: ExitUsage, errMatch: "missing IMAGE"},

		{name: "read #0 default", run: auxRead(auxReadOptions{}, img11, v11UUIDStr), stdout: []string{"^" + regexp.QuoteMeta(string(online)) + "$"}},
		{name: "read #1", run: auxRead(auxReadOptions{}, img11, strings.ToUpper(v11UUIDStr)+"#1"), stdout: []string{"^" + regexp.QuoteMeta(string(offline)) + "$"}},
		{name: "read undashed UUID", run: auxRead(auxReadOptions{}, img11, strings.ReplaceAll(v11UUIDStr, "-", "")+"#1"), stdout: []string{"^" + regexp.QuoteMeta(string(offline)) + "$"}},
		{name: "read missing index", run: auxRead(auxReadOptions{}, img11, v11UUIDStr+"#2"), code: ExitNotFound, errMatch: "^no aux metadata record " + v11UUIDStr + "#2$"},
		{name: "read bad UUID", run: auxRead(auxReadOptions{}, img11, "12345678-9abc"), code: ExitUsage, errMatch: `invalid UUID "12345678-9abc"`},
		{name: "read zero UUID", run: auxRead(auxReadOptions{}, img11, "00000000-0000-0000-0000-000000000000"), code: ExitUsage, errMatch: "reserved"},
		{name: "read bad index", run: auxRead(auxReadOptions{}, img11, v11UUIDStr+"#x"), code: ExitUsage, errMatch: `invalid index "x"`},
		{name: "read negative index", run: auxRead(auxReadOptions{}, img11, v11UUIDStr+"#-1"), code: ExitUsage, errMatch: "invalid index"},

		{name: "add no room", run: auxAdd(force, make([]byte, 2000), writableCopy(t, v11), v11UUIDStr, "-"), code: ExitNoSpace,
			errMatch: "online update with the key .* is needed: pass the key"},
		{name: "add missing file", run: auxAdd(force, nil, writableCopy(t, v11), v11UUIDStr, filepath.Join(t.TempDir(), "none")), code: ExitError},
		{name: "add read-only image file", run: auxAdd(force, []byte("x"), img11, v11UUIDStr, "-"), code: ExitError},
		{name: "rm missing", run: auxRm(force, writableCopy(t, v11), v11UUIDStr+"#5"), code: ExitNotFound, errMatch: "no aux metadata record"},
		{name: "add to a trimmed creation info image", run: auxAdd(force, []byte("x"), writableCopy(t, "v09-mkfsinfo-header-trimmed.img"), v11UUIDStr, "-"),
			code: ExitNoSpace, errMatch: "too small to hold the backup creation info header"},
		{name: "set-reserve garbage", run: auxSetReserve(force, writableCopy(t, v11), "lots"), code: ExitUsage, errMatch: `invalid reserve "lots"`},
	}
	if os.Geteuid() == 0 {
		cases = slicesDeleteFunc(cases, func(c cliCase) bool { return c.name == "add read-only image file" })
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.check(t)
		})
	}
}

func slicesDeleteFunc(s []cliCase, del func(cliCase) bool) []cliCase {
	out := s[:0]
	for _, c := range s {
		if !del(c) {
			out = append(out, c)
		}
	}
	return out
}

// TestAuxChangesKeepImageValid runs add, rm and set-reserve on copies of
// v01 and v11 and checks the records, and that the image still verifies
// and reads with its key.
func TestAuxChangesKeepImageValid(t *testing.T) {
	offline := vector(t, "plaintext/aux-offline.bin")
	small, err := os.ReadFile(vector(t, "plaintext/small.bin"))
	if err != nil {
		t.Fatal(err)
	}
	key := keyFile(t, goodKey...)
	for _, name := range []string{v01, v11} {
		t.Run(name, func(t *testing.T) {
			img := writableCopy(t, name)
			steps := [][]string{
				{"aux", "add", "-f", img, v11UUIDStr, offline},
				{"aux", "add", "-f", img, "01020304-0506-4708-890a-0b0c0d0e0f10", "-"},
				{"aux", "rm", "-f", img, v11UUIDStr},
				{"aux", "set-reserve", "-f", img, "512"},
			}
			for _, s := range steps {
				if code, _, stderr := run(t, s...); code != ExitOK {
					t.Fatalf("%v: exit %d: %s", s, code, stderr)
				}
			}
			code, stdout, stderr := run(t, "--json", "aux", "ls", img)
			if code != ExitOK {
				t.Fatalf("ls: %d %s", code, stderr)
			}
			var l auxListing
			if err := json.Unmarshal([]byte(stdout), &l); err != nil {
				t.Fatal(err)
			}
			if l.Reserve == nil || *l.Reserve != 512 {
				t.Errorf("reserve %v", l.Reserve)
			}
			// v01 had no records, v11 two with v11UUIDStr; one of those was added
			// and one removed, the other UUID sorts first.
			wantUUIDs := []string{"01020304-0506-4708-890a-0b0c0d0e0f10"}
			if name == v11 {
				wantUUIDs = append(wantUUIDs, v11UUIDStr, v11UUIDStr)
			}
			var got []string
			for _, e := range l.Entries {
				got = append(got, e.UUID)
			}
			if strings.Join(got, " ") != strings.Join(wantUUIDs, " ") {
				t.Errorf("records %v, want %v", got, wantUUIDs)
			}
			if code, stdout, stderr := run(t, "verify", "-k", key, img); code != ExitOK || !strings.Contains(stdout, "status:") {
				t.Fatalf("verify: %d %s %s", code, stdout, stderr)
			}
			if code, stdout, _ := run(t, "read", "-k", key, img, "42"); code != ExitOK || stdout != string(small) {
				t.Fatalf("read 42: exit %d", code)
			}
		})
	}
}

// TestAuxDeviceBlockSize: without --force, a device reporting blocks larger
// than the image's IO block is refused with exit 8 (as the reference does).
func TestAuxDeviceBlockSize(t *testing.T) {
	img := writableCopy(t, v01)
	dev, err := blockdev.OpenFile(img, nil)
	if err != nil {
		t.Fatal(err)
	}
	bs := dev.BlockSize()
	dev.Close()
	want := ExitOK
	if bs > 512 {
		want = ExitIOBlockSize
	}
	code, _, stderr := run(t, "aux", "set-reserve", img, "100")
	if code != want {
		t.Fatalf("exit %d, want %d (device block size %d): %s", code, want, bs, stderr)
	}
	if want == ExitIOBlockSize && !strings.Contains(stderr, "--force") {
		t.Errorf("stderr does not name --force: %s", stderr)
	}
}
