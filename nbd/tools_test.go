package nbd

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/internal/testutil"
	"github.com/sealfs/sealfs/nbd/nbdtest"
)

// run runs an external client and returns its combined output.
func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := run(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func fileServer(t *testing.T, size int, ro bool) (*Server, string, []byte) {
	path := filepath.Join(t.TempDir(), "disk.img")
	data := pattern(size, 7)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := blockdev.OpenFile(path, &blockdev.FileOptions{BlockSize: 4096, ReadOnly: ro})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &Server{Exports: []*Export{{Name: "disk", Device: f}}}, path, data
}

func TestNbdinfo(t *testing.T) {
	testutil.RequireTool(t, "nbdinfo")
	srv, _, _ := fileServer(t, 4<<20, false)
	addr, _ := startServer(t, srv)
	out := mustRun(t, "nbdinfo", "nbd://"+addr+"/disk")
	for _, want := range []string{"export-size: 4194304", "is_read_only: false", "can_flush: true", "can_trim: true", "block_size_minimum: 1", "block_size_preferred: 4096"} {
		if !strings.Contains(out, want) {
			t.Errorf("nbdinfo output lacks %q:\n%s", want, out)
		}
	}
	if got := strings.TrimSpace(mustRun(t, "nbdinfo", "--size", "nbd://"+addr)); got != "4194304" {
		t.Errorf("nbdinfo --size (default export) = %q", got)
	}
	out = mustRun(t, "nbdinfo", "--list", "nbd://"+addr)
	if !strings.Contains(out, "export=\"disk\"") && !strings.Contains(out, "export=disk") && !strings.Contains(out, "disk") {
		t.Errorf("nbdinfo --list:\n%s", out)
	}
	if _, err := run(t, "nbdinfo", "nbd://"+addr+"/nosuch"); err == nil {
		t.Error("nbdinfo of an unknown export succeeded")
	}
}

func TestNbdcopy(t *testing.T) {
	testutil.RequireTool(t, "nbdcopy")
	const size = 16 << 20
	srv, path, data := fileServer(t, size, false)
	addr, _ := startServer(t, srv)
	out := filepath.Join(t.TempDir(), "out.img")
	mustRun(t, "nbdcopy", "nbd://"+addr+"/disk", out)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("nbdcopy out of the export differs from the image")
	}
	// And into it.
	in := filepath.Join(t.TempDir(), "in.img")
	newData := pattern(size, 8)
	if err := os.WriteFile(in, newData, 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "nbdcopy", in, "nbd://"+addr+"/disk")
	if got, _ := os.ReadFile(path); !bytes.Equal(got, newData) {
		t.Fatal("nbdcopy into the export did not write the image")
	}
}

func TestQemuIO(t *testing.T) {
	testutil.RequireTool(t, "qemu-io")
	srv, path, data := fileServer(t, 1<<20, false)
	addr, _ := startServer(t, srv)
	uri := "nbd://" + addr + "/disk"
	mustRun(t, "qemu-io", "-f", "raw", uri, "-c", "write -P 0xab 0 64k", "-c", "read -P 0xab 0 64k")
	// Unaligned write and read.
	mustRun(t, "qemu-io", "-f", "raw", uri, "-c", "write -P 0xcd 100001 1000", "-c", "read -P 0xcd 100001 1000", "-c", "flush")
	out := mustRun(t, "qemu-io", "-f", "raw", uri, "-c", "read -P 0xab 0 64k", "-c", "discard 131072 65536", "-c", "write -z 262144 4096")
	if strings.Contains(out, "failed") || strings.Contains(out, "Pattern verification") {
		t.Fatalf("qemu-io:\n%s", out)
	}
	got, _ := os.ReadFile(path)
	want := bytes.Clone(data)
	copy(want, bytes.Repeat([]byte{0xab}, 64<<10))
	copy(want[100001:], bytes.Repeat([]byte{0xcd}, 1000))
	clear(want[262144 : 262144+4096])
	// The discarded range is unspecified; compare around it.
	if !bytes.Equal(got[:131072], want[:131072]) || !bytes.Equal(got[196608:], want[196608:]) {
		t.Fatal("image differs after qemu-io writes")
	}
}

