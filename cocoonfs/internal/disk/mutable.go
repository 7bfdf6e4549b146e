package disk

import "encoding/binary"

// The mutable image header (reference image_header.rs MutableImageHeader)
// sits at the first IO Block boundary after the static header, i.e. at
// StaticHeader.Len(). It has no integrity protection of its own (it is
// covered by the journal and the authentication tree) and is padded with
// zeros to a whole number of Allocation Blocks; the reference reads exactly
// ceil(encoded length / Allocation Block) blocks.

// updateCounterLen is the plaintext filesystem update counter length.
const updateCounterLen = 16

// MutableHeader is the plaintext container of the mutable image header; the
// filesystem update counter stays encrypted, decrypting it is the caller's.
type MutableHeader struct {
	AuxHeads             [2]ExtentPtr // aux metadata update groups' head extents
	RootHMAC             []byte       // auth tree root HMAC (auth_tree_root_hmac_hash_alg)
	EncryptedCounter     []byte       // encrypted update counter, 16 B rounded up to the cipher block
	EntryLeafPreauthHMAC []byte       // inode index entry leaf preauth HMAC (preauth_cca_protection_hmac_hash_alg)
	EntryLeaf            BlockPtr     // inode index entry leaf node
	ImageSizeAllocBlocks uint64       // image size in Allocation Blocks
}

// MutableHeaderOffset returns the byte offset of the mutable image header.
func MutableHeaderOffset(h StaticHeader) uint64 { return h.Len() }

// EncryptedCounterLen returns the encrypted update counter's length for a
// block cipher with cipherBlockLen byte blocks.
func EncryptedCounterLen(cipherBlockLen int) int {
	if cipherBlockLen <= 0 {
		return updateCounterLen
	}
	return (updateCounterLen + cipherBlockLen - 1) / cipherBlockLen * cipherBlockLen
}

// MutableHeaderLen returns the encoded length of the mutable header without
// the Allocation Block padding.
func MutableHeaderLen(rootDigestLen, cipherBlockLen, preauthDigestLen int) int {
	return 16 + rootDigestLen + EncryptedCounterLen(cipherBlockLen) + preauthDigestLen + 8 + 8
}

// MutableHeaderPaddedLen returns the mutable header's length on the medium.
func MutableHeaderPaddedLen(l Layout, rootDigestLen, cipherBlockLen, preauthDigestLen int) uint64 {
	return roundUp(uint64(MutableHeaderLen(rootDigestLen, cipherBlockLen, preauthDigestLen)), uint(l.AllocBlockLog2128)+7)
}

func checkDigestLens(what string, lens ...int) error {
	for _, n := range lens {
		if n <= 0 || n > 1024 {
			return errf(errArg, "%s: length parameter %d", what, n)
		}
	}
	return nil
}

