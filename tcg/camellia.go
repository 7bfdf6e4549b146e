package tcg

import (
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"math/bits"
)

// Camellia as specified in RFC 3713. See the package documentation for why
// it lives here and for the caveat that it is not constant-time.

// camelliaBlockSize is the Camellia block length in bytes.
const camelliaBlockSize = 16

// camelliaSBox1 is SBOX1 from RFC 3713 section 2.4.1 (given there in
// decimal). SBOX2..SBOX4 are derived from it by rotations, as the RFC
// defines them.
var camelliaSBox1 = [256]byte{
	0x70, 0x82, 0x2c, 0xec, 0xb3, 0x27, 0xc0, 0xe5, 0xe4, 0x85, 0x57, 0x35, 0xea, 0x0c, 0xae, 0x41,
	0x23, 0xef, 0x6b, 0x93, 0x45, 0x19, 0xa5, 0x21, 0xed, 0x0e, 0x4f, 0x4e, 0x1d, 0x65, 0x92, 0xbd,
	0x86, 0xb8, 0xaf, 0x8f, 0x7c, 0xeb, 0x1f, 0xce, 0x3e, 0x30, 0xdc, 0x5f, 0x5e, 0xc5, 0x0b, 0x1a,
	0xa6, 0xe1, 0x39, 0xca, 0xd5, 0x47, 0x5d, 0x3d, 0xd9, 0x01, 0x5a, 0xd6, 0x51, 0x56, 0x6c, 0x4d,
	0x8b, 0x0d, 0x9a, 0x66, 0xfb, 0xcc, 0xb0, 0x2d, 0x74, 0x12, 0x2b, 0x20, 0xf0, 0xb1, 0x84, 0x99,
	0xdf, 0x4c, 0xcb, 0xc2, 0x34, 0x7e, 0x76, 0x05, 0x6d, 0xb7, 0xa9, 0x31, 0xd1, 0x17, 0x04, 0xd7,
	0x14, 0x58, 0x3a, 0x61, 0xde, 0x1b, 0x11, 0x1c, 0x32, 0x0f, 0x9c, 0x16, 0x53, 0x18, 0xf2, 0x22,
	0xfe, 0x44, 0xcf, 0xb2, 0xc3, 0xb5, 0x7a, 0x91, 0x24, 0x08, 0xe8, 0xa8, 0x60, 0xfc, 0x69, 0x50,
	0xaa, 0xd0, 0xa0, 0x7d, 0xa1, 0x89, 0x62, 0x97, 0x54, 0x5b, 0x1e, 0x95, 0xe0, 0xff, 0x64, 0xd2,
	0x10, 0xc4, 0x00, 0x48, 0xa3, 0xf7, 0x75, 0xdb, 0x8a, 0x03, 0xe6, 0xda, 0x09, 0x3f, 0xdd, 0x94,
	0x87, 0x5c, 0x83, 0x02, 0xcd, 0x4a, 0x90, 0x33, 0x73, 0x67, 0xf6, 0xf3, 0x9d, 0x7f, 0xbf, 0xe2,
	0x52, 0x9b, 0xd8, 0x26, 0xc8, 0x37, 0xc6, 0x3b, 0x81, 0x96, 0x6f, 0x4b, 0x13, 0xbe, 0x63, 0x2e,
	0xe9, 0x79, 0xa7, 0x8c, 0x9f, 0x6e, 0xbc, 0x8e, 0x29, 0xf5, 0xf9, 0xb6, 0x2f, 0xfd, 0xb4, 0x59,
	0x78, 0x98, 0x06, 0x6a, 0xe7, 0x46, 0x71, 0xba, 0xd4, 0x25, 0xab, 0x42, 0x88, 0xa2, 0x8d, 0xfa,
	0x72, 0x07, 0xb9, 0x55, 0xf8, 0xee, 0xac, 0x0a, 0x36, 0x49, 0x2a, 0x68, 0x3c, 0x38, 0xf1, 0xa4,
	0x40, 0x28, 0xd3, 0x7b, 0xbb, 0xc9, 0x43, 0xc1, 0x15, 0xe3, 0xad, 0xf4, 0x77, 0xc7, 0x80, 0x9e,
}