func TestQemuImgConvert(t *testing.T) {
	testutil.RequireTool(t, "qemu-img")
	srv, path, data := fileServer(t, 8<<20, false)
	addr, _ := startServer(t, srv)
	uri := "nbd://" + addr + "/disk"
	out := filepath.Join(t.TempDir(), "out.img")
	mustRun(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", uri, out)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("qemu-img convert out of the export differs")
	}
	in := filepath.Join(t.TempDir(), "in.img")
	newData := pattern(8<<20, 9)
	clear(newData[1<<20 : 3<<20]) // a zero run: qemu-img writes zeroes or trims
	if err := os.WriteFile(in, newData, 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", in, uri)
	if got, _ := os.ReadFile(path); !bytes.Equal(got, newData) {
		t.Fatal("qemu-img convert into the export differs")
	}
	if out := mustRun(t, "qemu-img", "info", "-f", "raw", uri); !strings.Contains(out, "8 MiB") {
		t.Errorf("qemu-img info:\n%s", out)
	}
}

func TestClientsReadOnlyAndEIO(t *testing.T) {
	testutil.RequireTool(t, "qemu-io")
	testutil.RequireTool(t, "nbdcopy")
	m := blockdev.NewMemoryFrom(pattern(1<<20, 1), 4096)
	bad := &failing{Device: blockdev.NewMemoryFrom(pattern(1<<20, 1), 4096), bad: 100}
	srv := &Server{Exports: []*Export{
		{Name: "ro", Device: m, ReadOnly: true},
		{Name: "bad", Device: bad},
	}}
	addr, _ := startServer(t, srv)
	if out, err := run(t, "qemu-io", "-f", "raw", "nbd://"+addr+"/ro", "-c", "write -P 1 0 4k"); err == nil && !strings.Contains(out, "failed") {
		t.Errorf("qemu-io write to a read-only export succeeded:\n%s", out)
	}
	mustRun(t, "qemu-io", "-f", "raw", "-r", "nbd://"+addr+"/ro", "-c", "read 0 64k")
	if !bytes.Equal(m.Bytes(), pattern(1<<20, 1)) {
		t.Error("read-only export changed")
	}
	// The tampered block fails the copy; other blocks still read.
	if out, err := run(t, "nbdcopy", "nbd://"+addr+"/bad", filepath.Join(t.TempDir(), "x")); err == nil {
		t.Errorf("nbdcopy of a failing export succeeded:\n%s", out)
	}
	out, _ := run(t, "qemu-io", "-f", "raw", "-r", "nbd://"+addr+"/bad", "-c", fmt.Sprintf("read %d 4k", 100*4096))
	if !strings.Contains(out, "Input/output error") {
		t.Errorf("qemu-io read of the bad block:\n%s", out)
	}
	mustRun(t, "qemu-io", "-f", "raw", "-r", "nbd://"+addr+"/bad", "-c", "read 0 400k", "-c", "read 420k 500k")
}

func TestClientsTLS(t *testing.T) {
	testutil.RequireTool(t, "nbdinfo")
	testutil.RequireTool(t, "nbdcopy")
	testutil.RequireTool(t, "qemu-img")
	pki := nbdtest.NewPKI(t)
	srv, path, data := fileServer(t, 4<<20, false)
	srv.TLSConfig, srv.RequireTLS = pki.ServerTLS(true), true
	addr, _ := startServer(t, srv)
	host, port, _ := strings.Cut(addr, ":")
	tlsURI := func(dir string) string { return "nbds://" + addr + "/disk?tls-certificates=" + dir }

	if out := mustRun(t, "nbdinfo", tlsURI(pki.Dir)); !strings.Contains(out, "export-size: 4194304") {
		t.Errorf("nbdinfo over TLS:\n%s", out)
	}
	out := filepath.Join(t.TempDir(), "out.img")
	mustRun(t, "nbdcopy", tlsURI(pki.Dir), out)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("nbdcopy over TLS differs")
	}
	// Refused: plain, no client certificate, a certificate from another CA.
	for name, uri := range map[string]string{
		"plain":       "nbd://" + addr + "/disk",
		"no cert":     tlsURI(pki.NoClientDir),
		"foreign CA":  tlsURI(pki.OtherDir),
		"server only": "nbds://" + addr + "/disk?tls-verify-peer=false",
	} {
		if out, err := run(t, "nbdinfo", uri); err == nil {
			t.Errorf("nbdinfo %s succeeded:\n%s", name, out)
		}
	}
	// qemu with tls-creds-x509.
	obj := "tls-creds-x509,id=tls0,endpoint=client,dir=" + pki.Dir
	img := fmt.Sprintf("driver=nbd,host=%s,port=%s,export=disk,tls-creds=tls0", host, port)
	out2 := filepath.Join(t.TempDir(), "out2.img")
	mustRun(t, "qemu-img", "convert", "--object", obj, "--image-opts", img, "-O", "raw", out2)
	if got, _ := os.ReadFile(out2); !bytes.Equal(got, data) {
		t.Fatal("qemu-img convert over TLS differs")
	}
	if testutil.RequireTool(t, "qemu-io") != "" {
		mustRun(t, "qemu-io", "--object", obj, "--image-opts", img, "-c", "write -P 0x5a 4096 8k", "-c", "read -P 0x5a 4096 8k")
		got, _ := os.ReadFile(path)
		if !bytes.Equal(got[4096:12288], bytes.Repeat([]byte{0x5a}, 8192)) {
			t.Error("qemu-io write over TLS missing")
		}
	}
}

func TestNbdfuse(t *testing.T) {
	testutil.RequireTool(t, "nbdfuse")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	srv, _, data := fileServer(t, 1<<20, false)
	addr, _ := startServer(t, srv)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, "nbdfuse", "-r", dir, "nbd://"+addr+"/disk")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		exec.Command("fusermount3", "-u", dir).Run()
		exec.Command("umount", dir).Run()
		cancel()
		cmd.Wait()
	}()
	var got []byte
	for i := 0; i < 100; i++ {
		if b, err := os.ReadFile(filepath.Join(dir, "nbd")); err == nil && len(b) == len(data) {
			got = b
			break
		}
		if cmd.ProcessState != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got == nil {
		// FUSE mounts need privileges the machine may not grant; that is
		// the environment, not the server.
		t.Skipf("nbdfuse could not mount here: %s", stderr.String())
	}
	if !bytes.Equal(got, data) {
		t.Fatal("nbdfuse read differs")
	}
}
