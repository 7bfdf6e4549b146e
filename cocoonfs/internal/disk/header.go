package disk

import "bytes"

// Header magics.
var (
	magicStatic  = []byte("COCOONFS")
	magicMkfs    = []byte("CCFSMKFS")
	magicJournal = []byte("CCFSJRNL")
)

const (
	// FormatVersion is the only supported format version.
	FormatVersion = 1
	// staticMinLen is magic | version | layout | salt_len; the integrity
	// section follows right after it (offset 23 after the magic).
	staticMinLen = 8 + 1 + LayoutLen + 1
	// MinHeaderReadLen is how many bytes to read from the start of the
	// medium before anything else can be decided: the first 128 bytes hold
	// every field needed to size either header kind (tier 0 realm).
	MinHeaderReadLen = 128
)

// StaticHeader is the static image header of a formatted filesystem.
type StaticHeader struct {
	Layout Layout
	Salt   []byte
}

// Len returns the header's length on the medium, padded to the IO Block.
func (h StaticHeader) Len() uint64 { return staticHeaderLen(h.Layout, len(h.Salt)) }

func staticHeaderLen(l Layout, saltLen int) uint64 {
	return roundUp(uint64(staticMinLen+IntegrityLen(l)+saltLen), uint(l.ioLog2128())+7)
}

// tier0Peek unmasks a copy of the first 128 bytes of an integrity protected
// header, so fields in the tier 0 realm can be read before the header's
// total length, and with it the integrity section's size, is known.
func tier0Peek(b []byte, protOff int) ([128]byte, error) {
	var p [128]byte
	if len(b) < MinHeaderReadLen {
		return p, errf(ErrCorrupt, "header: %d bytes, need at least %d", len(b), MinHeaderReadLen)
	}
	copy(p[:], b)
	if i := tier0Check(p[:], 8); i >= 0 {
		return p, errf(ErrTorn, "header tier 0: zero byte at offset %d", i)
	}
	sec := 8 + protOff
	mask := p[sec+ChecksumLen]
	xorBytes(p[8:sec], mask)
	xorBytes(p[sec+ChecksumLen+1:], mask)
	return p, nil
}

// decodeVersionLayout checks the version byte at offset 8 and decodes the
// layout at offset 9 of an unmasked header prefix.
func decodeVersionLayout(p []byte, what string) (Layout, error) {
	if p[8] != FormatVersion {
		return Layout{}, errf(ErrUnsupported, "%s: format version %d", what, p[8])
	}
	return DecodeLayout(p[9 : 9+LayoutLen])
}

// StaticHeaderReadLen tells from the first MinHeaderReadLen bytes of the
// medium how many bytes DecodeStaticHeader needs.
func StaticHeaderReadLen(first []byte) (uint64, error) {
	if len(first) >= 8 && !bytes.Equal(first[:8], magicStatic) {
		return 0, errf(ErrNotCocoonFS, "static header magic %q", first[:8])
	}
	p, err := tier0Peek(first, staticMinLen-8)
	if err != nil {
		return 0, err
	}
	l, err := decodeVersionLayout(p[:], "static header")
	if err != nil {
		return 0, err
	}
	return staticHeaderLen(l, int(p[staticMinLen-1])), nil
}

// DecodeStaticHeader decodes the static image header from b, the first bytes
// of the image; b must cover the IO Block padded header (StaticHeaderReadLen).
// b is not modified. A failed integrity check wraps ErrTorn.
func DecodeStaticHeader(b []byte) (StaticHeader, error) {
	n, err := StaticHeaderReadLen(b)
	if err != nil {
		return StaticHeader{}, err
	}
	if uint64(len(b)) < n {
		return StaticHeader{}, errf(ErrCorrupt, "static header: %d bytes, need %d", len(b), n)
	}
	ext := bytes.Clone(b[:n])
	l, err := DecodeLayout(unmaskedLayout(ext, staticMinLen-8))
	if err != nil {
		return StaticHeader{}, err
	}
	if err := VerifyAndRemoveIntegrity(ext, 8, staticMinLen-8, l); err != nil {
		return StaticHeader{}, err
	}
	saltLen := int(ext[staticMinLen-1])
	off := staticMinLen + IntegrityLen(l)
	return StaticHeader{Layout: l, Salt: ext[off : off+saltLen : off+saltLen]}, nil
}

// unmaskedLayout returns the unmasked layout bytes of a tier 0 verified header.
func unmaskedLayout(ext []byte, protOff int) []byte {
	var l [LayoutLen]byte
	copy(l[:], ext[9:])
	xorBytes(l[:], ext[8+protOff+ChecksumLen])
	return l[:]
}

// EncodeStaticHeader returns the IO Block padded static image header with the
// integrity protections applied exactly as the reference's mkfs applies them.
// Layout: 'COCOONFS' | version u8 | layout [21] | salt_len u8 | integrity | salt | pad.
func EncodeStaticHeader(h StaticHeader) ([]byte, error) {
	if err := h.Layout.Validate(); err != nil {
		return nil, err
	}
	if len(h.Salt) > 255 {
		return nil, errf(errArg, "static header: salt of %d bytes exceeds 255", len(h.Salt))
	}
	buf := make([]byte, 0, h.Len())
	buf = append(buf, magicStatic...)
	buf = append(buf, FormatVersion)
	buf = h.Layout.Append(buf)
	buf = append(buf, byte(len(h.Salt)))
	buf = append(buf, make([]byte, IntegrityLen(h.Layout))...)
	buf = append(buf, h.Salt...)
	buf = buf[:cap(buf)]
	if err := ApplyIntegrity(buf, 8, staticMinLen-8, h.Layout); err != nil {
		return nil, err
	}
	return buf, nil
}

// HeaderKind identifies the header found at the start of a medium.
type HeaderKind int

// Header kinds reported by ProbeHeader.
const (
	HeaderNone    HeaderKind = iota // no CocoonFS magic
	HeaderRegular                   // 'COCOONFS' static image header
	HeaderMkfs                      // 'CCFSMKFS' filesystem creation info header
)

// ProbeHeader inspects the first MinHeaderReadLen bytes of a medium. It
// returns HeaderNone with ErrNotCocoonFS if neither magic is present, and the
// kind with an error wrapping ErrTorn if the magic is there but the tier 0
// integrity check fails (the reference then looks for the backup creation
// info header, see MkfsInfoBackupOffset). Only tier 0 is checked; the full
// decoders verify the rest.
func ProbeHeader(first []byte) (HeaderKind, error) {
	if len(first) < MinHeaderReadLen {
		return HeaderNone, errf(ErrCorrupt, "header probe: %d bytes, need %d", len(first), MinHeaderReadLen)
	}
	switch {
	case bytes.Equal(first[:8], magicStatic):
		_, err := tier0Peek(first, staticMinLen-8)
		return HeaderRegular, err
	case bytes.Equal(first[:8], magicMkfs):
		_, err := tier0Peek(first, mkfsMinLen-8)
		return HeaderMkfs, err
	}
	return HeaderNone, errf(ErrNotCocoonFS, "header magic %q", first[:8])
}
