package merkle

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealfs/sealfs/internal/testutil"
)

// testPattern is the input of fsverity-utils' test_compute_digest.c.
func testPattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((i % 11) + (i % 439) + (i % 1103))
	}
	return b
}

// Section 3.3 of merkle-formats.md.
func TestFsverityVectors(t *testing.T) {
	for _, v := range []struct {
		size  int
		block int
		hash  crypto.Hash
		salt  string
		want  string
	}{
		{1000000, 4096, crypto.SHA256, "", "48df0c462329cd879661bd05b39aa81b05cc16afd27a7196a559da83531d39d9"},
		{100000, 4096, crypto.SHA256, "", "f2096a36c5cdca4fa33ee8852833150bb324992e5417a9d571f1bffff73b9efc"},
		{4096, 4096, crypto.SHA256, "", "6ac39979016e3ddf3d39fff6cb984f7c118acdf1852919f5c100c4b142c1818e"},
		{1, 4096, crypto.SHA256, "", "b803429503d95915829b29fdbc8bbad142f3abfd11b1cadf5526582e685c0551"},
		{0, 4096, crypto.SHA256, "", "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95"},
		{1000000, 4096, crypto.SHA256, "abcd", "917900b0d299454aa304d5debc6f39e4af7b5abe33bdbc568d5d8f1e5c4d8652"},
		{1000000, 4096, crypto.SHA256, "0123456789:;<=>?@ABCDEFGHIJKLMNO", "bc2d70324c048c220a2cb190832140863eb268e680427939e5d467bea5ec5ad9"},
		{1000000, 1024, crypto.SHA256, "", "e9df927c14fcb961d5f51c666d8ae4c14fe4ff98a374c733e898d00c9e74a8e3"},
		{1000000, 65536, crypto.SHA256, "", "f3b6418f26d4d0e74728193bae76f15cb4bb2ce9777448d76bd8138b69ec61c2"},
		{1000000, 4096, crypto.SHA512, "abcd", "8425c6d0c94f84ed904c12936845fbb7af9953753789712dcc3be142db3d4b6b47a399ad52aa609256ce29a960bf4bb0e595ec386ca58c06519d546dc5b197bb"},
	} {
		name := fmt.Sprintf("%d/%d/%v/%q", v.size, v.block, v.hash, v.salt)
		opts := FsverityOptions{Hash: v.hash, BlockSize: v.block, Salt: []byte(v.salt)}
		got, err := FsverityDigest(bytes.NewReader(testPattern(v.size)), int64(v.size), opts)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if hex.EncodeToString(got) != v.want {
			t.Errorf("%s: digest %x, want %s", name, got, v.want)
		}
	}
	// The tree root inside the descriptor (1e6 bytes, 4096, SHA-256).
	p, _ := FsverityOptions{}.params()
	root, err := fsverityRoot(bytes.NewReader(testPattern(1000000)), 1000000, p)
	if err != nil || hex.EncodeToString(root) != "cf45e4e7dadcc6d3713748dd66a498d55b0ae76d85e44bc5a83fd0d3333f06c0" {
		t.Errorf("root %x, %v", root, err)
	}
	for data, want := range map[string]string{
		string(ff(8192)): "a8e44b2a98722077e099017ee98c81fd0a2050d3152c842d621d19907962d35f",
		"hello\n":        "9c76eecc7b76fcb46199cb27b90cf59a660e10575bb0412128905129d5b1c2aa",
		"abc":            "700b6bd8510f0b4f9bac8b9cf0459151a1c4a99f467892bb4bd289a67df8e19c",
	} {
		got, _ := FsverityDigest(strings.NewReader(data), int64(len(data)), FsverityOptions{})
		if hex.EncodeToString(got) != want {
			t.Errorf("%.10q: %x, want %s", data, got, want)
		}
	}
}

func TestFsverityBadInput(t *testing.T) {
	for _, o := range []FsverityOptions{
		{BlockSize: 512}, {BlockSize: 131072}, {BlockSize: 3000},
		{Hash: crypto.SHA1}, {Salt: make([]byte, 33)},
	} {
		if _, err := FsverityDigest(bytes.NewReader(nil), 0, o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	if _, err := FsverityDigest(bytes.NewReader(make([]byte, 10)), 11, FsverityOptions{}); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short input: %v", err)
	}
}

// TestFsverityOracle compares with `fsverity digest` on random inputs of
// awkward sizes: empty, one byte, block ±1, and multi-level trees.
func TestFsverityOracle(t *testing.T) {
	tool := testutil.RequireTool(t, "fsverity")
	dir := t.TempDir()
	rng := rand.New(rand.NewSource(2))
	type cfg struct {
		block int
		hash  crypto.Hash
		salt  int
	}
	cfgs := []cfg{{4096, crypto.SHA256, 0}, {1024, crypto.SHA256, 5}, {1024, crypto.SHA512, 32}, {65536, crypto.SHA512, 0}, {8192, crypto.SHA256, 17}, {2048, crypto.SHA512, 1}}
	if testing.Short() {
		cfgs = cfgs[:3]
	}
	for _, c := range cfgs {
		b := c.block
		per := b / c.hash.Size()
		sizes := []int{0, 1, b - 1, b, b + 1, per*b - 1, per * b, per*b + 1, per*per*b + 1 + rng.Intn(b)}
		for _, size := range sizes {
			if size > 16<<20 {
				// Multi-level trees are covered by the small block sizes;
				// keep the large ones' inputs small.
				size = 5*b + rng.Intn(b)
			}
			data := make([]byte, size)
			rng.Read(data)
			salt := make([]byte, c.salt)
			rng.Read(salt)
			file := filepath.Join(dir, "f")
			if err := os.WriteFile(file, data, 0o600); err != nil {
				t.Fatal(err)
			}
			alg := map[crypto.Hash]string{crypto.SHA256: "sha256", crypto.SHA512: "sha512"}[c.hash]
			args := []string{"digest", "--compact", "--hash-alg=" + alg, fmt.Sprintf("--block-size=%d", b), file}
			if len(salt) > 0 {
				args = append(args, "--salt="+hex.EncodeToString(salt))
			}
			out, err := exec.Command(tool, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("fsverity %v: %v\n%s", args, err, out)
			}
			got, err := FsverityDigest(bytes.NewReader(data), int64(size), FsverityOptions{Hash: c.hash, BlockSize: b, Salt: salt})
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.TrimSpace(string(out)); hex.EncodeToString(got) != want {
				t.Errorf("%s block %d salt %d size %d: %x, fsverity says %s", alg, b, len(salt), size, got, want)
			}
		}
	}
}
