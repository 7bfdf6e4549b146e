package tcg

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/sha512"
	"fmt"
	"hash"

	"github.com/emmansun/gmsm/sm3"
)

// Hash describes a hash algorithm from the TCG registry together with a
// constructor for it.
type Hash struct {
	// ID is the algorithm's TCG registry identifier.
	ID AlgID
	// Name is the TCG registry name, the same as ID.String().
	Name string
	// Size is the digest length in bytes.
	Size int
	// BlockSize is the hash's input block size in bytes, the quantity HMAC
	// pads keys to.
	BlockSize int
	// New returns a fresh hash.Hash computing this algorithm.
	New func() hash.Hash
}

// hashes is keyed by identifier rather than being a switch so that the
// supported set is visible in one place.
var hashes = map[AlgID]Hash{
	AlgSHA1:     {AlgSHA1, "SHA1", sha1.Size, sha1.BlockSize, sha1.New},
	AlgSHA256:   {AlgSHA256, "SHA256", sha256.Size, sha256.BlockSize, sha256.New},
	AlgSHA384:   {AlgSHA384, "SHA384", sha512.Size384, sha512.BlockSize, sha512.New384},
	AlgSHA512:   {AlgSHA512, "SHA512", sha512.Size, sha512.BlockSize, sha512.New},
	AlgSM3_256:  {AlgSM3_256, "SM3_256", sm3.Size, sm3.BlockSize, sm3.New},
	AlgSHA3_256: {AlgSHA3_256, "SHA3_256", 32, 136, func() hash.Hash { return sha3.New256() }},
	AlgSHA3_384: {AlgSHA3_384, "SHA3_384", 48, 104, func() hash.Hash { return sha3.New384() }},
	AlgSHA3_512: {AlgSHA3_512, "SHA3_512", 64, 72, func() hash.Hash { return sha3.New512() }},
}

// LookupHash returns the hash algorithm with the given identifier. The
// error wraps ErrUnsupportedAlgorithm if id is not a hash this package
// implements.
func LookupHash(id AlgID) (*Hash, error) {
	h, ok := hashes[id]
	if !ok {
		return nil, fmt.Errorf("tcg: %w: hash %s", ErrUnsupportedAlgorithm, id.describe())
	}
	// A copy, so that a caller modifying the result cannot corrupt the
	// registry for everyone else.
	return &h, nil
}

// NewHMAC returns an HMAC (RFC 2104) keyed with key over this hash.
func (h *Hash) NewHMAC(key []byte) hash.Hash {
	return hmac.New(h.New, key)
}

// Sum returns the digest of the concatenation of data. It saves callers the
// New/Write/Sum dance for the common one-shot case.
func (h *Hash) Sum(data ...[]byte) []byte {
	d := h.New()
	for _, p := range data {
		d.Write(p)
	}
	return d.Sum(nil)
}
