package disk

import (
	"bytes"
	"encoding/binary"
	"math/bits"
)

// mkfsMinLen is magic | version | layout | aux_len u64 | image size u64 |
// salt_len; the integrity section follows (offset 39 after the magic).
const mkfsMinLen = 8 + 1 + LayoutLen + 8 + 8 + 1

// MkfsInfoHeader is the filesystem creation info header ('CCFSMKFS').
type MkfsInfoHeader struct {
	Layout               Layout
	AuxMetadataLen       uint64 // length of the aux metadata payload stored alongside, 0 for none
	ImageSizeAllocBlocks uint64 // desired image size in Allocation Blocks
	Salt                 []byte
}

// Len returns the header's length on the medium, padded to the IO Block.
func (h MkfsInfoHeader) Len() uint64 { return mkfsHeaderLen(h.Layout, len(h.Salt)) }

func mkfsHeaderLen(l Layout, saltLen int) uint64 {
	return roundUp(uint64(mkfsMinLen+IntegrityLen(l)+saltLen), uint(l.ioLog2128())+7)
}

// MkfsInfoHeaderReadLen tells from the first MinHeaderReadLen bytes of a
// creation info header how many bytes DecodeMkfsInfoHeader needs.
func MkfsInfoHeaderReadLen(first []byte) (uint64, error) {
	if len(first) >= 8 && !bytes.Equal(first[:8], magicMkfs) {
		return 0, errf(ErrNotCocoonFS, "creation info header magic %q", first[:8])
	}
	p, err := tier0Peek(first, mkfsMinLen-8)
	if err != nil {
		return 0, err
	}
	l, err := decodeVersionLayout(p[:], "creation info header")
	if err != nil {
		return 0, err
	}
	return mkfsHeaderLen(l, int(p[mkfsMinLen-1])), nil
}

// DecodeMkfsInfoHeader decodes a filesystem creation info header from b,
// which must cover the IO Block padded header (MkfsInfoHeaderReadLen). b is
// not modified. A failed integrity check wraps ErrTorn.
func DecodeMkfsInfoHeader(b []byte) (MkfsInfoHeader, error) {
	n, err := MkfsInfoHeaderReadLen(b)
	if err != nil {
		return MkfsInfoHeader{}, err
	}
	if uint64(len(b)) < n {
		return MkfsInfoHeader{}, errf(ErrCorrupt, "creation info header: %d bytes, need %d", len(b), n)
	}
	ext := bytes.Clone(b[:n])
	l, err := DecodeLayout(unmaskedLayout(ext, mkfsMinLen-8))
	if err != nil {
		return MkfsInfoHeader{}, err
	}
	if err := VerifyAndRemoveIntegrity(ext, 8, mkfsMinLen-8, l); err != nil {
		return MkfsInfoHeader{}, err
	}
	h := MkfsInfoHeader{
		Layout:               l,
		AuxMetadataLen:       binary.LittleEndian.Uint64(ext[30:]),
		ImageSizeAllocBlocks: binary.LittleEndian.Uint64(ext[38:]),
	}
	saltLen := int(ext[mkfsMinLen-1])
	off := mkfsMinLen + IntegrityLen(l)
	h.Salt = ext[off : off+saltLen : off+saltLen]
	return h, nil
}

// EncodeMkfsInfoHeader returns the IO Block padded creation info header with
// integrity protections applied as the reference applies them.
// Layout: 'CCFSMKFS' | version u8 | layout [21] | aux_len u64le | image_size u64le | salt_len u8 | integrity | salt | pad.
func EncodeMkfsInfoHeader(h MkfsInfoHeader) ([]byte, error) {
	if err := h.Layout.Validate(); err != nil {
		return nil, err
	}
	if len(h.Salt) > 255 {
		return nil, errf(errArg, "creation info header: salt of %d bytes exceeds 255", len(h.Salt))
	}
	buf := make([]byte, 0, h.Len())
	buf = append(buf, magicMkfs...)
	buf = append(buf, FormatVersion)
	buf = h.Layout.Append(buf)
	buf = binary.LittleEndian.AppendUint64(buf, h.AuxMetadataLen)
	buf = binary.LittleEndian.AppendUint64(buf, h.ImageSizeAllocBlocks)
	buf = append(buf, byte(len(h.Salt)))
	buf = append(buf, make([]byte, IntegrityLen(h.Layout))...)
	buf = append(buf, h.Salt...)
	buf = buf[:cap(buf)]
	if err := ApplyIntegrity(buf, 8, mkfsMinLen-8, h.Layout); err != nil {
		return nil, err
	}
	return buf, nil
}

// MkfsInfoBackupOffset returns the byte offset of the backup creation info
// header on a volume of volumeSize bytes: the start of the last of the 16
// largest power-of-two blocks that fit (reference
// physical_backup_location_begin_128b()). It reports false if the volume is
// smaller than 8 KiB or the block would be smaller than l's IO Block.
func MkfsInfoBackupOffset(volumeSize uint64, l Layout) (uint64, bool) {
	size128 := volumeSize >> 7
	if size128 == 0 {
		return 0, false
	}
	log := bits.Len64(size128) - 1
	if log < 4+2 {
		return 0, false
	}
	align := uint(log - 4)
	if align < uint(l.ioLog2128()) {
		return 0, false
	}
	begin128 := (size128>>align - 1) << align
	return begin128 << 7, true
}
