package bd

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
)

// xtsCipher is AES-XTS (IEEE 1619) over whole data units with a 64-bit
// little-endian sector number as the tweak, as dm-crypt's plain64 IV.
//
// golang.org/x/crypto/xts computes the same (TestXTSMatchesXCrypto), but
// at about 300 MB/s here: it multiplies the tweak byte by byte. This loop
// keeps the tweak in two uint64s and runs at the speed of the AES block
// calls, which is what gets Crypt past 1 GB/s.
type xtsCipher struct {
	k1, k2 cipher.Block
}

func newXTS(key []byte) (*xtsCipher, error) {
	if len(key) != CryptKeySize {
		return nil, fmt.Errorf("bd: AES-256-XTS key is %d bytes, want %d", len(key), CryptKeySize)
	}
	k1, err := aes.NewCipher(key[:32])
	if err != nil {
		return nil, err
	}
	k2, err := aes.NewCipher(key[32:])
	if err != nil {
		return nil, err
	}
	return &xtsCipher{k1, k2}, nil
}

// crypt en- or decrypts src (a multiple of 16 bytes, at most 4096) into
// dst, which may be src itself. It runs in three passes — mask, AES in
// place, mask — so the AES calls work on independent memory and the CPU
// overlaps them.
func (x *xtsCipher) crypt(dst, src []byte, sector uint64, decrypt bool) {
	var masks [4096]byte
	var t [16]byte
	binary.LittleEndian.PutUint64(t[:8], sector)
	x.k2.Encrypt(t[:], t[:])
	lo, hi := binary.LittleEndian.Uint64(t[:8]), binary.LittleEndian.Uint64(t[8:])
	n := len(src) &^ 15
	for i := 0; i < n; i += 16 {
		binary.LittleEndian.PutUint64(masks[i:], lo)
		binary.LittleEndian.PutUint64(masks[i+8:], hi)
		// t ← t·α in GF(2^128), little-endian: shift left one bit, reduce
		// by x^128 + x^7 + x^2 + x + 1.
		carry := hi >> 63
		hi = hi<<1 | lo>>63
		lo = lo<<1 ^ 0x87*carry
	}
	subtle.XORBytes(dst[:n], src[:n], masks[:n])
	if decrypt {
		for i := 0; i < n; i += 16 {
			x.k1.Decrypt(dst[i:i+16], dst[i:i+16])
		}
	} else {
		for i := 0; i < n; i += 16 {
			x.k1.Encrypt(dst[i:i+16], dst[i:i+16])
		}
	}
	subtle.XORBytes(dst[:n], dst[:n], masks[:n])
}

// Encrypt encrypts one data unit.
func (x *xtsCipher) Encrypt(dst, src []byte, sector uint64) { x.crypt(dst, src, sector, false) }

// Decrypt decrypts one data unit.
func (x *xtsCipher) Decrypt(dst, src []byte, sector uint64) { x.crypt(dst, src, sector, true) }
