package bd

import (
	"bytes"
	"crypto/aes"
	"testing"

	"golang.org/x/crypto/xts"
)

// TestXTSMatchesXCrypto checks the fast XTS loop against
// golang.org/x/crypto/xts for several sectors and unit sizes.
func TestXTSMatchesXCrypto(t *testing.T) {
	ref, err := xts.NewCipher(aes.NewCipher, testCryptKey)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := newXTS(testCryptKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{16, 512, 4096} {
		for _, sector := range []uint64{0, 1, 255, 1 << 40, ^uint64(0)} {
			pt := pattern(n, sector+uint64(n))
			want, got := make([]byte, n), make([]byte, n)
			ref.Encrypt(want, pt, sector)
			ours.Encrypt(got, pt, sector)
			if !bytes.Equal(got, want) {
				t.Fatalf("n %d sector %d: encryption differs from x/crypto/xts", n, sector)
			}
			ours.Decrypt(got, got, sector)
			if !bytes.Equal(got, pt) {
				t.Fatalf("n %d sector %d: decryption does not invert", n, sector)
			}
		}
	}
}
