package merkle

import (
	"bytes"
	"context"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/internal/testutil"
)

// memFile is an in-memory hash device: WriteAt grows it, like a file.
type memFile struct{ b []byte }

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	return copy(m.b[off:], p), nil
}

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(m.b).ReadAt(p, off)
}

var testUUID = [16]byte{0x12, 0x34, 0x56, 0x78, 0x12, 0x34, 0x12, 0x34, 0x12, 0x34, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// format runs DmverityFormat into a fresh in-memory file.
func format(t testing.TB, data []byte, o DmverityOptions) ([]byte, []byte) {
	t.Helper()
	m := &memFile{}
	root, err := DmverityFormat(bytes.NewReader(data), int64(len(data)), m, o)
	if err != nil {
		t.Fatal(err)
	}
	return root, m.b
}

// Section 4.4 of merkle-formats.md.
func TestDmverityVectors(t *testing.T) {
	P := testPattern(1 << 20)
	F := ff(4096)
	Z := make([]byte, 8<<20)
	salt := mustHex("0123456789abcdef")
	for _, v := range []struct {
		name       string
		data       []byte
		o          DmverityOptions
		dataBlocks int64
		hashBlocks int64
		root       string
		size       int
	}{
		{"F/nosalt", F, DmverityOptions{}, 1, 0, "f47a8ec3e9aff2318d896942282ad4fe37d6391c82914f54a5da8a37de1300c6", 4096},
		{"F/salt", F, DmverityOptions{Salt: salt}, 1, 0, "1377ad3393d8ac5e0a956d584d6d5a41029e1238d39fd9965090fc31022de3a8", 4096},
		{"P/salt", P, DmverityOptions{Salt: salt}, 256, 3, "c7412508f9950eb78bcc1d0da6e6965f926f6a8d660c3a433e5b7749ffc29f57", 16384},
		{"P/nosalt", P, DmverityOptions{}, 256, 3, "b96deafa9316e196495f41d3dc003155a29779a3f1125e55f98ec7c2a6e66b69", 16384},
		{"P/format0", P, DmverityOptions{Format0: true, Salt: salt}, 256, 3, "0690fe73c7f6405ffa9323f1a3da73102f801af20081dbc4da70d9ca39212421", 16384},
		{"P/sha1", P, DmverityOptions{Hash: crypto.SHA1, Salt: salt}, 256, 3, "94af45a528e00aee453e8e27f8442dd215fb749f", 16384},
		{"P/nosb", P, DmverityOptions{NoSuperblock: true, Salt: salt}, 256, 3, "c7412508f9950eb78bcc1d0da6e6965f926f6a8d660c3a433e5b7749ffc29f57", 12288},
		{"P/1k", P, DmverityOptions{DataBlockSize: 1024, HashBlockSize: 1024}, 1024, 33, "f6732bf5a1749533295f67ce68e91dcedbd6aaf816b9d8b89ab9deb16862368e", 34816},
		{"Z", Z, DmverityOptions{}, 2048, 17, "ef29c902d87350f1da4bfa536e16cebc162a909bf89abe448b81ec500d4fb9bf", 73728},
	} {
		t.Run(v.name, func(t *testing.T) {
			v.o.UUID = testUUID
			root, img := format(t, v.data, v.o)
			if hex.EncodeToString(root) != v.root {
				t.Errorf("root %x, want %s", root, v.root)
			}
			l, _ := v.o.Layout(int64(len(v.data)))
			if l.DataBlocks != v.dataBlocks || l.HashBlocks != v.hashBlocks || len(img) != v.size {
				t.Errorf("data blocks %d, hash blocks %d, image %d bytes", l.DataBlocks, l.HashBlocks, len(img))
			}
			if err := DmverityVerify(context.Background(), bytes.NewReader(v.data), int64(len(v.data)), bytes.NewReader(img), root, v.o, 0, -1); err != nil {
				t.Fatal(err)
			}
		})
	}
	_, img := format(t, P, DmverityOptions{Salt: salt, UUID: testUUID})
	want := mustHex("76657269747900000100000001000000" + "12345678123412341234123456789abc" +
		"73686132353600000000000000000000" + "00000000000000000000000000000000" +
		"00100000001000000001000000000000" + "08000000000000000123456789abcdef")
	if !bytes.Equal(img[:0x60], want) || !bytes.Equal(img[0x60:4096], make([]byte, 4096-0x60)) {
		t.Fatalf("superblock:\n%x", img[:0x60])
	}
	sb, err := ParseDmveritySuperblock(img)
	if err != nil {
		t.Fatal(err)
	}
	o, err := sb.Options()
	if err != nil || o.DataBlocks != 256 || !bytes.Equal(o.Salt, salt) || o.Hash != crypto.SHA256 || o.UUID != testUUID || o.Format0 {
		t.Fatalf("options from superblock: %+v, %v", o, err)
	}
}

// TestDmverityOracle compares whole hash images with `veritysetup format`
// on random data of awkward sizes and every option.
func TestDmverityOracle(t *testing.T) {
	tool := testutil.RequireTool(t, "veritysetup")
	dir := t.TempDir()
	rng := rand.New(rand.NewSource(3))
	type cfg struct {
		args []string
		o    DmverityOptions
	}
	salt := func(n int) []byte { b := make([]byte, n); rng.Read(b); return b }
	cfgs := []cfg{
		{nil, DmverityOptions{}},
		{nil, DmverityOptions{Salt: salt(32)}},
		{nil, DmverityOptions{Format0: true, Salt: salt(7)}},
		{nil, DmverityOptions{Format0: true, Hash: crypto.SHA1, Salt: salt(3)}},
		{nil, DmverityOptions{Hash: crypto.SHA1, Salt: salt(256)}},
		{nil, DmverityOptions{Hash: crypto.SHA512, Salt: salt(1)}},
		{nil, DmverityOptions{Hash: crypto.SHA384, Format0: true}},
		{nil, DmverityOptions{Hash: crypto.SHA224, Salt: salt(20)}},
		{nil, DmverityOptions{NoSuperblock: true, Salt: salt(9)}},
		{nil, DmverityOptions{NoSuperblock: true, HashOffset: 8192, Salt: salt(9)}},
		{nil, DmverityOptions{HashOffset: 4096 + 512, Salt: salt(9)}},
		{nil, DmverityOptions{DataBlockSize: 512, HashBlockSize: 512, Salt: salt(4)}},
		{nil, DmverityOptions{DataBlockSize: 1024, HashBlockSize: 8192, Salt: salt(4)}},
		{nil, DmverityOptions{DataBlockSize: 8192, HashBlockSize: 1024, Hash: crypto.SHA512, Salt: salt(4)}},
		{nil, DmverityOptions{DataBlockSize: 1024, HashBlockSize: 512, Format0: true, Hash: crypto.SHA384}},
	}
	if testing.Short() {
		cfgs = cfgs[:4]
	}
	for ci, c := range cfgs {
		o := c.o
		o.UUID = [16]byte(salt(16))
		o.UUID[6] = o.UUID[6]&0x0f | 0x40 // make it a valid v4 for uuid_parse's printer
		o.UUID[8] = o.UUID[8]&0x3f | 0x80
		dbs, hbs := max(o.DataBlockSize, 4096*boolInt(o.DataBlockSize == 0)), max(o.HashBlockSize, 4096*boolInt(o.HashBlockSize == 0))
		hashSize := map[crypto.Hash]int{0: 32, crypto.SHA256: 32, crypto.SHA1: 20, crypto.SHA224: 28, crypto.SHA384: 48, crypto.SHA512: 64}[o.Hash]
		per := 1
		for per*2*hashSize <= hbs {
			per *= 2
		}
		for _, blocks := range []int{1, 2, per - 1, per, per + 1, per*per + 1 + rng.Intn(per)} {
			if blocks*dbs > 48<<20 {
				blocks = 3*per + 1
			}
			size := blocks*dbs + rng.Intn(2)*rng.Intn(dbs) // sometimes a partial tail block
			data := salt(size)
			dataFile, hashFile := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
			os.Remove(hashFile)
			if err := os.WriteFile(dataFile, data, 0o600); err != nil {
				t.Fatal(err)
			}
			args := veritysetupArgs(o)
			if blocks == 1 && o.HashOffset > 0 && !o.NoSuperblock {
				continue // veritysetup 2.6.1 fails to write the superblock here
			}
			cmd := exec.Command(tool, append([]string{"format", dataFile, hashFile}, args...)...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("veritysetup %v: %v\n%s", args, err, out)
			}
			wantRoot := ""
			for _, line := range strings.Split(string(out), "\n") {
				if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "Root hash" {
					wantRoot = strings.TrimSpace(v)
				}
			}
			wantImg, err := os.ReadFile(hashFile)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			root, img := format(t, data, o)
			name := fmt.Sprintf("cfg %d %v: %d blocks, %d bytes", ci, args, blocks, size)
			if hex.EncodeToString(root) != wantRoot {
				t.Errorf("%s: root %x, veritysetup %s", name, root, wantRoot)
			}
			if !bytes.Equal(img, wantImg) {
				t.Errorf("%s: hash image differs (%d vs %d bytes)", name, len(img), len(wantImg))
			}
			if err := DmverityVerify(context.Background(), bytes.NewReader(data), int64(size), bytes.NewReader(wantImg), root, o, 0, -1); err != nil {
				t.Errorf("%s: verify veritysetup's image: %v", name, err)
			}
		}
	}
	// And veritysetup verifies ours.
	data := salt(300*4096 + 5)
	o := DmverityOptions{Salt: salt(8), UUID: testUUID}
	root, img := format(t, data, o)
	dataFile, hashFile := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
	os.WriteFile(dataFile, data, 0o600)
	os.WriteFile(hashFile, img, 0o600)
	if out, err := exec.Command(tool, "verify", dataFile, hashFile, hex.EncodeToString(root)).CombinedOutput(); err != nil {
		t.Fatalf("veritysetup verify of our image: %v\n%s", err, out)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func veritysetupArgs(o DmverityOptions) []string {
	args := []string{"--salt=-"}
	if len(o.Salt) > 0 {
		args[0] = "--salt=" + hex.EncodeToString(o.Salt)
	}
	if o.Format0 {
		args = append(args, "--format=0")
	}
	if o.Hash != 0 {
		name := map[crypto.Hash]string{crypto.SHA1: "sha1", crypto.SHA224: "sha224", crypto.SHA256: "sha256", crypto.SHA384: "sha384", crypto.SHA512: "sha512"}[o.Hash]
		args = append(args, "--hash="+name)
	}
	if o.DataBlockSize != 0 {
		args = append(args, fmt.Sprintf("--data-block-size=%d", o.DataBlockSize))
	}
	if o.HashBlockSize != 0 {
		args = append(args, fmt.Sprintf("--hash-block-size=%d", o.HashBlockSize))
	}
	if o.NoSuperblock {
		args = append(args, "--no-superblock")
	} else {
		u := hex.EncodeToString(o.UUID[:])
		args = append(args, "--uuid="+u[0:8]+"-"+u[8:12]+"-"+u[12:16]+"-"+u[16:20]+"-"+u[20:])
	}
	if o.HashOffset != 0 {
		args = append(args, fmt.Sprintf("--hash-offset=%d", o.HashOffset))
	}
	return args
}

func TestDmverityTamper(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	for _, o := range []DmverityOptions{
		{Salt: []byte("salt")},
		{Format0: true, Hash: crypto.SHA1, DataBlockSize: 512, HashBlockSize: 512},
		{NoSuperblock: true, HashOffset: 1024, DataBlockSize: 1024, HashBlockSize: 1024},
	} {
		dbs := max(o.DataBlockSize, 4096*boolInt(o.DataBlockSize == 0))
		// The largest count gives a tree of two or more levels with every block size.
		for _, blocks := range []int{1, 5, 300, 17000 * 512 / dbs} {
			data := make([]byte, blocks*dbs)
			rng.Read(data)
			root, img := format(t, data, o)
			l, _ := o.Layout(int64(len(data)))
			verify := func(d, h []byte) error {
				return DmverityVerify(context.Background(), bytes.NewReader(d), int64(len(d)), bytes.NewReader(h), root, o, 0, -1)
			}
			if err := verify(data, img); err != nil {
				t.Fatal(err)
			}
			// Every flipped tree byte (sampled) fails the full check.
			step := max(1, (l.HashAreaEnd-l.TreeOffset)/24)
			for i := l.TreeOffset; i < l.HashAreaEnd; i += 1 + rng.Int63n(step) {
				bad := bytes.Clone(img)
				bad[i] ^= 1 << rng.Intn(8)
				if err := verify(data, bad); !errors.Is(err, ErrIntegrity) || !errors.Is(err, errs.ErrAuthentication) {
					t.Fatalf("%+v %d blocks: tree byte %d flipped: %v", o, blocks, i, err)
				}
			}
			i := rng.Intn(len(data))
			bad := bytes.Clone(data)
			bad[i] ^= 0x10
			err := verify(bad, img)
			if !errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), fmt.Sprintf("data block %d ", i/dbs)) {
				t.Fatalf("flipped data byte %d: %v", i, err)
			}
			// Only the range with the bad block fails.
			bi := int64(i / dbs)
			dv, err := NewDmverityVerifier(bytes.NewReader(img), root, withBlocks(o, l.DataBlocks), -1)
			if err != nil {
				t.Fatal(err)
			}
			if bi > 0 {
				if err := dv.VerifyBlocks(0, bad[:bi*int64(dbs)]); err != nil {
					t.Fatal(err)
				}
			}
			if err := dv.VerifyBlocks(bi, bad[bi*int64(dbs):(bi+1)*int64(dbs)]); !errors.Is(err, ErrIntegrity) {
				t.Fatal(err)
			}
			wrong := bytes.Clone(root)
			wrong[0] ^= 1
			if err := DmverityVerify(context.Background(), bytes.NewReader(data), int64(len(data)), bytes.NewReader(img), wrong, o, 0, -1); !errors.Is(err, ErrIntegrity) {
				t.Fatalf("wrong root: %v", err)
			}
		}
	}
}

func withBlocks(o DmverityOptions, n int64) DmverityOptions { o.DataBlocks = n; return o }

func TestDmverityConcurrentVerify(t *testing.T) {
	data := testPattern(1000 * 4096)
	o := DmverityOptions{Salt: []byte{1, 2, 3}}
	root, img := format(t, data, o)
	dv, err := NewDmverityVerifier(bytes.NewReader(img), root, o, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for b := g; b < 1000; b += 8 {
				if err := dv.VerifyBlocks(int64(b), data[b*4096:(b+1)*4096]); err != nil {
					t.Error(err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
}

func TestDmverityBadOptions(t *testing.T) {
	data := make([]byte, 8192)
	for _, o := range []DmverityOptions{
		{DataBlockSize: 256}, {HashBlockSize: 1 << 20}, {DataBlockSize: 3000},
		{Hash: crypto.MD5}, {Salt: make([]byte, 257)}, {HashOffset: 1000},
		{DataBlocks: 3}, {DataBlockSize: 16384},
	} {
		if _, err := DmverityFormat(bytes.NewReader(data), int64(len(data)), &memFile{}, o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

func TestParseDmveritySuperblockErrors(t *testing.T) {
	_, img := format(t, testPattern(8192), DmverityOptions{Salt: []byte{9}, UUID: testUUID})
	good := img[:512]
	mut := func(f func(b []byte)) []byte { b := bytes.Clone(good); f(b); return b }
	for name, b := range map[string][]byte{
		"short":     good[:511],
		"signature": mut(func(b []byte) { b[0] = 'V' }),
		"version":   mut(func(b []byte) { b[8] = 2 }),
		"hashtype":  mut(func(b []byte) { b[12] = 2 }),
		"alg empty": mut(func(b []byte) { b[32] = 0 }),
		"alg nonul": mut(func(b []byte) { copy(b[32:64], bytes.Repeat([]byte{'a'}, 32)) }),
		"alg ctrl":  mut(func(b []byte) { b[33] = 1 }),
		"dbs":       mut(func(b []byte) { b[64] = 1 }),
		"hbs":       mut(func(b []byte) { b[70] = 0x10 }),
		"blocks 0":  mut(func(b []byte) { clear(b[72:80]) }),
		"blocks":    mut(func(b []byte) { b[79] = 0xff }),
		"salt":      mut(func(b []byte) { b[81] = 1 }),
	} {
		if _, err := ParseDmveritySuperblock(b); !errors.Is(err, errs.ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
	sb, _ := ParseDmveritySuperblock(mut(func(b []byte) { copy(b[32:], "whirlpool\x00") }))
	if _, err := sb.Options(); !errors.Is(err, errs.ErrUnsupportedAlgorithm) {
		t.Errorf("unknown algorithm: %v", err)
	}
}

func FuzzParseDmveritySuperblock(f *testing.F) {
	// Seeds: a superblock as veritysetup writes it (checked byte for byte
	// against veritysetup in TestDmverityVectors / TestDmverityOracle).
	for _, o := range []DmverityOptions{
		{Salt: mustHex("0123456789abcdef"), UUID: testUUID},
		{Format0: true, Hash: crypto.SHA1, DataBlockSize: 512, HashBlockSize: 1024},
		{Hash: crypto.SHA512, Salt: bytes.Repeat([]byte{0xaa}, 256)},
	} {
		_, img := format(f, testPattern(64<<10), o)
		f.Add(img[:512])
	}
	f.Add(make([]byte, 512))
	f.Fuzz(func(t *testing.T, b []byte) {
		sb, err := ParseDmveritySuperblock(b)
		if err != nil {
			if !errors.Is(err, errs.ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		// A valid superblock round-trips (pad bytes aside) and its options,
		// when supported, give a usable geometry.
		out, err := sb.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		sb2, err := ParseDmveritySuperblock(out)
		if err != nil || sb2.Algorithm != sb.Algorithm || sb2.DataBlocks != sb.DataBlocks || !bytes.Equal(sb2.Salt, sb.Salt) {
			t.Fatalf("round trip: %+v, %v", sb2, err)
		}
		if o, err := sb.Options(); err == nil {
			if _, err := o.Layout(-1); err != nil {
				t.Fatalf("options %+v: %v", o, err)
			}
		}
	})
}
