package disk

import (
	"cmp"
	"slices"
)

// Extent is a physically contiguous range in Allocation Blocks.
type Extent struct{ Start, Len uint64 }

// DecodeExtentsList decodes an encoded extents list from the start of b:
// (start delta SLEB128 relative to the previous extent's end, length ULEB128)
// pairs terminated by a (0, 0) pair. It returns the extents and the number of
// bytes consumed including the terminator. Zero lengths, extents wrapping
// past 2^64 and overlapping extents are rejected (the reference's
// indirect_extents_list_decode() rejects overlaps too).
func DecodeExtentsList(b []byte) (ext []Extent, consumed int, err error) {
	var prevEnd uint64
	off := 0
	for {
		delta, n, err := ReadSLEB128(b[off:])
		if err != nil {
			return nil, 0, errf(ErrCorrupt, "extents list entry %d start at offset %d: %v", len(ext), off, err)
		}
		off += n
		length, n, err := ReadULEB128(b[off:])
		if err != nil {
			return nil, 0, errf(ErrCorrupt, "extents list entry %d length at offset %d: %v", len(ext), off, err)
		}
		off += n
		if length == 0 {
			if delta != 0 {
				return nil, 0, errf(ErrCorrupt, "extents list entry %d: zero length (start delta %d)", len(ext), delta)
			}
			break
		}
		start := prevEnd + uint64(delta)
		end := start + length
		if end < start {
			return nil, 0, errf(ErrCorrupt, "extents list entry %d: start %d length %d wraps past 2^64", len(ext), start, length)
		}
		ext = append(ext, Extent{start, length})
		prevEnd = end
	}
	if err := checkOverlap(ext); err != nil {
		return nil, 0, err
	}
	return ext, off, nil
}

// checkOverlap rejects overlapping extents.
func checkOverlap(ext []Extent) error {
	if len(ext) < 2 {
		return nil
	}
	s := slices.Clone(ext)
	slices.SortFunc(s, func(a, b Extent) int { return cmp.Compare(a.Start, b.Start) })
	for i := 1; i < len(s); i++ {
		if s[i].Start < s[i-1].Start+s[i-1].Len {
			return errf(ErrCorrupt, "extents list: extent [%d,+%d) overlaps [%d,+%d)", s[i].Start, s[i].Len, s[i-1].Start, s[i-1].Len)
		}
	}
	return nil
}

// AppendExtentsList appends the encoded extents list for ext.
// Layout: { start delta sleb128 | length uleb128 }* | 0x00 0x00.
// Zero-length extents are skipped since they cannot be encoded.
func AppendExtentsList(dst []byte, ext []Extent) []byte {
	var prevEnd uint64
	for _, e := range ext {
		if e.Len == 0 {
			continue
		}
		dst = AppendSLEB128(dst, int64(e.Start-prevEnd))
		dst = AppendULEB128(dst, e.Len)
		prevEnd = e.Start + e.Len
	}
	return append(dst, 0, 0)
}
