package merkle

import (
	"bytes"
	"errors"
	"math/rand"
	"strings"
	"testing"

	"github.com/sealfs/sealfs/errs"
)

func ff(n int) []byte { return bytes.Repeat([]byte{0xff}, n) }

func fuchsiaPattern() []byte {
	b := make([]byte, 0xFF0080)
	for i := range b {
		b[i] = []byte{0xFF, 0x00, 0x80}[i%3]
	}
	return b
}

// Section 1.4 of merkle-formats.md.
var fuchsiaVectors = []struct {
	name string
	data func() []byte
	root string
}{
	{"empty", func() []byte { return nil }, "15ec7bf0b50732b49f8228e07d24365338f9e3ab994b00af08e5a3bffe55fd8b"},
	{"ff1", func() []byte { return ff(1) }, "0967e0f62a104d1595610d272dfab3d2fa2fe07be0eebce13ef5d79db142610e"},
	{"ff4096", func() []byte { return ff(4096) }, "0a90612c255555469dead72c8fdc41eec06dfe04a30a1f2b7c480ff95d20c5ec"},
	{"ff8191", func() []byte { return ff(8191) }, "f2abd690381bab3ce485c814d05c310b22c34a7441418b5c1a002c344a80e730"},
	{"oneblock", func() []byte { return ff(8192) }, "68d131bc271f9c192d4f6dcd8fe61bef90004856da19d0f2f514a7f4098b0737"},
	{"ff8193", func() []byte { return ff(8193) }, "374781f7d770b6ee9c1a63e186d2d0ccdad10d6aef4fd027e82b1be5b70a2a0c"},
	{"small", func() []byte { return ff(65536) }, "f75f59a944d2433bc6830ec243bfefa457704d2aed12f30539cd4f18bf1d62cf"},
	{"fulllevel1", func() []byte { return ff(2097152) }, "1e6e9c870e2fade25b1b0288ac7c216f6fae31c1599c0c57fb7030c15d385a8d"},
	{"large", func() []byte { return ff(2105344) }, "7d75dfb18bfd48e03b5be4e8e9aeea2f89880cb81c1551df855e0d0a0cc59a67"},
	{"unaligned", func() []byte { return ff(2109440) }, "7577266aa98ce587922fdc668c186e27f3c742fb1b732737153b70ae46973e43"},
	{"fuchsia", fuchsiaPattern, "2feb488cffc976061998ac90ce7292241dfa86883c0edc279433b5c4370d0f30"},
	{"zero1", func() []byte { return []byte{0} }, "0c9eefda90e39f8de79af6fe069eda5d43205f7d3e626d5bd80edf7463f3f4a5"},
	{"zero8192", func() []byte { return make([]byte, 8192) }, "01d6133647a9a89cb47ee2631b8e5f5748468a32c7fc5ff7dd3b180fc55b13ec"},
	{"hello", func() []byte { return []byte("hello") }, "36e43c7b39beea113ab5070a979023db0b1a47cb9da622169d10660d4f4ad263"},
	{"abc", func() []byte { return []byte("abc") }, "5ded54f18d5d062e6cab5a3a8b2d87127947ec4e67e9c4dfec764d5c17fe23ce"},
}

