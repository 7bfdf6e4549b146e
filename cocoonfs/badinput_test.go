package cocoonfs

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"strings"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

var errEOF = io.EOF

func vectorBytes(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(vectorPath(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestWrongKey(t *testing.T) {
	for _, v := range formatted {
		for _, key := range [][]byte{{0x00, 0x11, 0x22}, {0xaa, 0xbb}, {0xaa, 0xbb, 0xcc, 0x01}, {0x00, 0xaa, 0xbb, 0xcc}} {
			_, err := Open(openVector(t, v.image), key, nil)
			if !errors.Is(err, ErrWrongKey) || !errors.Is(err, ErrAuthentication) {
				t.Errorf("%s key %x: err = %v, want ErrWrongKey", v.image, key, err)
			}
			if err != nil && strings.Contains(err.Error(), "aabbcc") {
				t.Errorf("error message leaks key material: %v", err)
			}
		}
	}
	if _, err := Open(openVector(t, "v01-sha2-aes128.img"), nil, nil); err == nil {
		t.Error("empty key accepted")
	}
}

// TestKeyZeroPadding pins a property of the format: the raw key is an HMAC
// key (of the SHA-512 root key KDF), and HMAC zero-pads keys shorter than the
// hash block, so appending zero bytes to a short key yields the same key.
// The reference implementation behaves alike; the README tells users to use
// fixed-length, full-entropy keys.
func TestKeyZeroPadding(t *testing.T) {
	if _, err := Open(openVector(t, "v01-sha2-aes128.img"), []byte{0xaa, 0xbb, 0xcc, 0, 0}, nil); err != nil {
		t.Fatalf("zero-extended key: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	v01 := vectorBytes(t, "v01-sha2-aes128.img")
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), v01...)) }
	// setLayoutByte rewrites one layout byte inside the masked static header
	// and re-applies the integrity protection, producing a header that is
	// intact but describes something else.
	setHeader := func(b []byte, edit func(*disk.StaticHeader)) []byte {
		sh, err := disk.DecodeStaticHeader(b[:512])
		if err != nil {
			t.Fatal(err)
		}
		edit(&sh)
		enc, err := disk.EncodeStaticHeader(sh)
		if err != nil {
			t.Fatal(err)
		}
		copy(b, enc)
		return b
	}
	cases := []struct {
		name string
		img  []byte
		want []error
		msg  string
	}{
		{"zeros", make([]byte, 64<<10), []error{ErrNotCocoonFS}, "not a CocoonFS image"},
		{"empty", nil, []error{ErrNotCocoonFS}, ""},
		{"random text", []byte(strings.Repeat("hello world ", 1000)), []error{ErrNotCocoonFS}, ""},
		{"truncated to header", v01[:2048], []error{ErrCorrupt}, "truncated"},
		{"truncated half", v01[:len(v01)/2], []error{ErrCorrupt}, "truncated"},
		{"torn static header", mut(func(b []byte) []byte { clear(b[256:512]); return b }), []error{ErrCorrupt}, ""},
		{"flipped layout byte", mut(func(b []byte) []byte { b[10] ^= 0x04; return b }), []error{ErrCorrupt}, ""},
		{"unknown hash", mut(func(b []byte) []byte {
			return setHeader(b, func(h *disk.StaticHeader) { h.Layout.AuthTreeNodeHash = 0x1234 })
		}), []error{ErrUnsupportedAlgorithm}, "auth_tree_node_hash_alg"},
		{"unknown cipher", mut(func(b []byte) []byte {
			return setHeader(b, func(h *disk.StaticHeader) { h.Layout.Cipher = 0x00ff })
		}), []error{ErrUnsupportedAlgorithm}, "block_cipher_alg"},
		{"AES with a 100-bit key", mut(func(b []byte) []byte {
			return setHeader(b, func(h *disk.StaticHeader) { h.Layout.CipherKeyBits = 100 })
		}), []error{ErrUnsupportedAlgorithm}, ""},
		{"other salt", mut(func(b []byte) []byte {
			return setHeader(b, func(h *disk.StaticHeader) { h.Salt = []byte{1, 2, 3} })
		}), []error{ErrWrongKey}, ""},
		{"image size beyond device", mut(func(b []byte) []byte { b[0x26a] = 0x10; return b }), []error{ErrCorrupt}, ""},
		{"creation info header", vectorBytes(t, "v08-mkfsinfo-header-sha2-aes128.img"), []error{ErrNotFormatted}, "creation info header"},
		{"trimmed creation info header", vectorBytes(t, "v09-mkfsinfo-header-trimmed.img"), []error{ErrNotFormatted}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Open(blockdev.NewMemoryFrom(padTo512(c.img), 512), vectorKey, nil)
			if err == nil {
				t.Fatal("Open succeeded")
			}
			for _, w := range c.want {
				if !errors.Is(err, w) {
					t.Errorf("err = %v, want errors.Is %v", err, w)
				}
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("err = %q, want it to mention %q", err, c.msg)
			}
		})
	}
}

