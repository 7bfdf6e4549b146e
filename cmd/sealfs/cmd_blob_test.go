package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealfs/sealfs/blob/delivery"
	"github.com/sealfs/sealfs/merkle"
)

// runCLI runs one sealfs command line in-process.
func runCLI(t *testing.T, stdin []byte, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = execute(context.Background(), args, bytes.NewReader(stdin), &o, &e)
	return code, o.String(), e.String()
}

func TestBlobCommands(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	data := bytes.Repeat([]byte("blob store "), 5000) // 55000 bytes, 7 blocks
	name := merkle.FuchsiaRoot(data).String()
	file := writeTemp(t, "data.bin", data)

	// put from a file creates the store and prints the name; again is fine.
	for range 2 {
		code, out, errOut := runCLI(t, nil, "blob", "put", store, file)
		if code != 0 || out != name+"\n" {
			t.Fatalf("put: %d %q %q", code, out, errOut)
		}
	}
	// put from stdin, JSON.
	code, out, _ := runCLI(t, []byte("hello"), "--json", "blob", "put", store, "-")
	var pr blobPutResult
	if code != 0 || json.Unmarshal([]byte(out), &pr) != nil || pr.Name != "36e43c7b39beea113ab5070a979023db0b1a47cb9da622169d10660d4f4ad263" || pr.Size != 5 || pr.Present {
		t.Fatalf("put --json: %d %q", code, out)
	}
	code, out, _ = runCLI(t, []byte("hello"), "--json", "blob", "put", store)
	if code != 0 || !strings.Contains(out, `"present": true`) {
		t.Fatalf("put again --json: %d %q", code, out)
	}

	// get to stdout and to a file, and as a delivery blob.
	code, out, _ = runCLI(t, nil, "blob", "get", store, name)
	if code != 0 || out != string(data) {
		t.Fatalf("get: %d, %d bytes", code, len(out))
	}
	outFile := filepath.Join(dir, "out.bin")
	if code, out, _ = runCLI(t, nil, "blob", "get", store, name, "-o", outFile); code != 0 || out != "" {
		t.Fatalf("get -o: %d %q", code, out)
	}
	if got, _ := os.ReadFile(outFile); !bytes.Equal(got, data) {
		t.Fatal("get -o: wrong contents")
	}
	dfile := filepath.Join(dir, "data.delivery")
	if code, _, _ = runCLI(t, nil, "blob", "get", "--delivery", store, name, "-o", dfile); code != 0 {
		t.Fatalf("get --delivery: %d", code)
	}
	enc, _ := os.ReadFile(dfile)
	if dec, err := delivery.Decode(enc); err != nil || !bytes.Equal(dec, data) {
		t.Fatalf("delivery output does not decode to the blob: %v", err)
	}
	if len(enc) >= len(data) {
		t.Errorf("delivery blob of repetitive data not compressed: %d bytes", len(enc))
	}
	// put --delivery into another store.
	store2 := filepath.Join(dir, "store2")
	if code, out, _ = runCLI(t, nil, "blob", "put", "--delivery", store2, dfile); code != 0 || out != name+"\n" {
		t.Fatalf("put --delivery: %d %q", code, out)
	}

	// ls, stat, du, verify.
	code, out, _ = runCLI(t, nil, "blob", "ls", store)
	if code != 0 || !strings.Contains(out, name+" 55000\n") || strings.Count(out, "\n") != 2 {
		t.Fatalf("ls: %d %q", code, out)
	}
	code, out, _ = runCLI(t, nil, "blob", "stat", store, name)
	if code != 0 || !strings.Contains(out, "size:    55000 bytes") || !strings.Contains(out, "tree:    8192 bytes") {
		t.Fatalf("stat: %d %q", code, out)
	}
	code, out, _ = runCLI(t, nil, "--json", "blob", "du", store)
	var du blobUsage
	if code != 0 || json.Unmarshal([]byte(out), &du) != nil || du.Blobs != 2 || du.Bytes < 55000 {
		t.Fatalf("du: %d %q", code, out)
	}
	code, out, _ = runCLI(t, nil, "blob", "verify", store)
	if code != 0 || !strings.Contains(out, "blobs verified: 2") || !strings.Contains(out, "status:         ok") {
		t.Fatalf("verify: %d %q", code, out)
	}

	// Tamper with the stored data: get and verify exit 4, -o leaves no file.
	blobFile := filepath.Join(store, "blobs", name)
	raw, _ := os.ReadFile(blobFile)
	raw[32+3*8192+5] ^= 1
	os.WriteFile(blobFile, raw, 0o644)
	bad := filepath.Join(dir, "bad.bin")
	if code, _, errOut := runCLI(t, nil, "blob", "get", store, name, "-o", bad); code != ExitAuthentication || !strings.Contains(errOut, "data block 3") {
		t.Fatalf("get of a tampered blob: %d %q", code, errOut)
	}
	if _, err := os.Stat(bad); err == nil {
		t.Fatal("get -o left a file after a verification failure")
	}
	code, out, _ = runCLI(t, nil, "--json", "blob", "verify", store)
	if code != ExitAuthentication || !strings.Contains(out, `"problems": [`) || !strings.Contains(out, name) {
		t.Fatalf("verify of a tampered store: %d %q", code, out)
	}
	if code, _, _ = runCLI(t, nil, "blob", "verify", store, pr.Name); code != 0 {
		t.Fatalf("verify of the intact blob: %d", code)
	}

	// rm, then the blob is gone (6).
	if code, _, _ = runCLI(t, nil, "blob", "rm", store, name); code != 0 {
		t.Fatalf("rm: %d", code)
	}
	for _, args := range [][]string{
		{"blob", "rm", store, name},
		{"blob", "get", store, name},
		{"blob", "stat", store, name},
		{"blob", "verify", store, name},
	} {
		if code, _, errOut := runCLI(t, nil, args...); code != ExitNotFound {
			t.Errorf("%v: %d %q, want %d", args, code, errOut, ExitNotFound)
		}
	}
}