func TestFuchsiaVectors(t *testing.T) {
	for _, v := range fuchsiaVectors {
		t.Run(v.name, func(t *testing.T) {
			data := v.data()
			if got := FuchsiaRoot(data).String(); got != v.root {
				t.Fatalf("FuchsiaRoot = %s, want %s", got, v.root)
			}
			// Streaming in awkward chunk sizes gives the same root and tree.
			want, wantTree := NewFuchsiaBuilderFinish(data)
			if int64(len(wantTree)) != FuchsiaTreeSize(int64(len(data))) {
				t.Fatalf("tree is %d bytes, FuchsiaTreeSize says %d", len(wantTree), FuchsiaTreeSize(int64(len(data))))
			}
			for _, chunk := range []int{1, 100, 1024, 8191, 8192, 8193} {
				if chunk == 1 && len(data) > 100000 {
					continue
				}
				b := NewFuchsiaBuilder()
				for p := data; len(p) > 0; {
					n := min(chunk, len(p))
					b.Write(p[:n])
					p = p[n:]
				}
				if b.Size() != int64(len(data)) {
					t.Fatalf("Size = %d", b.Size())
				}
				root, tree := b.Finish()
				if root != want || !bytes.Equal(tree, wantTree) {
					t.Fatalf("chunk %d: different root or tree", chunk)
				}
			}
			vf, err := NewFuchsiaVerifier(want, int64(len(data)), wantTree)
			if err != nil {
				t.Fatal(err)
			}
			if err := vf.VerifyBlocks(0, data); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func NewFuchsiaBuilderFinish(data []byte) (Digest, []byte) {
	b := NewFuchsiaBuilder()
	b.Write(data)
	return b.Finish()
}

func TestFuchsiaTreeLayout(t *testing.T) {
	// 257 blocks: level 0 = 257 hashes in 2 blocks, level 1 = 2 hashes in 1 block.
	if got := FuchsiaTreeSize(2105344); got != 3*8192 {
		t.Fatalf("FuchsiaTreeSize(2105344) = %d", got)
	}
	for n, want := range map[int64]int64{0: 0, 1: 0, 8192: 0, 8193: 8192, 65536: 8192, 2097152: 8192, 2097153: 3 * 8192} {
		if got := FuchsiaTreeSize(n); got != want {
			t.Errorf("FuchsiaTreeSize(%d) = %d, want %d", n, got, want)
		}
	}
	data := ff(2105344)
	root, tree := NewFuchsiaBuilderFinish(data)
	h := newFuchsiaHasher()
	// The first level-0 hash is the leaf hash of block 0 (oneblock vector).
	if d := h.leaf(0, data[:8192]); !bytes.Equal(tree[:32], d[:]) {
		t.Fatal("tree does not start with level 0")
	}
	// The level-1 block (third 8 KiB block) hashes to the root.
	if h.interior(2, 0, tree[16384:16384+64]) != root {
		t.Fatal("top level does not hash to the root")
	}
}

func TestParseDigest(t *testing.T) {
	const s = "15ec7bf0b50732b49f8228e07d24365338f9e3ab994b00af08e5a3bffe55fd8b"
	d, err := ParseDigest(s)
	if err != nil || d.String() != s {
		t.Fatalf("ParseDigest = %v, %v", d, err)
	}
	for _, bad := range []string{"", s[:63], s + "0", strings.ToUpper(s), s[:63] + "g", " " + s[1:]} {
		if _, err := ParseDigest(bad); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ParseDigest(%q) = %v, want ErrInvalidName", bad, err)
		}
	}
}

func TestFuchsiaVerifierTamper(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, n := range []int{0, 1, 8191, 8192, 8193, 65536 + 5, 2105344 + 100} {
		data := make([]byte, n)
		rng.Read(data)
		root, tree := NewFuchsiaBuilderFinish(data)
		if _, err := NewFuchsiaVerifier(root, int64(n), tree); err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		// Every flipped tree byte (sampled) is caught when the verifier is made.
		for i := 0; i < len(tree); i += 1 + rng.Intn(997) {
			bad := bytes.Clone(tree)
			bad[i] ^= 1 << rng.Intn(8)
			if _, err := NewFuchsiaVerifier(root, int64(n), bad); !errors.Is(err, ErrIntegrity) || !errors.Is(err, errs.ErrAuthentication) {
				t.Fatalf("n=%d: tree byte %d flipped: %v", n, i, err)
			}
		}
		if _, err := NewFuchsiaVerifier(root, int64(n), append(bytes.Clone(tree), 0)); !errors.Is(err, ErrIntegrity) {
			t.Fatalf("n=%d: long tree: %v", n, err)
		}
		badRoot := root
		badRoot[0] ^= 1
		if _, err := NewFuchsiaVerifier(badRoot, int64(n), tree); n != 0 && n > 8192 && !errors.Is(err, ErrIntegrity) {
			t.Fatalf("n=%d: wrong root: %v", n, err)
		} else if n == 0 && !errors.Is(err, ErrIntegrity) {
			t.Fatalf("empty blob with wrong root: %v", err)
		}
		v, err := NewFuchsiaVerifier(root, int64(n), tree)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			continue
		}
		// Flip one data byte: only its block fails.
		i := rng.Intn(n)
		bad := bytes.Clone(data)
		bad[i] ^= 0x80
		blk := int64(i / FuchsiaBlockSize)
		err = v.VerifyBlocks(0, bad)
		if !errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), "data block ") {
			t.Fatalf("n=%d: flipped data byte %d: %v", n, i, err)
		}
		end := min(int64(n), (blk+1)*FuchsiaBlockSize)
		if err := v.VerifyBlocks(blk, bad[blk*FuchsiaBlockSize:end]); !errors.Is(err, ErrIntegrity) {
			t.Fatalf("n=%d: block %d: %v", n, blk, err)
		}
		for b := int64(0); b*FuchsiaBlockSize < int64(n); b++ {
			if b == blk {
				continue
			}
			e := min(int64(n), (b+1)*FuchsiaBlockSize)
			if err := v.VerifyBlocks(b, bad[b*FuchsiaBlockSize:e]); err != nil {
				t.Fatalf("n=%d: untouched block %d: %v", n, b, err)
			}
		}
		if n > 8192 && n%8192 != 0 {
			// A short block that is not the blob's last is refused.
			if err := v.VerifyBlocks(0, data[:100]); err == nil || errors.Is(err, ErrIntegrity) {
				t.Fatalf("partial block: %v", err)
			}
		}
		if err := v.VerifyBlocks(int64(n/8192)+1, nil); err == nil {
			t.Fatal("out-of-range block accepted")
		}
	}
}
