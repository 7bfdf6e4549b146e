package tcg

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"

	"github.com/emmansun/gmsm/sm4"
)

// BlockCipher describes a block cipher from the TCG registry at one key
// size. TPM 2.0 structures (and CocoonFS) name a symmetric cipher as an
// (algorithm, key bits) pair, hence the two-part lookup.
type BlockCipher struct {
	// ID is the algorithm's TCG registry identifier.
	ID AlgID
	// KeyBits is the key length in bits.
	KeyBits int
	// BlockSize is the cipher block length in bytes.
	BlockSize int
	// Name is a human-readable name such as "AES-128" or "CAMELLIA-256".
	Name string
}

// blockCipherKeyBits lists the key sizes each supported cipher accepts.
var blockCipherKeyBits = map[AlgID][]int{
	AlgAES:      {128, 192, 256},
	AlgCamellia: {128, 192, 256},
	AlgSM4:      {128},
}

// LookupBlockCipher returns the block cipher with the given identifier and
// key size in bits. The error wraps ErrUnsupportedAlgorithm if the
// identifier is not a supported cipher or the cipher has no such key size.
func LookupBlockCipher(id AlgID, keyBits int) (*BlockCipher, error) {
	sizes, ok := blockCipherKeyBits[id]
	if !ok {
		return nil, fmt.Errorf("tcg: %w: block cipher %s", ErrUnsupportedAlgorithm, id.describe())
	}
	for _, s := range sizes {
		if s == keyBits {
			return &BlockCipher{
				ID:        id,
				KeyBits:   keyBits,
				BlockSize: 16, // all of AES, Camellia and SM4 use 128-bit blocks
				Name:      fmt.Sprintf("%s-%d", id, keyBits),
			}, nil
		}
	}
	return nil, fmt.Errorf("tcg: %w: block cipher %s with %d-bit key", ErrUnsupportedAlgorithm, id.describe(), keyBits)
}

// KeySize returns the key length in bytes.
func (c *BlockCipher) KeySize() int {
	return c.KeyBits / 8
}

// NewCipher returns a cipher.Block for key. It returns an error wrapping
// ErrKeySize, rather than panicking, when len(key) does not match KeySize,
// and one wrapping ErrUnsupportedAlgorithm if c was not obtained from
// LookupBlockCipher and describes no supported cipher.
func (c *BlockCipher) NewCipher(key []byte) (cipher.Block, error) {
	// Re-validate: c is a plain struct a caller may have filled in by hand.
	if _, err := LookupBlockCipher(c.ID, c.KeyBits); err != nil {
		return nil, err
	}
	if len(key) != c.KeySize() {
		return nil, fmt.Errorf("tcg: %s: %w: got %d bytes, want %d", c.Name, ErrKeySize, len(key), c.KeySize())
	}
	var (
		b   cipher.Block
		err error
	)
	switch c.ID {
	case AlgAES:
		b, err = aes.NewCipher(key)
	case AlgCamellia:
		b, err = NewCamellia(key)
	case AlgSM4:
		b, err = sm4.NewCipher(key)
	}
	if err != nil {
		// The length was checked above, so this is not expected; the
		// underlying message is dropped in case a library ever includes
		// key bytes in it.
		return nil, fmt.Errorf("tcg: %s: cannot create cipher", c.Name)
	}
	return b, nil
}
