package tcg

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestLookupBlockCipher(t *testing.T) {
	tests := []struct {
		id      AlgID
		keyBits int
		name    string
	}{
		{AlgAES, 128, "AES-128"},
		{AlgAES, 192, "AES-192"},
		{AlgAES, 256, "AES-256"},
		{AlgCamellia, 128, "CAMELLIA-128"},
		{AlgCamellia, 192, "CAMELLIA-192"},
		{AlgCamellia, 256, "CAMELLIA-256"},
		{AlgSM4, 128, "SM4-128"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LookupBlockCipher(tc.id, tc.keyBits)
			if err != nil {
				t.Fatal(err)
			}
			if c.ID != tc.id || c.KeyBits != tc.keyBits || c.BlockSize != 16 || c.Name != tc.name {
				t.Errorf("descriptor = %+v", *c)
			}
			if c.KeySize() != tc.keyBits/8 {
				t.Errorf("KeySize() = %d", c.KeySize())
			}
			b, err := c.NewCipher(make([]byte, c.KeySize()))
			if err != nil {
				t.Fatal(err)
			}
			if b.BlockSize() != c.BlockSize {
				t.Errorf("cipher block size %d, descriptor %d", b.BlockSize(), c.BlockSize)
			}
			// Every wrong length must be an error, not a panic.
			for _, n := range []int{0, 1, c.KeySize() - 1, c.KeySize() + 1, 64} {
				if _, err := c.NewCipher(make([]byte, n)); !errors.Is(err, ErrKeySize) {
					t.Errorf("NewCipher(%d-byte key): err = %v, want ErrKeySize", n, err)
				}
			}
		})
	}
}

func TestLookupBlockCipherErrors(t *testing.T) {
	tests := []struct {
		id      AlgID
		keyBits int
	}{
		{AlgAES, 100},
		{AlgAES, 0},
		{AlgAES, -128},
		{AlgCamellia, 64},
		{AlgCamellia, 512},
		{AlgSM4, 256},
		{AlgID(0x1234), 128},
		{AlgSHA256, 256},
		{AlgCBC, 128},
		{AlgNull, 0},
	}
	for _, tc := range tests {
		c, err := LookupBlockCipher(tc.id, tc.keyBits)
		if c != nil || !errors.Is(err, ErrUnsupportedAlgorithm) {
			t.Errorf("LookupBlockCipher(%s, %d) = %v, %v; want nil, ErrUnsupportedAlgorithm", tc.id, tc.keyBits, c, err)
		}
	}
}

// TestNewCipherHandMadeDescriptor covers a BlockCipher built without
// LookupBlockCipher: NewCipher must refuse it rather than misbehave.
func TestNewCipherHandMadeDescriptor(t *testing.T) {
	c := &BlockCipher{ID: AlgAES, KeyBits: 100, BlockSize: 16, Name: "AES-100"}
	if _, err := c.NewCipher(make([]byte, 12)); !errors.Is(err, ErrUnsupportedAlgorithm) {
		t.Errorf("err = %v, want ErrUnsupportedAlgorithm", err)
	}
	c = &BlockCipher{ID: AlgID(0x7777), KeyBits: 128}
	if _, err := c.NewCipher(make([]byte, 16)); !errors.Is(err, ErrUnsupportedAlgorithm) {
		t.Errorf("err = %v, want ErrUnsupportedAlgorithm", err)
	}
}

func TestKeyNotInErrors(t *testing.T) {
	key := []byte("SECRETSECRETSECRETSECRET!") // 25 bytes: wrong for everything
	for _, id := range []AlgID{AlgAES, AlgCamellia, AlgSM4} {
		c, _ := LookupBlockCipher(id, 128)
		_, err := c.NewCipher(key)
		if err == nil {
			t.Fatalf("%s accepted a 25-byte key", id)
		}
		if msg := err.Error(); strings.Contains(msg, "SECRET") || strings.Contains(msg, "534543524554") {
			t.Errorf("%s error leaks key material: %q", id, msg)
		}
	}
}

// TestSM4KnownAnswer is the example of GB/T 32907-2016 appendix A.1.
func TestSM4KnownAnswer(t *testing.T) {
	c, err := LookupBlockCipher(AlgSM4, 128)
	if err != nil {
		t.Fatal(err)
	}
	kp := unhex(t, "0123456789abcdeffedcba9876543210")
	b, err := c.NewCipher(kp)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 16)
	b.Encrypt(got, kp)
	if want := unhex(t, "681edf34d206965e86b3e94f536e4246"); !bytes.Equal(got, want) {
		t.Errorf("SM4 encrypt = %x, want %x", got, want)
	}
	b.Decrypt(got, got)
	if !bytes.Equal(got, kp) {
		t.Errorf("SM4 decrypt = %x, want %x", got, kp)
	}
}

// TestAESKnownAnswer is FIPS 197 appendix C.1, mostly to prove the AES
// plumbing goes to AES.
func TestAESKnownAnswer(t *testing.T) {
	c, _ := LookupBlockCipher(AlgAES, 128)
	b, err := c.NewCipher(unhex(t, "000102030405060708090a0b0c0d0e0f"))
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 16)
	b.Encrypt(got, unhex(t, "00112233445566778899aabbccddeeff"))
	if want := unhex(t, "69c4e0d86a7b0430d8cdb78070b4c55a"); !bytes.Equal(got, want) {
		t.Errorf("AES-128 encrypt = %x, want %x", got, want)
	}
}