func padTo512(b []byte) []byte {
	if len(b)%512 == 0 && len(b) > 0 {
		return b
	}
	return append(b, make([]byte, 512-len(b)%512)...)
}

func TestReservedAndMissingInodes(t *testing.T) {
	f, err := Open(openVector(t, "v02-sha2-aes128-removed42.img"), vectorKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ino := range []uint64{0, 1, 2, 3, 5, 15} {
		if _, err := f.ReadFile(ino); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("ReadFile(%d) = %v, want fs.ErrInvalid", ino, err)
		}
	}
	for _, ino := range []uint64{16, 42, 44, 1 << 40, ^uint64(0)} {
		if _, err := f.ReadFile(ino); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("ReadFile(%d) = %v, want fs.ErrNotExist", ino, err)
		}
		if _, err := f.Stat(ino); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Stat(%d) = %v, want fs.ErrNotExist", ino, err)
		}
	}
}

// TestDeviceBlockSizeGuard: a writable device that may tear writes in units
// larger than the image's IO block is refused unless forced; read-only
// devices are always accepted.
func TestDeviceBlockSizeGuard(t *testing.T) {
	v01 := vectorBytes(t, "v01-sha2-aes128.img")
	big := blockdev.NewMemoryFrom(v01, 4096)
	_, err := Open(big, vectorKey, nil)
	if !errors.Is(err, ErrIOBlockTooSmall) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("writable 4 KiB device: err = %v, want ErrIOBlockTooSmall naming --force", err)
	}
	if _, err := Open(big, vectorKey, &Options{Force: true}); err != nil {
		t.Fatalf("forced: %v", err)
	}
	big.SetReadOnly(true)
	if _, err := Open(big, vectorKey, nil); err != nil {
		t.Fatalf("read-only: %v", err)
	}
	if _, err := Open(blockdev.NewMemoryFrom(v01, 512), vectorKey, nil); err != nil {
		t.Fatalf("matching block size: %v", err)
	}
}

// TestPendingJournal makes the journal log head look committed (magic plus
// valid integrity protection) and expects Open to say a replay is needed.
func TestPendingJournal(t *testing.T) {
	b := vectorBytes(t, "v01-sha2-aes128.img")
	sh, err := disk.DecodeStaticHeader(b[:512])
	if err != nil {
		t.Fatal(err)
	}
	off := disk.JournalLogHeadOffset(sh, 32, 16, 32)
	n, err := disk.JournalLogHeadLen(sh.Layout, 16, 32)
	if err != nil {
		t.Fatal(err)
	}
	head := b[off : off+n]
	clear(head[:128])
	if err := disk.EncodeJournalLogHeadPlaintext(head, sh.Layout, [2]disk.ExtentPtr{disk.NilExtentPtr, disk.NilExtentPtr}); err != nil {
		t.Fatal(err)
	}
	_, err = Open(blockdev.NewMemoryFrom(b, 512), vectorKey, nil)
	if !errors.Is(err, ErrPendingJournal) || !strings.Contains(err.Error(), "open read-write to replay") {
		t.Fatalf("err = %v, want ErrPendingJournal", err)
	}
	// A torn journal head (magic but broken protection) is not a commit.
	head[200] ^= 0xff
	if _, err := Open(blockdev.NewMemoryFrom(b, 512), vectorKey, nil); err != nil {
		t.Fatalf("torn journal head: %v", err)
	}
}

