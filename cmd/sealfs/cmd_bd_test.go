package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/sealfs/sealfs/bd"
	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/internal/testutil"
)

// bdFixture is a directory with a file and the key files the bd tests use.
type bdFixture struct {
	dir, src, xtsKey, macKey, pass string
}

func newBdFixture(t *testing.T) bdFixture {
	dir := t.TempDir()
	f := bdFixture{dir: dir, src: filepath.Join(dir, "src")}
	if err := os.MkdirAll(filepath.Join(f.src, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"hello.txt": "hello, sealed world\n", "sub/data.bin": string(bytes.Repeat([]byte{7}, 50000))} {
		if err := os.WriteFile(filepath.Join(f.src, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	xts := make([]byte, bd.CryptKeySize)
	for i := range xts {
		xts[i] = byte(i*7 + 1)
	}
	f.xtsKey = filepath.Join(dir, "xts.key")
	f.macKey = filepath.Join(dir, "mac.key")
	f.pass = filepath.Join(dir, "pass")
	for p, b := range map[string][]byte{f.xtsKey: xts, f.macKey: []byte("a mac key of 32 bytes, not more!"), f.pass: []byte("correct horse battery staple")} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func runJSON(t *testing.T, run func(stdout *bytes.Buffer) error) (bdReport, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(&out)
	var r bdReport
	if out.Len() > 0 {
		if jerr := json.Unmarshal(out.Bytes(), &r); jerr != nil {
			t.Fatalf("output is not JSON: %v\n%s", jerr, out.String())
		}
	}
	return r, err
}

// TestBdMakefsVerify makes an image of every variant, reads hello.txt back
// with debugfs from the decrypted filesystem, verifies the verity variants,
// and sees a flipped byte and a wrong root fail with exit code 4.
func TestBdMakefsVerify(t *testing.T) {
	testutil.RequireTool(t, "mke2fs")
	debugfs := testutil.RequireTool(t, "debugfs")
	f := newBdFixture(t)
	ctx := context.Background()
	for _, tc := range []struct {
		variant string
		pass    bool
	}{{"std", false}, {"crypt", false}, {"crypt", true}, {"verity", false}, {"vericrypt", false}, {"vericrypt", true}} {
		t.Run(tc.variant+map[bool]string{true: "-passphrase"}[tc.pass], func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "disk.img")
			o := &bdMakefsOptions{Size: "4M", bdOptions: bdOptions{JSON: true, Variant: tc.variant, BlockSize: 4096, MACKeyFile: f.macKey}}
			if tc.pass {
				o.PassphraseFile = f.pass
			} else {
				o.KeyFile = f.xtsKey
			}
			r, err := runJSON(t, func(out *bytes.Buffer) error { return runBdMakefs(ctx, o, []string{img, f.src}, out, &bytes.Buffer{}) })
			if err != nil {
				t.Fatalf("makefs: %v", err)
			}
			if (r.RootHash != "") != (tc.variant == "verity" || tc.variant == "vericrypt") || r.Size != 4<<20 {
				t.Fatalf("report %+v", r)
			}
			// Decrypt (or copy) the image to a plain file and ask debugfs.
			raw := bdMust(blockdev.OpenFile(img, &blockdev.FileOptions{ReadOnly: true, BlockSize: 512}))
			defer raw.Close()
			var dev blockdev.Device = raw
			if tc.variant == "crypt" || tc.variant == "vericrypt" {
				key, err := o.cryptKey(img, false)
				if err != nil {
					t.Fatalf("key: %v", err)
				}
				dev = bdMust(bd.NewCrypt(raw, key, nil))
				if bytes.Contains(bdMust(blockdev.ReadAll(raw)), []byte("hello, sealed world")) {
					t.Fatal("plaintext visible in an encrypted image")
				}
			}
			plain := filepath.Join(t.TempDir(), "plain.img")
			if err := os.WriteFile(plain, bdMust(blockdev.ReadAll(dev)), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(debugfs, "-R", "cat /hello.txt", plain).Output()
			if err != nil || string(out) != "hello, sealed world\n" {
				t.Fatalf("debugfs cat /hello.txt = %q, %v", out, err)
			}
			if r.RootHash == "" {
				return
			}
			vo := &bdVerifyOptions{Root: r.RootHash, bdOptions: bdOptions{JSON: true, Variant: tc.variant, BlockSize: 4096, MACKeyFile: f.macKey}}
			vr, err := runJSON(t, func(out *bytes.Buffer) error { return runBdVerify(ctx, vo, []string{img}, out, &bytes.Buffer{}) })
			if err != nil || !vr.Verified || vr.Blocks != 1024 {
				t.Fatalf("verify = %+v, %v", vr, err)
			}
			// The same with a tree cache far smaller than the 64 KiB tree.
			small := *vo
			small.TreeCache = "1K"
			vr, err = runJSON(t, func(out *bytes.Buffer) error { return runBdVerify(ctx, &small, []string{img}, out, &bytes.Buffer{}) })
			if err != nil || !vr.Verified || vr.Blocks != 1024 {
				t.Fatalf("verify --tree-cache 1K = %+v, %v", vr, err)
			}
			// A flipped byte in block 5: exit 4, block 5 named.
			b, _ := os.ReadFile(img)
			b[5*4096+9] ^= 0x40
			os.WriteFile(img, b, 0o600)
			vr, err = runJSON(t, func(out *bytes.Buffer) error { return runBdVerify(ctx, vo, []string{img}, out, &bytes.Buffer{}) })
			if exitCode(err) != ExitAuthentication || len(vr.BadBlocks) != 1 || vr.BadBlocks[0] != 5 {
				t.Fatalf("verify of tampered image = %+v, %v (exit %d)", vr, err, exitCode(err))
			}
			vr, err = runJSON(t, func(out *bytes.Buffer) error { return runBdVerify(ctx, &small, []string{img}, out, &bytes.Buffer{}) })
			if exitCode(err) != ExitAuthentication || len(vr.BadBlocks) != 1 || vr.BadBlocks[0] != 5 {
				t.Fatalf("verify --tree-cache 1K of tampered image = %+v, %v (exit %d)", vr, err, exitCode(err))
			}
			// A wrong root.
			root, _ := hex.DecodeString(r.RootHash)
			root[0] ^= 1
			vo.Root = hex.EncodeToString(root)
			if _, err := runJSON(t, func(out *bytes.Buffer) error { return runBdVerify(ctx, vo, []string{img}, out, &bytes.Buffer{}) }); exitCode(err) != ExitAuthentication {
				t.Fatalf("verify with a wrong root: %v (exit %d)", err, exitCode(err))
			}
		})
	}
}

func TestBdMakefsWrongPassphrase(t *testing.T) {
	testutil.RequireTool(t, "mke2fs")
	f := newBdFixture(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	o := &bdMakefsOptions{Size: "1M", bdOptions: bdOptions{Variant: "crypt", BlockSize: 4096, PassphraseFile: f.pass}}
	if err := runBdMakefs(context.Background(), o, []string{img, f.src}, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(f.pass, []byte("wrong"), 0o600)
	if _, err := o.cryptKey(img, false); exitCode(err) != ExitWrongKey {
		t.Fatalf("wrong passphrase: %v (exit %d)", err, exitCode(err))
	}
}

func TestBdUsage(t *testing.T) {
	f := newBdFixture(t)
	ctx := context.Background()
	img := filepath.Join(f.dir, "x.img")
	for _, c := range []cliCase{
		{name: "no size", run: func(o, e ioW) error {
			return runBdMakefs(ctx, &bdMakefsOptions{bdOptions: bdOptions{Variant: "std", BlockSize: 4096}}, []string{img, f.src}, o, e)
		}, code: ExitUsage, errMatch: "--size"},
		{name: "bad variant", run: func(o, e ioW) error {
			return runBdMakefs(ctx, &bdMakefsOptions{Size: "1M", bdOptions: bdOptions{Variant: "rot13", BlockSize: 4096}}, []string{img, f.src}, o, e)
		}, code: ExitUsage, errMatch: "variant"},
		{name: "crypt without key", run: func(o, e ioW) error {
			return runBdMakefs(ctx, &bdMakefsOptions{Size: "1M", bdOptions: bdOptions{Variant: "crypt", BlockSize: 4096}}, []string{img, f.src}, o, e)
		}, code: ExitUsage, errMatch: "key"},
		{name: "short xts key", run: func(o, e ioW) error {
			return runBdMakefs(ctx, &bdMakefsOptions{Size: "1M", bdOptions: bdOptions{Variant: "crypt", BlockSize: 4096, KeyFile: f.macKey}}, []string{img, f.src}, o, e)
		}, code: ExitUsage, errMatch: "64"},
		{name: "verify std", run: func(o, e ioW) error {
			return runBdVerify(ctx, &bdVerifyOptions{Root: "00", bdOptions: bdOptions{Variant: "std"}}, []string{img}, o, e)
		}, code: ExitUsage},
		{name: "zero tree cache", run: func(o, e ioW) error {
			return runBdVerify(ctx, &bdVerifyOptions{Root: "00", bdOptions: bdOptions{Variant: "verity", TreeCache: "0", MACKeyFile: f.macKey}}, []string{img}, o, e)
		}, code: ExitUsage, errMatch: "--tree-cache"},
		{name: "bad tree cache", run: func(o, e ioW) error {
			return runBdMakefs(ctx, &bdMakefsOptions{Size: "1M", bdOptions: bdOptions{Variant: "verity", BlockSize: 4096, TreeCache: "lots", MACKeyFile: f.macKey}}, []string{img, f.src}, o, e)
		}, code: ExitUsage, errMatch: "--tree-cache"},
		{name: "verify bad root", run: func(o, e ioW) error {
			return runBdVerify(ctx, &bdVerifyOptions{Root: "xyz", bdOptions: bdOptions{Variant: "verity"}}, []string{img}, o, e)
		}, code: ExitUsage},
	} {
		t.Run(c.name, c.check)
	}
}

func bdMust[T any](v T, err error) T {
	if err != nil {
		panic("test setup: " + err.Error())
	}
	return v
}

// ioW shortens the cliCase closures.
type ioW = io.Writer