// Key schedule constants Sigma1..Sigma6 from RFC 3713 section 2.2.
const (
	camelliaSigma1 = 0xA09E667F3BCC908B
	camelliaSigma2 = 0xB67AE8584CAA73B2
	camelliaSigma3 = 0xC6EF372FE94F82BE
	camelliaSigma4 = 0x54FF53A5F1D36F1C
	camelliaSigma5 = 0x10E527FADE682D1D
	camelliaSigma6 = 0xB05688C2B3E6C1FD
)

// camelliaSP[i][x] is the F-function output caused by input byte i (0 is
// the most significant) having value x: the matching S-box applied, placed
// in byte i, then sent through the P-function. P is linear over XOR, so F
// of a whole word is the XOR of the eight entries, which turns the
// byte-by-byte S and P steps of the RFC into eight table loads.
var camelliaSP = buildCamelliaSP()

func buildCamelliaSP() *[8][256]uint64 {
	var sp [8][256]uint64
	for x := 0; x < 256; x++ {
		s1 := camelliaSBox1[x]
		s2 := bits.RotateLeft8(s1, 1)
		s3 := bits.RotateLeft8(s1, 7)
		s4 := camelliaSBox1[bits.RotateLeft8(uint8(x), 1)]
		// S-box used for each input byte position, per RFC 3713 2.4.1.
		t := [8]byte{s1, s2, s3, s4, s2, s3, s4, s1}
		for i, v := range t {
			sp[i][x] = camelliaP(uint64(v) << (56 - 8*i))
		}
	}
	return &sp
}

// camelliaP is the P-function of RFC 3713 section 2.4.1 on a word whose
// bytes z1..z8 are the S-box outputs. Only used to build camelliaSP.
func camelliaP(z uint64) uint64 {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], z)
	z1, z2, z3, z4, z5, z6, z7, z8 := b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]
	y := [8]byte{
		z1 ^ z3 ^ z4 ^ z6 ^ z7 ^ z8,
		z1 ^ z2 ^ z4 ^ z5 ^ z7 ^ z8,
		z1 ^ z2 ^ z3 ^ z5 ^ z6 ^ z8,
		z2 ^ z3 ^ z4 ^ z5 ^ z6 ^ z7,
		z1 ^ z2 ^ z6 ^ z7 ^ z8,
		z2 ^ z3 ^ z5 ^ z7 ^ z8,
		z3 ^ z4 ^ z5 ^ z6 ^ z8,
		z1 ^ z4 ^ z5 ^ z6 ^ z7,
	}
	return binary.BigEndian.Uint64(y[:])
}

// camelliaF is the F-function with the subkey already XORed into x.
func camelliaF(x uint64) uint64 {
	sp := camelliaSP
	return sp[0][x>>56] ^ sp[1][uint8(x>>48)] ^ sp[2][uint8(x>>40)] ^ sp[3][uint8(x>>32)] ^
		sp[4][uint8(x>>24)] ^ sp[5][uint8(x>>16)] ^ sp[6][uint8(x>>8)] ^ sp[7][uint8(x)]
}

// camelliaFL is the FL-function of RFC 3713 section 2.4.2.
func camelliaFL(x, k uint64) uint64 {
	x1, x2 := uint32(x>>32), uint32(x)
	k1, k2 := uint32(k>>32), uint32(k)
	x2 ^= bits.RotateLeft32(x1&k1, 1)
	x1 ^= x2 | k2
	return uint64(x1)<<32 | uint64(x2)
}