func TestHeaderInfo(t *testing.T) {
	for _, c := range []struct {
		image string
		kind  HeaderKind
		size  uint64
	}{
		{"v01-sha2-aes128.img", KindFilesystem, 8 << 20},
		{"v06-sha2-aes128-io4k.img", KindFilesystem, 8 << 20},
		{"v08-mkfsinfo-header-sha2-aes128.img", KindMkfsInfo, 8 << 20},
		{"v09-mkfsinfo-header-trimmed.img", KindMkfsInfo, 8 << 20},
	} {
		h, err := ReadHeaderInfo(openVector(t, c.image))
		if err != nil {
			t.Fatalf("%s: %v", c.image, err)
		}
		if h.Kind != c.kind || h.ImageSize != c.size || h.Salt != "ddeeff" || h.Algorithms.BlockCipher.Name != "AES" || h.Algorithms.BlockCipherKeyBits != 128 {
			t.Errorf("%s: %+v", c.image, h)
		}
	}
	v04, err := ReadHeaderInfo(openVector(t, "v04-sha3-camellia128.img"))
	if err != nil || v04.Algorithms.AuthTreeNodeHash.Name != "SHA3_256" || v04.Algorithms.BlockCipher.Name != "CAMELLIA" {
		t.Errorf("v04: %+v %v", v04, err)
	}
	// A torn primary creation info header with the backup copy intact is an
	// interrupted format.
	b := vectorBytes(t, "v08-mkfsinfo-header-sha2-aes128.img")
	clear(b[:512])
	h, err := ReadHeaderInfo(blockdev.NewMemoryFrom(b, 512))
	if err == nil && h.Kind != KindMkfsInfoBackup {
		t.Errorf("torn primary: kind %s", h.Kind)
	}
	t.Logf("torn primary creation info header: %+v, %v", h, err)
}

func TestInfoAndCounter(t *testing.T) {
	f, err := Open(openVector(t, "v01-sha2-aes128.img"), vectorKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	in, err := f.Info()
	if err != nil {
		t.Fatal(err)
	}
	if in.Files != 2 || len(in.RootDigest) != 64 || in.UpdateCounter == "" || in.AuthTree.Height != 3 {
		t.Errorf("info %+v", in)
	}
	t.Logf("root %s counter %s tree %+v", in.RootDigest, in.UpdateCounter, in.AuthTree)
	// v02 is v01 after one more transaction: same image lineage, counter + 1.
	g, err := Open(openVector(t, "v02-sha2-aes128-removed42.img"), vectorKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("v02 counter %s", g.UpdateCounter())
}

// TestImpossibleLayout writes static headers whose integrity protection is
// intact but whose layout cannot be: Open must name the field.
func TestImpossibleLayout(t *testing.T) {
	v01 := vectorBytes(t, "v01-sha2-aes128.img")
	sh, err := disk.DecodeStaticHeader(v01[:512])
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		field string
		pos   int // byte of the 21-byte layout
		value byte
	}{
		{"io_block_allocation_blocks_log2", 1, 7},
		{"auth_tree_data_block_allocation_blocks_log2", 3, 9},
		{"index_tree_leaf_node_allocation_blocks_log2", 5, 200},
		{"index_tree_internal_node_allocation_blocks_log2", 6, 7},
		{"allocation_block_size_128b_log2", 0, 60},
	} {
		t.Run(c.field, func(t *testing.T) {
			b := append([]byte(nil), v01...)
			hdr := make([]byte, 512)
			copy(hdr, "COCOONFS")
			hdr[8] = 1
			lay := sh.Layout.Append(nil)
			lay[c.pos] = c.value
			copy(hdr[9:], lay)
			hdr[30] = byte(len(sh.Salt))
			copy(hdr[31+disk.IntegrityLen(sh.Layout):], sh.Salt)
			// Protect with the real layout's parameters (the IO block size
			// and section length): only the layout bytes lie.
			if err := disk.ApplyIntegrity(hdr, 8, 23, sh.Layout); err != nil {
				t.Fatal(err)
			}
			copy(b, hdr)
			_, err := Open(blockdev.NewMemoryFrom(b, 512), vectorKey, nil)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("err = %v, want ErrCorrupt naming %s", err, c.field)
			}
		})
	}
}
