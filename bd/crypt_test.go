package bd

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/internal/testutil"
)

// TestCryptOpenSSL checks block ciphertexts against OpenSSL with the
// tweak = block number, little-endian, zero-padded to 16 bytes
// (aes-xts-plain64). `openssl enc -aes-256-xts -K KEY -iv TWEAK -nopad` is
// tried first; OpenSSL 3.0's enc refuses XTS ("XTS ciphers not supported"),
// so then XTS is assembled from `openssl enc -aes-256-ecb`: T = E_K2(tweak),
// C_j = E_K1(P_j xor T·α^j) xor T·α^j (IEEE 1619), only the doubling in
// GF(2^128) being done here.
func TestCryptOpenSSL(t *testing.T) {
	openssl := testutil.RequireTool(t, "openssl")
	dir := t.TempDir()
	run := func(in []byte, args ...string) ([]byte, error) {
		pt := filepath.Join(dir, "in")
		if err := os.WriteFile(pt, in, 0o600); err != nil {
			t.Fatal(err)
		}
		return exec.Command(openssl, append(append([]string{"enc"}, args...), "-nopad", "-in", pt)...).Output()
	}
	k1, k2 := hex.EncodeToString(testCryptKey[:32]), hex.EncodeToString(testCryptKey[32:])
	for _, bs := range []int{512, 4096} {
		init := pattern(5*bs, uint64(bs))
		in := openCrypt(t, init, bs)
		ct := in.data.Bytes()
		for _, b := range []int{0, 1, 4} {
			tweak := make([]byte, 16)
			binary.LittleEndian.PutUint64(tweak, uint64(b))
			pt := init[b*bs : (b+1)*bs]
			want, err := run(pt, "-aes-256-xts", "-K", hex.EncodeToString(testCryptKey), "-iv", hex.EncodeToString(tweak))
			if err != nil || len(want) != bs {
				want = opensslXTSFromECB(t, run, k1, k2, tweak, pt)
			}
			if !bytes.Equal(want, ct[b*bs:(b+1)*bs]) {
				t.Errorf("bs %d block %d: ciphertext differs from openssl's", bs, b)
			}
		}
	}
}

func opensslXTSFromECB(t *testing.T, run func([]byte, ...string) ([]byte, error), k1, k2 string, tweak, pt []byte) []byte {
	t.Helper()
	T, err := run(tweak, "-aes-256-ecb", "-K", k2)
	if err != nil || len(T) != 16 {
		t.Fatalf("openssl aes-256-ecb: %v", err)
	}
	masks := make([]byte, len(pt))
	for j := 0; j < len(pt); j += 16 {
		copy(masks[j:], T)
		// T ← T·α: shift the little-endian 128-bit value left, reduce by x^128+x^7+x^2+x+1.
		carry := T[15] >> 7
		for i := 15; i > 0; i-- {
			T[i] = T[i]<<1 | T[i-1]>>7
		}
		T[0] <<= 1
		if carry != 0 {
			T[0] ^= 0x87
		}
	}
	x := make([]byte, len(pt))
	for i := range pt {
		x[i] = pt[i] ^ masks[i]
	}
	y, err := run(x, "-aes-256-ecb", "-K", k1)
	if err != nil || len(y) != len(pt) {
		t.Fatalf("openssl aes-256-ecb: %v", err)
	}
	for i := range y {
		y[i] ^= masks[i]
	}
	return y
}

func TestCryptKeySize(t *testing.T) {
	if _, err := NewCrypt(blockdev.NewMemory(4096, 512), make([]byte, 32), nil); !errors.Is(err, errs.ErrWrongKey) {
		t.Errorf("32-byte key: %v", err)
	}
	if _, err := NewCrypt(blockdev.NewMemory(4096, 512), testCryptKey, &CryptOptions{BlockSize: 8192}); err == nil {
		t.Errorf("block size 8192 accepted")
	}
}

// cheapKDF keeps Argon2id fast in tests.
var cheapKDF = &KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

func TestPassphraseKey(t *testing.T) {
	key, side, err := NewPassphraseKey([]byte("correct horse"), cheapKDF)
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != CryptKeySize || len(side) != KDFHeaderSize {
		t.Fatalf("key %d bytes, sidecar %d", len(key), len(side))
	}
	again, err := OpenPassphraseKey([]byte("correct horse"), side)
	if err != nil || !bytes.Equal(again, key) {
		t.Fatalf("OpenPassphraseKey = %v (equal %v)", err, bytes.Equal(again, key))
	}
	if _, err := OpenPassphraseKey([]byte("wrong"), side); !errors.Is(err, errs.ErrWrongKey) {
		t.Errorf("wrong passphrase: %v; want ErrWrongKey", err)
	}
	p, err := ParseKDFParams(side)
	if err != nil || p != *cheapKDF {
		t.Errorf("ParseKDFParams = %+v, %v", p, err)
	}
	for _, tc := range []struct {
		name string
		mut  func([]byte)
		want error
	}{
		{"magic", func(b []byte) { b[0] = 'X' }, errs.ErrCorrupt},
		{"version", func(b []byte) { b[8] = 2 }, errs.ErrUnsupported},
		{"flags", func(b []byte) { b[10] = 1 }, errs.ErrUnsupported},
		{"memory", func(b []byte) { binary.LittleEndian.PutUint32(b[16:], 1<<30) }, errs.ErrCorrupt},
		{"salt", func(b []byte) { b[40] ^= 1 }, errs.ErrWrongKey},
		{"check", func(b []byte) { b[90] ^= 1 }, errs.ErrWrongKey},
	} {
		b := bytes.Clone(side)
		tc.mut(b)
		if _, err := OpenPassphraseKey([]byte("correct horse"), b); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v; want %v", tc.name, err, tc.want)
		}
	}
	if _, err := OpenPassphraseKey(nil, side[:10]); !errors.Is(err, errs.ErrCorrupt) {
		t.Errorf("short sidecar: %v", err)
	}
}

func FuzzParseKDFParams(f *testing.F) {
	_, side, _ := NewPassphraseKey([]byte("x"), cheapKDF)
	f.Add(side)
	f.Add([]byte("SEALBDKF"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, err := ParseKDFParams(b); err == nil && p.check() != nil {
			t.Fatalf("accepted out-of-range parameters %+v", p)
		}
	})
}