// camelliaFLInv is the FLINV-function of RFC 3713 section 2.4.3.
func camelliaFLInv(y, k uint64) uint64 {
	y1, y2 := uint32(y>>32), uint32(y)
	k1, k2 := uint32(k>>32), uint32(k)
	y1 ^= y2 | k2
	y2 ^= bits.RotateLeft32(y1&k1, 1)
	return uint64(y1)<<32 | uint64(y2)
}

// u128 is a 128-bit key-schedule value (KL, KR, KA, KB in the RFC).
type u128 struct{ hi, lo uint64 }

// rotl rotates v left by n bits, 0 <= n < 128.
func (v u128) rotl(n uint) u128 {
	if n >= 64 {
		v.hi, v.lo = v.lo, v.hi
		n -= 64
	}
	if n == 0 {
		return v
	}
	return u128{v.hi<<n | v.lo>>(64-n), v.lo<<n | v.hi>>(64-n)}
}

// camelliaMaxSubkeys is the number of 64-bit subkeys for 192/256-bit keys:
// kw1-4, k1-24, ke1-6.
const camelliaMaxSubkeys = 34

// camelliaCipher holds both subkey sequences in the exact order the data
// randomizing part consumes them, so encryption and decryption share one
// loop (RFC 3713 2.3.3: decryption is encryption with the subkeys reversed).
type camelliaCipher struct {
	n   int // subkeys in use: 26 for 128-bit keys, 34 otherwise
	enc [camelliaMaxSubkeys]uint64
	dec [camelliaMaxSubkeys]uint64
}

// Indices naming the schedule values KL, KR, KA, KB in a schedule table.
const (
	kL = iota
	kR
	kA
	kB
)

// camelliaSched128 and camelliaSched256 list, in consumption order, which
// value is rotated by how much to give each subkey pair (RFC 3713 2.2).
// Entry i yields subkeys 2i and 2i+1: kw1 kw2, k1 .. k6, ke1 ke2, k7 ..., kw3 kw4.
var (
	camelliaSched128 = [...]struct {
		src int
		rot uint
	}{
		{kL, 0}, {kA, 0}, {kL, 15}, {kA, 15}, {kA, 30}, {kL, 45},
		{kA, 45}, // k9 only; k10 comes from KL<<<60, patched in below
		{kA, 60}, {kL, 77}, {kL, 94}, {kA, 94}, {kL, 111}, {kA, 111},
	}
	camelliaSched256 = [...]struct {
		src int
		rot uint
	}{
		{kL, 0}, {kB, 0}, {kR, 15}, {kA, 15}, {kR, 30}, {kB, 30},
		{kL, 45}, {kA, 45}, {kL, 60}, {kR, 60}, {kB, 60}, {kL, 77},
		{kA, 77}, {kR, 94}, {kA, 94}, {kL, 111}, {kB, 111},
	}
)