func TestBlobCommandErrors(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	if code, _, _ := runCLI(t, []byte("x"), "blob", "put", store); code != 0 {
		t.Fatal("put failed")
	}
	notStore := filepath.Join(dir, "notstore")
	os.Mkdir(notStore, 0o755)
	os.WriteFile(filepath.Join(notStore, "file"), nil, 0o644)
	data := bytes.Repeat([]byte{7}, 100000)
	var enc bytes.Buffer
	delivery.Encode(&enc, data)
	truncated := writeTemp(t, "trunc.delivery", enc.Bytes()[:enc.Len()/2])

	for _, c := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"blob", "get", store, "abc"}, ExitUsage, "want 64 hex characters"},
		{[]string{"blob", "get", store, strings.Repeat("g", 64)}, ExitUsage, "not a lowercase hex digit"},
		{[]string{"blob", "stat", store, strings.Repeat("A", 64)}, ExitUsage, "not a lowercase hex digit"},
		{[]string{"blob", "get", store}, ExitUsage, "missing NAME"},
		{[]string{"blob", "ls"}, ExitUsage, "missing STORE"},
		{[]string{"blob", "ls", store, "extra"}, ExitUsage, "unexpected argument"},
		{[]string{"blob", "ls", notStore}, ExitCorrupt, "not a sealfs blob store"},
		{[]string{"blob", "put", notStore, "-"}, ExitCorrupt, "not a sealfs blob store"},
		{[]string{"blob", "ls", filepath.Join(dir, "missing")}, ExitError, "no such file"},
		{[]string{"blob", "get", store, strings.Repeat("0", 64)}, ExitNotFound, "no such file"},
		{[]string{"blob", "put", store, filepath.Join(dir, "missing")}, ExitError, "no such file"},
		{[]string{"blob", "put", "--delivery", store, truncated}, ExitCorrupt, "corrupt delivery blob"},
	} {
		code, _, errOut := runCLI(t, nil, c.args...)
		if code != c.code || !strings.Contains(errOut, c.stderr) || !strings.HasPrefix(errOut, "sealfs: ") {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, errOut, c.code, c.stderr)
		}
	}
	// Nothing half-installed by the failed delivery put.
	if _, out, _ := runCLI(t, nil, "blob", "ls", store); strings.Count(out, "\n") != 1 {
		t.Fatalf("ls after failures: %q", out)
	}
	if ents, _ := os.ReadDir(filepath.Join(store, "tmp")); len(ents) != 0 {
		t.Fatalf("temporary files left: %v", ents)
	}
}
