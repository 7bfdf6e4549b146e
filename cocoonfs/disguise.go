package cocoonfs

import (
	"crypto/cipher"
	"encoding/binary"
	"fmt"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
	"github.com/sealfs/sealfs/tcg"
)

// Journal staging copy disguising (spec "Journal staging copy disguising"):
// each allocation block of a staging copy is encrypted with a one-time key
// in CBC mode, with an IV that is the encryption (under a second one-time
// key) of the block's target and staging locations. Identical blocks no
// longer pair staging copies with their targets, so an observer of the
// image at rest cannot tell which free blocks hold them.
type disguise struct {
	c, iv cipher.Block
}

func newDisguise(d *disk.StagingDisguise) (*disguise, error) {
	bc, err := tcg.LookupBlockCipher(tcg.AlgID(d.Cipher), int(d.KeyBits))
	if err != nil {
		return nil, fmt.Errorf("cocoonfs: journal staging disguise: %w", err)
	}
	c, err := bc.NewCipher(d.Key)
	if err != nil {
		return nil, fmt.Errorf("cocoonfs: journal staging disguise key: %w", err)
	}
	iv, err := bc.NewCipher(d.IVKey)
	if err != nil {
		return nil, fmt.Errorf("cocoonfs: journal staging disguise IV key: %w", err)
	}
	return &disguise{c: c, iv: iv}, nil
}

// freshDisguise makes one-time keys for a transaction with the image's cipher.
func (f *FS) freshDisguise() (*disguise, *disk.StagingDisguise, error) {
	n := f.algs.cipher.KeySize()
	d := &disk.StagingDisguise{Cipher: f.layout.Cipher, KeyBits: f.layout.CipherKeyBits, Key: randomBytes(n), IVKey: randomBytes(n)}
	g, err := newDisguise(d)
	return g, d, err
}

// blockIV is the IV of one allocation block: the target and staging
// allocation block indices (u64 LE each), fitted to the cipher block from
// the front, encrypted with the IV key.
func (g *disguise) blockIV(target, source uint64) []byte {
	bs := g.iv.BlockSize()
	loc := binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, target), source)
	in := make([]byte, bs)
	if len(loc) >= bs {
		copy(in, loc[len(loc)-bs:])
	} else {
		copy(in[bs-len(loc):], loc)
	}
	out := make([]byte, bs)
	g.iv.Encrypt(out, in)
	return out
}

// transform disguises (encrypt) or undisguises a staging copy in place;
// buf holds whole allocation blocks starting at the given target and
// staging allocation block indices.
func (g *disguise) transform(encrypt bool, buf []byte, target, source, ab uint64) {
	for i := uint64(0); i*ab < uint64(len(buf)); i++ {
		blk := buf[i*ab : (i+1)*ab]
		iv := g.blockIV(target+i, source+i)
		if encrypt {
			cipher.NewCBCEncrypter(g.c, iv).CryptBlocks(blk, blk)
		} else {
			cipher.NewCBCDecrypter(g.c, iv).CryptBlocks(blk, blk)
		}
	}
}
