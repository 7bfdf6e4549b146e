package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs"
)

func mkfsinfo(o mkfsinfoOptions, args ...string) func(io.Writer, io.Writer) error {
	return func(w, e io.Writer) error { return runMkfsinfo(context.Background(), &o, args, w, e) }
}

func TestMkfsinfoCommand(t *testing.T) {
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	k := imageOpts(keyFile(t, goodKey...))
	aux := writeTemp(t, "wrapped.key", []byte("wrapped key for the attestation service"))
	existing := writeTemp(t, "existing.img", []byte("precious"))
	opts := func(l layoutOptions, more ...func(*mkfsinfoOptions)) mkfsinfoOptions {
		o := mkfsinfoOptions{imageOptions: imageOptions{Force: true}, layoutOptions: l}
		for _, f := range more {
			f(&o)
		}
		return o
	}
	ref := defaultLayout("8M")
	ref.Salt = "ddeeff"
	trim := func(o *mkfsinfoOptions) { o.Trim = true }
	withAux := func(a ...string) func(*mkfsinfoOptions) { return func(o *mkfsinfoOptions) { o.AuxFiles = a } }
	asJSON := func(o *mkfsinfoOptions) { o.JSON = true }
	camellia := defaultLayout("4MiB")
	camellia.Hash, camellia.Cipher, camellia.Strength, camellia.IOBlock = "sha3", "camellia", 256, "4K"

	for _, c := range []cliCase{
		{name: "v08", run: mkfsinfo(opts(ref), path("v08.img")), stdout: []string{
			`(?m)^image: +.*v08\.img \(created\)$`, `(?m)^kind: +mkfsinfo$`, `(?m)^image size: +8388608 bytes$`,
			`(?m)^salt: +ddeeff$`, `(?m)^aux metadata length: +28 bytes$`,
		}},
		{name: "v09", run: mkfsinfo(opts(ref, trim), path("v09.img")), stdout: []string{`(?m)^device size: +1024 bytes$`, `(?m)^image size: +8388608 bytes$`}},
		{name: "info on it", run: info(infoOptions{}, path("v08.img")), stdout: []string{`(?m)^kind: +mkfsinfo$`}},
		{name: "ls on it", run: ls(lsOptions{k}, path("v08.img")), code: ExitNotFormatted},
		{name: "aux files", run: mkfsinfo(opts(camellia, withAux("12345678-9abc-def0-1122-334455667788="+aux, "0f1e2d3c4b5a69788796a5b4c3d2e1f0="+aux)), path("aux.img")), stdout: []string{
			`(?m)^aux entry: +12345678-9abc-def0-1122-334455667788, 39 bytes from .*wrapped\.key$`,
			`(?m)^aux entry: +0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0, 39 bytes from `,
			`(?m)^aux metadata length: +146 bytes$`, `(?m)^auth tree node hash: +SHA3_512`, `(?m)^io block: +4096 bytes$`,
		}},
		{name: "json", run: mkfsinfo(opts(defaultLayout("1M"), asJSON, withAux("0000000000000000000000000000000a="+aux)), path("j.img")), stdout: []string{
			`"kind": "mkfsinfo"`, `"uuid": "00000000-0000-0000-0000-00000000000a"`, `"size": 39`, `"created": true`,
		}},
		{name: "bad uuid", run: mkfsinfo(opts(ref, withAux("1234="+aux)), path("x.img")), code: ExitUsage, errMatch: `invalid UUID "1234"`},
		{name: "zero uuid", run: mkfsinfo(opts(ref, withAux("00000000-0000-0000-0000-000000000000="+aux)), path("x.img")), code: ExitUsage, errMatch: "reserved"},
		{name: "no path", run: mkfsinfo(opts(ref, withAux("12345678-9abc-def0-1122-334455667788")), path("x.img")), code: ExitUsage, errMatch: "UUID=PATH"},
		{name: "missing aux file", run: mkfsinfo(opts(ref, withAux("12345678-9abc-def0-1122-334455667788="+path("none"))), path("x.img")), code: ExitError, errMatch: "no such file"},
		{name: "bad size", run: mkfsinfo(opts(defaultLayout("8 MiB")), path("x.img")), code: ExitUsage, errMatch: "invalid size"},
		{name: "too small", run: mkfsinfo(opts(defaultLayout("4K")), path("x.img")), code: ExitNoSpace, errMatch: "no space"},
		{name: "no size", run: mkfsinfo(opts(defaultLayout("")), path("x.img")), code: ExitUsage, errMatch: "--size is required"},
		{name: "existing", run: mkfsinfo(opts(ref), existing), code: ExitError, errMatch: "pass --overwrite"},
	} {
		t.Run(c.name, c.check)
	}
	if b, _ := os.ReadFile(existing); string(b) != "precious" {
		t.Errorf("existing image changed to %q", b)
	}
	if _, err := os.Stat(path("x.img")); !os.IsNotExist(err) {
		t.Errorf("a refused mkfsinfo left x.img behind: %v", err)
	}
	// Byte for byte the reference's provisioning images.
	for img, vec := range map[string]string{"v08.img": "v08-mkfsinfo-header-sha2-aes128.img", "v09.img": "v09-mkfsinfo-header-trimmed.img"} {
		got, _ := os.ReadFile(path(img))
		want, _ := os.ReadFile(vector(t, vec))
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s", img, vec)
		}
	}
	// --overwrite of a formatted image.
	ow := ref
	ow.Overwrite = true
	cliCase{name: "overwrite", run: mkfsinfo(opts(ow, trim), path("v08.img")), stdout: []string{`(?m)^image: +.*v08\.img \(overwritten\)$`, `(?m)^device size: +1024 bytes$`}}.check(t)

	// Formatting (what the first read-write open does) and the read
	// commands on the result.
	for _, img := range []string{"v09.img", "aux.img"} {
		dev, err := blockdev.OpenFile(path(img), &blockdev.FileOptions{BlockSize: 512})
		if err != nil {
			t.Fatal(err)
		}
		f, err := cocoonfs.FormatMkfsInfo(dev, goodKey, false)
		if err != nil {
			t.Fatalf("%s: %v", img, err)
		}
		f.Close()
		dev.Close()
		cliCase{name: img + " info", run: info(infoOptions{k}, path(img)), stdout: []string{`(?m)^kind: +filesystem$`, `(?m)^files: +0$`}}.check(t)
		cliCase{name: img + " verify", run: verify(verifyOptions{k}, path(img)), stdout: []string{`(?m)^status: +ok$`}}.check(t)
	}
}
