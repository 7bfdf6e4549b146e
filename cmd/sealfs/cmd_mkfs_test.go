package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
)

func mkfs(o mkfsOptions, args ...string) func(io.Writer, io.Writer) error {
	return func(w, e io.Writer) error { return runMkfs(context.Background(), &o, args, w, e) }
}

// defaultLayout is what the flags' defaults set.
func defaultLayout(size string) layoutOptions {
	return layoutOptions{Size: size, Hash: "sha2", Cipher: "aes", Strength: 128, AuxReserve: "1KiB"}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"512": 512, "0": 0, "8M": 8 << 20, "8MiB": 8 << 20, "8mib": 8 << 20, "8m": 8 << 20, "4K": 4096, "4KiB": 4096,
		"4KB": 4000, "1G": 1 << 30, "2GB": 2e9, "1T": 1 << 40, "3b": 3, "8388608B": 8 << 20,
	} {
		if got, err := parseSize("--size", in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "1.5M", "-1", "8X", "8 M", " 8M", "8MM", "0x10", "9999999999T", "99999999999999999999"} {
		if n, err := parseSize("--size", in); err == nil || exitCode(err) != ExitUsage {
			t.Errorf("parseSize(%q) = %d, %v; want a usage error", in, n, err)
		}
	}
}

func TestMkfsCommand(t *testing.T) {
	dir := t.TempDir()
	key := keyFile(t, goodKey...)
	k := imageOpts(key)
	kJSON := k
	kJSON.JSON = true
	io4k := defaultLayout("4MiB")
	io4k.IOBlock = "4K"
	path := func(name string) string { return filepath.Join(dir, name) }
	existing := writeTemp(t, "existing.img", []byte("precious"))
	big := writeTemp(t, "big.img", make([]byte, 6<<20))
	genKey := path("gen.key")
	noReserve := io4k
	noReserve.AuxReserve = "0"

	withLayout := func(o imageOptions, l layoutOptions) mkfsOptions {
		return mkfsOptions{imageOptions: o, layoutOptions: l}
	}
	camellia := io4k
	camellia.Size, camellia.Hash, camellia.Cipher, camellia.Salt = "2M", "sha3", "camellia", "ddeeff"
	overwrite := defaultLayout("")
	overwrite.Overwrite, overwrite.IOBlock = true, "4096"
	shrink := defaultLayout("2MiB")
	shrink.Overwrite, shrink.IOBlock = true, "4096"
	unaligned := io4k
	unaligned.Size = "6K"
	badAlloc := io4k
	badAlloc.AllocBlock = "100"
	badSalt := io4k
	badSalt.Salt = "xyz"
	badHash := io4k
	badHash.Hash = "md5"
	hugeReserve := io4k
	hugeReserve.AuxReserve = "100M"
	gen := withLayout(imageOptions{}, io4k)
	gen.GenKey = genKey
	genAndKey := withLayout(k, io4k)
	genAndKey.GenKey = path("other.key")
	genExisting := withLayout(imageOptions{}, io4k)
	genExisting.GenKey = key

	for _, c := range []cliCase{
		{name: "new image", run: mkfs(withLayout(k, io4k), path("a.img")), stdout: []string{
			`(?m)^image: +.*a\.img \(created\)$`, `(?m)^kind: +filesystem$`, `(?m)^image size: +4194304 bytes$`,
			`(?m)^io block: +4096 bytes$`, `(?m)^root digest: +[0-9a-f]{64}$`, `(?m)^update counter: +[0-9]+$`,
		}, noStdout: []string{`key file`}},
		{name: "info on it", run: info(infoOptions{k}, path("a.img")), stdout: []string{`(?m)^files: +0$`, `(?m)^root digest: `}},
		{name: "ls on it", run: ls(lsOptions{k}, path("a.img")), stdout: []string{`^$`}},
		{name: "verify on it", run: verify(verifyOptions{k}, path("a.img")), stdout: []string{`(?m)^status: +ok$`, `(?m)^inodes: +0$`}},
		{name: "wrong key on it", run: ls(lsOptions{imageOpts(keyFile(t, wrongKey...))}, path("a.img")), code: ExitWrongKey},
		{name: "json", run: mkfs(withLayout(kJSON, camellia), path("b.img")), stdout: []string{
			`"image": ".*b\.img"`, `"created": true`, `"root_digest": "[0-9a-f]{64}"`, `"salt": "ddeeff"`, `"name": "CAMELLIA"`, `"name": "SHA3_256"`,
		}},
		{name: "no aux reserve", run: mkfs(withLayout(k, noReserve), path("c.img")), stdout: []string{`(?m)^status|^kind: +filesystem$`}},
		{name: "gen key", run: mkfs(gen, path("g.img")), stdout: []string{`(?m)^key file: +.*gen\.key \(32 random bytes, new\)$`}},
		{name: "gen key with key", run: mkfs(genAndKey, path("h.img")), code: ExitUsage, errMatch: "--gen-key"},
		{name: "gen key existing", run: mkfs(genExisting, path("h.img")), code: ExitError, errMatch: "refusing to replace a key"},
		{name: "existing image", run: mkfs(withLayout(k, io4k), existing), code: ExitError, errMatch: "exists; pass --overwrite"},
		{name: "overwrite keeps size", run: mkfs(withLayout(k, overwrite), big), stdout: []string{`(?m)^image: +.*big\.img \(overwritten\)$`, `(?m)^image size: +6291456 bytes$`}},
		{name: "no size", run: mkfs(withLayout(k, defaultLayout("")), path("d.img")), code: ExitUsage, errMatch: "--size is required"},
		{name: "bad size", run: mkfs(withLayout(k, defaultLayout("12Q")), path("d.img")), code: ExitUsage, errMatch: `invalid size "12Q"`},
		{name: "zero size", run: mkfs(withLayout(k, defaultLayout("0")), path("d.img")), code: ExitUsage, errMatch: "not a positive multiple"},
		{name: "unaligned size", run: mkfs(withLayout(k, unaligned), path("d.img")), code: ExitUsage, errMatch: "6144 bytes is not a positive multiple of the 4096-byte IO block"},
		{name: "bad alloc block", run: mkfs(withLayout(k, badAlloc), path("d.img")), code: ExitUsage, errMatch: "not a power of two"},
		{name: "bad salt", run: mkfs(withLayout(k, badSalt), path("d.img")), code: ExitUsage, errMatch: "--salt"},
		{name: "bad hash", run: mkfs(withLayout(k, badHash), path("d.img")), code: ExitUsage, errMatch: "md5"},
		{name: "no key", run: mkfs(withLayout(imageOptions{}, io4k), path("d.img")), code: ExitUsage, errMatch: "no key given"},
		{name: "reserve too large", run: mkfs(withLayout(k, hugeReserve), path("d.img")), code: ExitNoSpace, errMatch: "no space"},
		{name: "no args", run: mkfs(withLayout(k, io4k)), code: ExitUsage, errMatch: "missing IMAGE"},
	} {
		t.Run(c.name, c.check)
	}

	// Refused commands leave nothing behind and existing files untouched.
	if _, err := os.Stat(path("d.img")); !os.IsNotExist(err) {
		t.Errorf("a refused mkfs left d.img behind: %v", err)
	}
	if _, err := os.Stat(path("h.img")); !os.IsNotExist(err) {
		t.Errorf("a refused mkfs left h.img behind: %v", err)
	}
	if b, _ := os.ReadFile(existing); string(b) != "precious" {
		t.Errorf("existing image changed to %q", b)
	}
	if b, _ := os.ReadFile(key); !bytes.Equal(b, goodKey) {
		t.Error("--gen-key replaced an existing key file")
	}
	// The generated key is 32 bytes, mode 0600, and opens the image.
	st, err := os.Stat(genKey)
	if err != nil || st.Size() != 32 || st.Mode().Perm() != 0o600 {
		t.Fatalf("generated key: %v, %v", st, err)
	}
	cliCase{name: "generated key opens", run: verify(verifyOptions{imageOpts(genKey)}, path("g.img")), stdout: []string{`(?m)^status: +ok$`}}.check(t)

	// --overwrite with a smaller --size cuts the file once the image is made.
	cliCase{name: "overwrite shrinks", run: mkfs(withLayout(k, shrink), big), stdout: []string{`(?m)^image size: +2097152 bytes$`, `(?m)^device size: +2097152 bytes$`}}.check(t)
	if st, err := os.Stat(big); err != nil || st.Size() != 2<<20 {
		t.Errorf("overwritten image is %v bytes (%v), want %d", st.Size(), err, 2<<20)
	}
	cliCase{name: "shrunk image verifies", run: verify(verifyOptions{k}, big), stdout: []string{`(?m)^status: +ok$`}}.check(t)
}

// TestMkfsIOBlockCheck: a 512-byte IO block on a file system with larger
// blocks is refused (exit 8) without --force, and the new file is removed.
func TestMkfsIOBlockCheck(t *testing.T) {
	dir := t.TempDir()
	probe := filepath.Join(dir, "probe")
	dev, err := blockdev.CreateFile(probe, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	bs := dev.BlockSize()
	dev.Close()
	if bs <= 512 {
		t.Skipf("the temporary directory's file system writes %d-byte blocks", bs)
	}
	img := filepath.Join(dir, "a.img")
	o := mkfsOptions{imageOptions: imageOpts(keyFile(t, goodKey...)), layoutOptions: defaultLayout("1M")}
	cliCase{name: "refused", run: mkfs(o, img), code: ExitIOBlockSize, errMatch: "--force"}.check(t)
	if _, err := os.Stat(img); !os.IsNotExist(err) {
		t.Errorf("refused mkfs left the image: %v", err)
	}
	o.Force = true
	cliCase{name: "forced", run: mkfs(o, img), stdout: []string{`(?m)^io block: +512 bytes$`}}.check(t)
}
