package tcg

import (
	"bytes"
	"crypto/aes"
	"errors"
	"math/rand/v2"
	"testing"
)

// TestCBCKnownAnswer is NIST SP 800-38A appendix F.2.1 (CBC-AES128.Encrypt)
// and F.2.2 (the matching decryption).
func TestCBCKnownAnswer(t *testing.T) {
	key := unhex(t, "2b7e151628aed2a6abf7158809cf4f3c")
	iv := unhex(t, "000102030405060708090a0b0c0d0e0f")
	pt := unhex(t, `6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51
		30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710`)
	ct := unhex(t, `7649abac8119b246cee98e9b12e9197d 5086cb9b507219ee95db113a917678b2
		73bed6b8e3c1743b7116e69e22229516 3ff1caa1681fac09120eca307586e1a7`)

	c, _ := LookupBlockCipher(AlgAES, 128)
	b, err := c.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	ivCopy := bytes.Clone(iv)
	got := make([]byte, len(pt))
	if err := CBCEncrypt(b, iv, got, pt); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, ct) {
		t.Errorf("encrypt:\n got %x\nwant %x", got, ct)
	}
	if !bytes.Equal(iv, ivCopy) {
		t.Error("CBCEncrypt modified the IV")
	}
	if err := CBCDecrypt(b, iv, got, ct); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, pt) {
		t.Errorf("decrypt:\n got %x\nwant %x", got, pt)
	}
	if !bytes.Equal(iv, ivCopy) {
		t.Error("CBCDecrypt modified the IV")
	}
}

// TestCBCRoundTrip runs every supported cipher through CBC, in place and
// out of place, with a longer dst than needed.
func TestCBCRoundTrip(t *testing.T) {
	rng := rand.NewChaCha8([32]byte{'c', 'b', 'c'})
	for id, sizes := range blockCipherKeyBits {
		for _, bits := range sizes {
			c, err := LookupBlockCipher(id, bits)
			if err != nil {
				t.Fatal(err)
			}
			key := make([]byte, c.KeySize())
			rng.Read(key)
			b, err := c.NewCipher(key)
			if err != nil {
				t.Fatal(err)
			}
			iv := make([]byte, c.BlockSize)
			rng.Read(iv)
			for _, blocks := range []int{0, 1, 2, 7, 64} {
				pt := make([]byte, blocks*c.BlockSize)
				rng.Read(pt)

				ct := make([]byte, len(pt)+5) // extra room must be left alone
				if err := CBCEncrypt(b, iv, ct, pt); err != nil {
					t.Fatalf("%s: %v", c.Name, err)
				}
				if !bytes.Equal(ct[len(pt):], make([]byte, 5)) {
					t.Errorf("%s: wrote past len(src)", c.Name)
				}
				ct = ct[:len(pt)]
				if blocks > 0 && bytes.Equal(ct, pt) {
					t.Errorf("%s: ciphertext equals plaintext", c.Name)
				}

				inPlace := bytes.Clone(pt)
				if err := CBCEncrypt(b, iv, inPlace, inPlace); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(inPlace, ct) {
					t.Errorf("%s: in-place encryption differs", c.Name)
				}
				if err := CBCDecrypt(b, iv, inPlace, inPlace); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(inPlace, pt) {
					t.Errorf("%s, %d blocks: round trip failed", c.Name, blocks)
				}
			}
		}
	}
}

func TestCBCErrors(t *testing.T) {
	b, _ := aes.NewCipher(make([]byte, 16))
	iv := make([]byte, 16)
	buf := make([]byte, 64)
	tests := []struct {
		name       string
		iv, dst    []byte
		src        []byte
		wantLenErr bool
	}{
		{"unaligned input", iv, buf, buf[:17], true},
		{"unaligned short input", iv, buf, buf[:1], true},
		{"short IV", iv[:8], buf, buf[:16], true},
		{"long IV", make([]byte, 17), buf, buf[:16], true},
		{"nil IV", nil, buf, buf[:16], true},
		{"short output", iv, make([]byte, 16), make([]byte, 32), true},
		{"inexact overlap", iv, buf[1:33], buf[:32], false},
	}
	for _, tc := range tests {
		for _, op := range []struct {
			name string
			f    func() error
		}{
			{"encrypt", func() error { return CBCEncrypt(b, tc.iv, tc.dst, tc.src) }},
			{"decrypt", func() error { return CBCDecrypt(b, tc.iv, tc.dst, tc.src) }},
		} {
			err := op.f()
			if err == nil {
				t.Errorf("%s/%s: no error", tc.name, op.name)
				continue
			}
			if errors.Is(err, ErrInvalidLength) != tc.wantLenErr {
				t.Errorf("%s/%s: err = %v, ErrInvalidLength expected: %v", tc.name, op.name, err, tc.wantLenErr)
			}
		}
	}
	if err := CBCEncrypt(nil, iv, buf, buf); err == nil {
		t.Error("nil block cipher accepted")
	}
}
