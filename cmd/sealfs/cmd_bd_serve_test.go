package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sealfs/sealfs/bd"
	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/internal/testutil"
	"github.com/sealfs/sealfs/nbd/nbdtest"
)

// bdServer is a running `sealfs bd serve`.
type bdServer struct {
	addr           string
	stdout, stderr *testutil.SyncBuffer
	stop           func() (int, string) // exit code and stdout
}

var listenRE = regexp.MustCompile(`listening on (\S+)`)

// startBdServe runs `sealfs bd serve ARGS --listen 127.0.0.1:0` in-process
// until stop (which cancels it like SIGINT would) or the test's end.
func startBdServe(t *testing.T, args ...string) *bdServer {
	t.Helper()
	s := &bdServer{stdout: &testutil.SyncBuffer{}, stderr: &testutil.SyncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		cmd := newBdServeCommand(&globalOptions{})
		cmd.SetArgs(append(args, "--listen", "127.0.0.1:0"))
		cmd.SetOut(s.stdout)
		cmd.SetErr(s.stderr)
		cmd.SilenceErrors, cmd.SilenceUsage = true, true
		err := cmd.ExecuteContext(ctx)
		code := ExitOK
		if err != nil {
			code = ExitUsage
			var re *runError
			if errors.As(err, &re) {
				code = exitCode(re.err)
			}
			fmt.Fprintf(s.stderr, "sealfs: %v\n", err)
		}
		done <- code
	}()
	var once sync.Once
	var code int
	s.stop = func() (int, string) {
		once.Do(func() {
			cancel()
			select {
			case code = <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("bd serve did not stop; stderr:\n%s", s.stderr)
			}
		})
		return code, s.stdout.String()
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("bd serve stderr:\n%s", s.stderr)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if m := listenRE.FindStringSubmatch(s.stdout.String()); m != nil {
			s.addr = m[1]
			return s
		}
		select {
		case c := <-done:
			done <- c
			t.Fatalf("bd serve exited with %d before listening:\n%s", c, s.stderr)
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("bd serve printed no address:\n%s", s.stderr)
	return nil
}

func runTool(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

func mustTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runTool(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func randomFile(t *testing.T, path string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBdServeStd(t *testing.T) {
	testutil.RequireTool(t, "nbdcopy")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	data := randomFile(t, img, 4<<20)
	s := startBdServe(t, img, "--variant", "std", "--name", "disk")
	out := filepath.Join(dir, "out.img")
	mustTool(t, "nbdcopy", "nbd://"+s.addr+"/disk", out)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("nbdcopy of the std export differs from the image")
	}
	// Write through the export, then the host file has it after shutdown.
	in := filepath.Join(dir, "in.img")
	newData := randomFile(t, in, 4<<20)
	mustTool(t, "nbdcopy", in, "nbd://"+s.addr) // default export
	if code, stdout := s.stop(); code != 0 {
		t.Fatalf("exit %d:\n%s", code, stdout)
	}
	if got, _ := os.ReadFile(img); !bytes.Equal(got, newData) {
		t.Fatal("writes through the std export are not in the image")
	}
}

func TestBdServeUsage(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	randomFile(t, img, 1<<20)
	key := filepath.Join(dir, "k")
	randomFile(t, key, 64)
	short := filepath.Join(dir, "short")
	randomFile(t, short, 32)
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--variant", "nope"}, ExitUsage, "--variant"},
		{[]string{"--variant", "crypt"}, ExitUsage, "needs --key-file"},
		{[]string{"--variant", "crypt", "--key-file", short}, ExitUsage, "key is 64"},
		{[]string{"--variant", "verity", "--root", "00"}, ExitUsage, "needs --mac-key-file"},
		{[]string{"--variant", "verity", "--root", "00", "--mac-key-file", key}, ExitError, "tree"},
		{[]string{"--variant", "vericrypt", "--tree", img}, ExitUsage, "--root is required"},
		{[]string{"--variant", "vericrypt", "--tree", img, "--root", "zz", "--key-file", key}, ExitUsage, "not a hex"},
		{[]string{"--tls-cert", img}, ExitUsage, "go together"},
		{[]string{"--tls-client-ca", img}, ExitUsage, "needs --tls-cert"},
		{[]string{"--listen", "256.0.0.1:1"}, ExitError, ""},
	} {
		cmd := newBdServeCommand(&globalOptions{})
		var out, errb bytes.Buffer
		cmd.SetArgs(append([]string{img}, c.args...))
		cmd.SetOut(&out)
		cmd.SetErr(&errb)
		cmd.SilenceErrors, cmd.SilenceUsage = true, true
		err := cmd.ExecuteContext(context.Background())
		var re *runError
		if !errors.As(err, &re) {
			t.Errorf("%v: error %v", c.args, err)
			continue
		}
		if got := exitCode(re.err); got != c.code || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%v: exit %d (%v), want %d containing %q", c.args, got, err, c.code, c.msg)
		}
		if bytes.Contains(out.Bytes(), []byte("listening")) {
			t.Errorf("%v: started listening", c.args)
		}
	}
}

// vericryptImage is an image made by `sealfs bd makefs --variant vericrypt`.
type vericryptImage struct {
	data, tree, xtsKey, macKey string
	root                       string
}

func makeVeriCryptImage(t *testing.T, dir string) *vericryptImage {
	t.Helper()
	testutil.RequireTool(t, "mke2fs")
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "hello.txt"), []byte("hello, sealfs over nbd\n"), 0o644)
	os.WriteFile(filepath.Join(src, "sub", "big.bin"), bytes.Repeat([]byte("0123456789abcdef"), 20000), 0o644)
	im := &vericryptImage{
		data: filepath.Join(dir, "disk.img"), tree: filepath.Join(dir, "disk.img.tree"),
		xtsKey: filepath.Join(dir, "xts.key"), macKey: filepath.Join(dir, "mac.key"),
	}
	randomFile(t, im.xtsKey, 64)
	randomFile(t, im.macKey, 32)
	var out, errb bytes.Buffer
	if code := execute(context.Background(), []string{"--json", "bd", "makefs", "--size", "8M", "--variant", "vericrypt",
		"--key-file", im.xtsKey, "--mac-key-file", im.macKey, im.data, src}, nil, &out, &errb); code != 0 {
		t.Fatalf("bd makefs: exit %d: %s", code, errb.String())
	}
	var res struct {
		Root string `json:"root_hash"`
		Tree string `json:"tree"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || res.Root == "" {
		t.Fatalf("bd makefs output %q: %v", out.String(), err)
	}
	if res.Tree != im.tree {
		t.Fatalf("tree at %s, want %s", res.Tree, im.tree)
	}
	im.root = res.Root
	return im
}

func (im *vericryptImage) args(root string) []string {
	return []string{im.data, "--variant", "vericrypt", "--key-file", im.xtsKey, "--mac-key-file", im.macKey,
		"--tree", im.tree, "--root", root, "--name", "disk"}
}

func debugfsCat(t *testing.T, img, file string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+file, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", file, err)
	}
	return string(out)
}

// TestBdServeVeriCryptEndToEnd: makefs-style vericrypt image, served, copied
// out (plain and over mutual TLS) and read with debugfs; written through
// qemu-io, reopened with the new root; tampered and refused block by block.
func TestBdServeVeriCryptEndToEnd(t *testing.T) {
	for _, tool := range []string{"nbdcopy", "debugfs", "qemu-io", "nbdinfo"} {
		testutil.RequireTool(t, tool)
	}
	dir := t.TempDir()
	im := makeVeriCryptImage(t, dir)

	// 1. Plain NBD: copy out, read a file.
	s := startBdServe(t, im.args(im.root)...)
	cp := filepath.Join(dir, "copy.img")
	mustTool(t, "nbdcopy", "nbd://"+s.addr+"/disk", cp)
	if got := debugfsCat(t, cp, "/hello.txt"); got != "hello, sealfs over nbd\n" {
		t.Fatalf("debugfs cat /hello.txt on the copy: %q", got)
	}
	if code, out := s.stop(); code != 0 || !strings.Contains(out, "root: "+im.root) {
		t.Fatalf("exit %d, stdout:\n%s", code, out)
	}

	// 2. Mutual TLS.
	pki := nbdtest.NewPKI(t)
	tlsArgs := append(im.args(im.root), "--tls-cert", filepath.Join(pki.Dir, "server-cert.pem"),
		"--tls-key", filepath.Join(pki.Dir, "server-key.pem"), "--tls-client-ca", filepath.Join(pki.Dir, "ca-cert.pem"))
	s = startBdServe(t, tlsArgs...)
	cpTLS := filepath.Join(dir, "copy-tls.img")
	mustTool(t, "nbdcopy", "nbds://"+s.addr+"/disk?tls-certificates="+pki.Dir, cpTLS)
	if got := debugfsCat(t, cpTLS, "/hello.txt"); got != "hello, sealfs over nbd\n" {
		t.Fatalf("debugfs cat over TLS: %q", got)
	}
	if out, err := runTool(t, "nbdinfo", "nbd://"+s.addr+"/disk"); err == nil {
		t.Errorf("plain client accepted by a TLS server:\n%s", out)
	}
	if out, err := runTool(t, "nbdinfo", "nbds://"+s.addr+"/disk?tls-certificates="+pki.NoClientDir); err == nil {
		t.Errorf("client without a certificate accepted:\n%s", out)
	}
	s.stop()

	// 3. Write through qemu-io; the new root is printed on exit.
	s = startBdServe(t, im.args(im.root)...)
	const woff = 6 << 20 // past the files, inside the image
	mustTool(t, "qemu-io", "-f", "raw", "nbd://"+s.addr+"/disk",
		"-c", fmt.Sprintf("write -P 0x42 %d 64k", woff), "-c", fmt.Sprintf("write -P 0x43 %d 100", woff+70000))
	code, out := s.stop()
	m := regexp.MustCompile(`root: ([0-9a-f]+)`).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("exit %d, stdout:\n%s", code, out)
	}
	newRoot := m[1]
	if newRoot == im.root {
		t.Fatal("root unchanged after writes")
	}
	if !strings.Contains(s.stderr.String(), "root changed") {
		t.Errorf("no root change logged:\n%s", s.stderr)
	}
	// Reopen: the old root is refused, the new one serves the new data.
	old := startBdServeFails(t, im.args(im.root)...)
	if old != ExitAuthentication {
		t.Errorf("old root after writes: exit %d, want %d", old, ExitAuthentication)
	}
	s = startBdServe(t, im.args(newRoot)...)
	mustTool(t, "qemu-io", "-f", "raw", "-r", "nbd://"+s.addr+"/disk",
		"-c", fmt.Sprintf("read -P 0x42 %d 64k", woff), "-c", fmt.Sprintf("read -P 0x43 %d 100", woff+70000))
	s.stop()
	xk, _ := os.ReadFile(im.xtsKey)
	mk, _ := os.ReadFile(im.macKey)
	rootBytes, _ := hex.DecodeString(newRoot)
	func() {
		data, _ := blockdev.OpenFile(im.data, &blockdev.FileOptions{ReadOnly: true})
		defer data.Close()
		tree, _ := blockdev.OpenFile(im.tree, &blockdev.FileOptions{ReadOnly: true})
		defer tree.Close()
		vc, err := bd.OpenVeriCrypt(data, tree, xk, mk, rootBytes, nil)
		if err != nil {
			t.Fatalf("library reopen with the new root: %v", err)
		}
		buf := make([]byte, 4096)
		if _, err := vc.ReadAt(buf, woff); err != nil || !bytes.Equal(buf, bytes.Repeat([]byte{0x42}, 4096)) {
			t.Fatalf("library read of the written block: %v", err)
		}
	}()

	// 4. Tamper one byte of the host image: that block fails for the client
	// (EIO, logged with the block), the others still read.
	f, err := os.OpenFile(im.data, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	const badBlock = woff/4096 + 3
	b := []byte{0}
	f.ReadAt(b, badBlock*4096+17)
	b[0] ^= 0x01
	f.WriteAt(b, badBlock*4096+17)
	f.Close()
	s = startBdServe(t, im.args(newRoot)...)
	uri := "nbd://" + s.addr + "/disk"
	out, err = runTool(t, "qemu-io", "-f", "raw", "-r", uri, "-c", fmt.Sprintf("read %d 4k", badBlock*4096))
	if !strings.Contains(out, "Input/output error") {
		t.Errorf("read of the tampered block: %v\n%s", err, out)
	}
	if out, err := runTool(t, "nbdcopy", uri, filepath.Join(dir, "tampered-copy.img")); err == nil {
		t.Errorf("nbdcopy of a tampered image succeeded:\n%s", out)
	}
	mustTool(t, "qemu-io", "-f", "raw", "-r", uri, "-c", fmt.Sprintf("read -P 0x42 %d 12k", woff), "-c", "read 0 1M")
	s.stop()
	if log := s.stderr.String(); !strings.Contains(log, fmt.Sprintf("block=%d", badBlock)) || !strings.Contains(log, "authentication failed") {
		t.Errorf("server log does not name block %d:\n%s", badBlock, log)
	}
}

// startBdServeFails runs bd serve expecting it to fail at open; it returns
// the exit code.
func startBdServeFails(t *testing.T, args ...string) int {
	t.Helper()
	cmd := newBdServeCommand(&globalOptions{})
	cmd.SetArgs(append(args, "--listen", "127.0.0.1:0"))
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	var re *runError
	if !errors.As(err, &re) {
		t.Fatalf("bd serve %v: %v (stdout %s)", args, err, out.String())
	}
	if !errors.Is(re.err, errs.ErrAuthentication) && exitCode(re.err) == ExitAuthentication {
		t.Errorf("exit code without the sentinel: %v", re.err)
	}
	return exitCode(re.err)
}

func TestBdServeDmverityReadOnly(t *testing.T) {
	testutil.RequireTool(t, "qemu-io")
	testutil.RequireTool(t, "nbdinfo")
	dir := t.TempDir()
	img := filepath.Join(dir, "data.img")
	data := randomFile(t, img, 1<<20)
	hash := filepath.Join(dir, "hash.img")
	var out, errb bytes.Buffer
	if code := execute(context.Background(), []string{"--json", "dmverity", "format", img, hash}, nil, &out, &errb); code != 0 {
		t.Fatalf("dmverity format: %d %s", code, errb.String())
	}
	var res struct {
		Root string `json:"root_hash"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || res.Root == "" {
		t.Fatalf("dmverity format output %q: %v", out.String(), err)
	}
	s := startBdServe(t, img, "--variant", "dmverity", "--tree", hash, "--root", res.Root, "--name", "ro")
	if info := mustTool(t, "nbdinfo", "nbd://"+s.addr+"/ro"); !strings.Contains(info, "is_read_only: true") {
		t.Errorf("nbdinfo:\n%s", info)
	}
	o, err := runTool(t, "qemu-io", "-f", "raw", "nbd://"+s.addr+"/ro", "-c", "write -P 1 0 4k")
	if err == nil && !strings.Contains(o, "failed") && !strings.Contains(o, "read-only") && !strings.Contains(o, "Operation not permitted") {
		t.Errorf("write to a dm-verity export:\n%s", o)
	}
	mustTool(t, "qemu-io", "-f", "raw", "-r", "nbd://"+s.addr+"/ro", "-c", "read 0 1M")
	s.stop()
	if got, _ := os.ReadFile(img); !bytes.Equal(got, data) {
		t.Error("dm-verity image changed")
	}
}

// TestBdServeSIGTERM: the real signal path shuts down gracefully, exit 0.
func TestBdServeSIGTERM(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	randomFile(t, img, 1<<20)
	s := startBdServe(t, img)
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.stderr.String(), "server stopped") {
		if time.Now().After(deadline) {
			t.Fatalf("no shutdown after SIGTERM:\n%s", s.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, _ := s.stop(); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
}
