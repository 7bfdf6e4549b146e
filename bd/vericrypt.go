package bd

import (
	"context"

	"github.com/sealfs/sealfs/blockdev"
)

// VeriCrypt is Crypt stacked on Verity: blocks are encrypted with
// AES-256-XTS and the Merkle tree covers the ciphertext, so a tampered
// block is rejected before it is decrypted, and the tree (and a
// `sealfs bd verify`) can be checked without the encryption key.
//
// Safe for concurrent use, as Verity.
type VeriCrypt struct {
	*Crypt
	verity *Verity
}

// VeriCryptOptions configure FormatVeriCrypt and OpenVeriCrypt; nil means
// defaults.
type VeriCryptOptions struct {
	// BlockSize is both the XTS data unit and the verity block: 512, 1024,
	// 2048 or 4096 (0: 4096).
	BlockSize int

	// TreeCache and Progress are VerityOptions' (the tree covers the
	// ciphertext).
	TreeCache int64
	Progress  func(done, total uint64)
}

func (o *VeriCryptOptions) split() (*CryptOptions, *VerityOptions) {
	if o == nil {
		return &CryptOptions{}, &VerityOptions{}
	}
	return &CryptOptions{BlockSize: o.BlockSize}, &VerityOptions{BlockSize: o.BlockSize, TreeCache: o.TreeCache, Progress: o.Progress}
}

// FormatVeriCrypt builds the tree over data's current (cipher)text, as
// FormatVerity, and returns the device.
func FormatVeriCrypt(ctx context.Context, data, tree blockdev.Device, cryptKey, macKey []byte, opts *VeriCryptOptions) (*VeriCrypt, error) {
	co, vo := opts.split()
	v, err := FormatVerity(ctx, data, tree, macKey, vo)
	if err != nil {
		return nil, err
	}
	return newVeriCrypt(v, cryptKey, co)
}

// OpenVeriCrypt opens data and tree against the trusted root, as OpenVerity.
func OpenVeriCrypt(data, tree blockdev.Device, cryptKey, macKey, root []byte, opts *VeriCryptOptions) (*VeriCrypt, error) {
	co, vo := opts.split()
	v, err := OpenVerity(data, tree, macKey, root, vo)
	if err != nil {
		return nil, err
	}
	return newVeriCrypt(v, cryptKey, co)
}

func newVeriCrypt(v *Verity, cryptKey []byte, co *CryptOptions) (*VeriCrypt, error) {
	c, err := NewCrypt(v, cryptKey, co)
	if err != nil {
		return nil, err
	}
	return &VeriCrypt{Crypt: c, verity: v}, nil
}

// Root returns the current root hash of the tree over the ciphertext.
func (vc *VeriCrypt) Root() []byte { return vc.verity.Root() }

// Verity returns the integrity layer, for Check.
func (vc *VeriCrypt) Verity() *Verity { return vc.verity }