// DecodeMutableHeader decodes the mutable image header from b (at least
// MutableHeaderLen bytes). The layout is needed to validate the entry leaf
// pointer and the image size the way the reference does (image size must be
// a multiple of the IO Block and fit 2^64 bytes; entry leaf non-NIL). The aux
// head pointers are checked with CheckAuxHeads. Byte slices alias b.
// Layout: aux heads 2 x u64le | root hmac | enc counter | preauth hmac | entry leaf u64le | image size u64le | pad.
func DecodeMutableHeader(b []byte, l Layout, rootDigestLen, cipherBlockLen, preauthDigestLen int) (MutableHeader, error) {
	if err := checkDigestLens("mutable header", rootDigestLen, cipherBlockLen, preauthDigestLen); err != nil {
		return MutableHeader{}, err
	}
	need := MutableHeaderLen(rootDigestLen, cipherBlockLen, preauthDigestLen)
	if len(b) < need {
		return MutableHeader{}, errf(ErrCorrupt, "mutable header: %d bytes, need %d", len(b), need)
	}
	var h MutableHeader
	h.AuxHeads[0] = ReadExtentPtr(b[0:])
	h.AuxHeads[1] = ReadExtentPtr(b[8:])
	off := 16
	take := func(n int) []byte {
		s := b[off : off+n : off+n]
		off += n
		return s
	}
	h.RootHMAC = take(rootDigestLen)
	h.EncryptedCounter = take(EncryptedCounterLen(cipherBlockLen))
	h.EntryLeafPreauthHMAC = take(preauthDigestLen)
	h.EntryLeaf = ReadBlockPtr(take(8))
	h.ImageSizeAllocBlocks = binary.LittleEndian.Uint64(take(8))

	if err := CheckAuxHeads(h.AuxHeads, l); err != nil {
		return MutableHeader{}, err
	}
	if h.EntryLeaf.IsNil() {
		return MutableHeader{}, errf(ErrCorrupt, "mutable header: inode index entry leaf pointer is NIL")
	}
	if err := h.EntryLeaf.Check(l); err != nil {
		return MutableHeader{}, errf(ErrCorrupt, "mutable header: inode index entry leaf: %v", err)
	}
	sz := h.ImageSizeAllocBlocks
	if sz>>(57-uint(l.AllocBlockLog2128)) != 0 || sz&(uint64(1)<<l.IOBlockLog2-1) != 0 {
		return MutableHeader{}, errf(ErrCorrupt, "mutable header: image size %d Allocation Blocks is not a multiple of the IO Block or exceeds 2^64 bytes", sz)
	}
	return h, nil
}

// EncodeMutableHeader returns the Allocation Block padded mutable header.
// Layout: aux heads 2 x u64le | root hmac | enc counter | preauth hmac | entry leaf u64le | image size u64le | zero pad.
func EncodeMutableHeader(h MutableHeader, l Layout) ([]byte, error) {
	if len(h.RootHMAC) == 0 || len(h.EntryLeafPreauthHMAC) == 0 || len(h.EncryptedCounter) < updateCounterLen {
		return nil, errf(errArg, "mutable header: digest or counter missing")
	}
	n := 16 + len(h.RootHMAC) + len(h.EncryptedCounter) + len(h.EntryLeafPreauthHMAC) + 16
	buf := make([]byte, 0, roundUp(uint64(n), uint(l.AllocBlockLog2128)+7))
	buf = h.AuxHeads[0].Append(buf)
	buf = h.AuxHeads[1].Append(buf)
	buf = append(buf, h.RootHMAC...)
	buf = append(buf, h.EncryptedCounter...)
	buf = append(buf, h.EntryLeafPreauthHMAC...)
	buf = h.EntryLeaf.Append(buf)
	buf = binary.LittleEndian.AppendUint64(buf, h.ImageSizeAllocBlocks)
	return buf[:cap(buf)], nil
}

// CheckAuxHeads validates a pair of aux metadata update group head pointers
// as the reference's AuxFsMetadataExtentsPtrsPair::decode() does: each is NIL
// or a direct extent aligned to the larger of IO Block and Authentication
// Tree Data Block, and the second may be non-NIL only if the first is.
func CheckAuxHeads(heads [2]ExtentPtr, l Layout) error {
	align := uint64(1)<<l.journalBlockLog2() - 1
	for i, p := range heads {
		if p.IsNil() {
			continue
		}
		if err := p.Check(l); err != nil {
			return errf(ErrCorrupt, "aux metadata head %d: %v", i, err)
		}
		start, n, indirect := p.Decode()
		if indirect {
			return errf(ErrCorrupt, "aux metadata head %d: pointer %#x is indirect", i, uint64(p))
		}
		if (start|(start+n))&align != 0 {
			return errf(ErrCorrupt, "aux metadata head %d: extent [%d,+%d) not aligned to %d Allocation Blocks", i, start, n, align+1)
		}
	}
	if heads[0].IsNil() && !heads[1].IsNil() {
		return errf(ErrCorrupt, "aux metadata heads: first NIL but second %#x", uint64(heads[1]))
	}
	return nil
}