// NewCamellia returns a Camellia cipher.Block for a 16, 24 or 32 byte key.
// Any other length yields an error wrapping ErrKeySize.
func NewCamellia(key []byte) (cipher.Block, error) {
	switch len(key) {
	case 16, 24, 32:
	default:
		return nil, fmt.Errorf("tcg: CAMELLIA: %w: %d bytes", ErrKeySize, len(key))
	}

	var k [4]u128
	k[kL] = u128{binary.BigEndian.Uint64(key[0:]), binary.BigEndian.Uint64(key[8:])}
	switch len(key) {
	case 24:
		r := binary.BigEndian.Uint64(key[16:])
		k[kR] = u128{r, ^r}
	case 32:
		k[kR] = u128{binary.BigEndian.Uint64(key[16:]), binary.BigEndian.Uint64(key[24:])}
	}

	// KA and KB per RFC 3713 2.2.
	d1, d2 := k[kL].hi^k[kR].hi, k[kL].lo^k[kR].lo
	d2 ^= camelliaF(d1 ^ camelliaSigma1)
	d1 ^= camelliaF(d2 ^ camelliaSigma2)
	d1 ^= k[kL].hi
	d2 ^= k[kL].lo
	d2 ^= camelliaF(d1 ^ camelliaSigma3)
	d1 ^= camelliaF(d2 ^ camelliaSigma4)
	k[kA] = u128{d1, d2}
	d1, d2 = k[kA].hi^k[kR].hi, k[kA].lo^k[kR].lo
	d2 ^= camelliaF(d1 ^ camelliaSigma5)
	d1 ^= camelliaF(d2 ^ camelliaSigma6)
	k[kB] = u128{d1, d2}

	c := new(camelliaCipher)
	if len(key) == 16 {
		for i, e := range camelliaSched128 {
			v := k[e.src].rotl(e.rot)
			c.enc[2*i], c.enc[2*i+1] = v.hi, v.lo
		}
		// Subkey index 13 is k10 (after kw1 kw2, k1-k6, ke1 ke2, k7-k9).
		c.enc[13] = k[kL].rotl(60).lo
		c.n = 2 * len(camelliaSched128)
	} else {
		for i, e := range camelliaSched256 {
			v := k[e.src].rotl(e.rot)
			c.enc[2*i], c.enc[2*i+1] = v.hi, v.lo
		}
		c.n = 2 * len(camelliaSched256)
	}

	// Reversing the sequence gives the decryption order for the round keys
	// and the FL/FLINV keys alike; only the whitening pairs must keep their
	// internal order (decryption starts with kw3, kw4 and ends with kw1, kw2).
	for i := 0; i < c.n; i++ {
		c.dec[i] = c.enc[c.n-1-i]
	}
	c.dec[0], c.dec[1] = c.dec[1], c.dec[0]
	c.dec[c.n-2], c.dec[c.n-1] = c.dec[c.n-1], c.dec[c.n-2]

	return c, nil
}

// BlockSize returns the Camellia block size, 16 bytes.
func (c *camelliaCipher) BlockSize() int { return camelliaBlockSize }

// Encrypt encrypts the first block of src into dst. Like the standard
// library's ciphers it panics if either is shorter than a block, as the
// cipher.Block contract expects. dst and src may overlap.
func (c *camelliaCipher) Encrypt(dst, src []byte) { c.crypt(c.enc[:c.n], dst, src) }

// Decrypt decrypts the first block of src into dst, with the same rules as
// Encrypt.
func (c *camelliaCipher) Decrypt(dst, src []byte) { c.crypt(c.dec[:c.n], dst, src) }

// crypt runs the data randomizing part of RFC 3713 2.3 with the subkeys ks
// in consumption order.
func (c *camelliaCipher) crypt(ks []uint64, dst, src []byte) {
	if len(src) < camelliaBlockSize {
		panic("tcg: CAMELLIA: input not full block")
	}
	if len(dst) < camelliaBlockSize {
		panic("tcg: CAMELLIA: output not full block")
	}
	// Both halves are read before anything is written, which is what makes
	// overlapping dst and src safe.
	d1 := binary.BigEndian.Uint64(src[0:]) ^ ks[0]
	d2 := binary.BigEndian.Uint64(src[8:]) ^ ks[1]
	ks = ks[2:]
	for {
		d2 ^= camelliaF(d1 ^ ks[0])
		d1 ^= camelliaF(d2 ^ ks[1])
		d2 ^= camelliaF(d1 ^ ks[2])
		d1 ^= camelliaF(d2 ^ ks[3])
		d2 ^= camelliaF(d1 ^ ks[4])
		d1 ^= camelliaF(d2 ^ ks[5])
		ks = ks[6:]
		if len(ks) == 2 {
			break
		}
		d1 = camelliaFL(d1, ks[0])
		d2 = camelliaFLInv(d2, ks[1])
		ks = ks[2:]
	}
	d2 ^= ks[0]
	d1 ^= ks[1]
	binary.BigEndian.PutUint64(dst[0:], d2)
	binary.BigEndian.PutUint64(dst[8:], d1)
}
