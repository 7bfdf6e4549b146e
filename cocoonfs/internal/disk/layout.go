package disk

import "encoding/binary"

// LayoutLen is the length of an encoded image layout.
const LayoutLen = 21

// Layout holds the filesystem image layout parameters stored in the static
// image header and in the filesystem creation info header.
type Layout struct {
	AllocBlockLog2128     uint8 // allocation_block_size_128b_log2
	IOBlockLog2           uint8 // io_block_allocation_blocks_log2 (<= 6)
	AuthTreeNodeLog2      uint8 // auth_tree_node_io_blocks_log2
	AuthTreeDataBlockLog2 uint8 // auth_tree_data_block_allocation_blocks_log2 (<= 6)
	BitmapBlockLog2       uint8 // allocation_bitmap_file_block_allocation_blocks_log2
	IndexLeafLog2         uint8 // index_tree_leaf_node_allocation_blocks_log2 (<= 6)
	IndexInternalLog2     uint8 // index_tree_internal_node_allocation_blocks_log2 (<= 6)

	AuthTreeNodeHash     uint16 // auth_tree_node_hash_alg (TCG id)
	AuthTreeDataHMACHash uint16 // auth_tree_data_hmac_hash_alg (TCG id)
	AuthTreeRootHMACHash uint16 // auth_tree_root_hmac_hash_alg (TCG id)
	PreauthHMACHash      uint16 // preauth_cca_protection_hmac_hash_alg (TCG id)
	KDFHash              uint16 // kdf_hash_alg (TCG id)
	Cipher               uint16 // block_cipher_alg id (TCG id)
	CipherKeyBits        uint16 // block_cipher_alg key size in bits
}

// DecodeLayout decodes and validates an encoded image layout. Algorithm ids
// are not checked; that is the caller's job.
func DecodeLayout(b []byte) (Layout, error) {
	if len(b) < LayoutLen {
		return Layout{}, errf(ErrCorrupt, "image layout: %d bytes, need %d", len(b), LayoutLen)
	}
	l := Layout{
		AllocBlockLog2128:     b[0],
		IOBlockLog2:           b[1],
		AuthTreeNodeLog2:      b[2],
		AuthTreeDataBlockLog2: b[3],
		BitmapBlockLog2:       b[4],
		IndexLeafLog2:         b[5],
		IndexInternalLog2:     b[6],
		AuthTreeNodeHash:      binary.BigEndian.Uint16(b[7:]),
		AuthTreeDataHMACHash:  binary.BigEndian.Uint16(b[9:]),
		AuthTreeRootHMACHash:  binary.BigEndian.Uint16(b[11:]),
		PreauthHMACHash:       binary.BigEndian.Uint16(b[13:]),
		KDFHash:               binary.BigEndian.Uint16(b[15:]),
		Cipher:                binary.BigEndian.Uint16(b[17:]),
		CipherKeyBits:         binary.BigEndian.Uint16(b[19:]),
	}
	if err := l.Validate(); err != nil {
		return Layout{}, err
	}
	return l, nil
}

// Append appends the 21-byte encoding of l to dst.
// Layout: 7 x log2 u8 | 5 x hash alg u16be | cipher alg u16be | key bits u16be.
func (l Layout) Append(dst []byte) []byte {
	dst = append(dst, l.AllocBlockLog2128, l.IOBlockLog2, l.AuthTreeNodeLog2,
		l.AuthTreeDataBlockLog2, l.BitmapBlockLog2, l.IndexLeafLog2, l.IndexInternalLog2)
	for _, v := range [...]uint16{l.AuthTreeNodeHash, l.AuthTreeDataHMACHash, l.AuthTreeRootHMACHash,
		l.PreauthHMACHash, l.KDFHash, l.Cipher, l.CipherKeyBits} {
		dst = binary.BigEndian.AppendUint16(dst, v)
	}
	return dst
}

// Validate checks the size parameters: the spec caps the IO Block, the
// Authentication Tree Data Block and both index node sizes at 64 Allocation
// Blocks, and, as in the reference's ImageLayout::new(), every size in bytes
// must be representable in 63 bits so that byte offsets never overflow.
func (l Layout) Validate() error {
	a := uint(l.AllocBlockLog2128)
	checks := []struct {
		name string
		v    uint8
		max6 bool
		base uint // log2 of the unit in bytes
	}{
		{"allocation_block_size_128b_log2", l.AllocBlockLog2128, false, 7},
		{"io_block_allocation_blocks_log2", l.IOBlockLog2, true, a + 7},
		{"auth_tree_data_block_allocation_blocks_log2", l.AuthTreeDataBlockLog2, true, a + 7},
		{"allocation_bitmap_file_block_allocation_blocks_log2", l.BitmapBlockLog2, false, a + 7},
		{"index_tree_leaf_node_allocation_blocks_log2", l.IndexLeafLog2, true, a + 7},
		{"index_tree_internal_node_allocation_blocks_log2", l.IndexInternalLog2, true, a + 7},
		{"auth_tree_node_io_blocks_log2", l.AuthTreeNodeLog2, false, a + 7 + uint(l.IOBlockLog2)},
	}
	for _, c := range checks {
		if c.max6 && c.v > 6 {
			return errf(ErrCorrupt, "image layout: %s = %d exceeds 6", c.name, c.v)
		}
		if c.base+uint(c.v) >= 63 {
			return errf(ErrCorrupt, "image layout: %s = %d gives a size of 2^%d bytes", c.name, c.v, c.base+uint(c.v))
		}
	}
	return nil
}

// AllocBlockSize returns the Allocation Block size in bytes.
func (l Layout) AllocBlockSize() uint64 { return 128 << l.AllocBlockLog2128 }

// IOBlockSize returns the IO Block size in bytes.
func (l Layout) IOBlockSize() uint64 { return l.AllocBlockSize() << l.IOBlockLog2 }

// AuthTreeNodeSize returns the authentication tree node size in bytes.
func (l Layout) AuthTreeNodeSize() uint64 { return l.IOBlockSize() << l.AuthTreeNodeLog2 }

// AuthTreeDataBlockSize returns the Authentication Tree Data Block size in bytes.
func (l Layout) AuthTreeDataBlockSize() uint64 { return l.AllocBlockSize() << l.AuthTreeDataBlockLog2 }

// BitmapBlockSize returns the allocation bitmap file block size in bytes.
func (l Layout) BitmapBlockSize() uint64 { return l.AllocBlockSize() << l.BitmapBlockLog2 }

// IndexLeafSize returns the inode index leaf node size in bytes.
func (l Layout) IndexLeafSize() uint64 { return l.AllocBlockSize() << l.IndexLeafLog2 }

// IndexInternalSize returns the inode index internal node size in bytes.
func (l Layout) IndexInternalSize() uint64 { return l.AllocBlockSize() << l.IndexInternalLog2 }

// ioLog2128 is log2 of the IO Block size in units of 128 bytes, i.e. the
// number of tier 1 checkpoint locations in an integrity protected extent.
func (l Layout) ioLog2128() int { return int(l.IOBlockLog2) + int(l.AllocBlockLog2128) }

// journalBlockLog2 is log2 of the journal block (larger of IO Block and
// Authentication Tree Data Block) in Allocation Blocks.
func (l Layout) journalBlockLog2() uint {
	return uint(max(l.IOBlockLog2, l.AuthTreeDataBlockLog2))
}

// roundUp rounds v up to a multiple of the power of two 1<<log2.
func roundUp(v uint64, log2 uint) uint64 {
	m := uint64(1)<<log2 - 1
	return (v + m) &^ m
}
