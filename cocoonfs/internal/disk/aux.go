package disk

import (
	"bytes"
	"encoding/binary"
	"math"
)

// AuxEntry is one auxiliary filesystem metadata record.
type AuxEntry struct {
	UUID [16]byte
	Data []byte
}

// DecodeAuxMetadata decodes an auxiliary filesystem metadata payload from the
// start of b: records of UUID [16] | data length u32le | data, in
// non-decreasing UUID order (duplicates are allowed), terminated by the
// all-zero UUID with a data length of 0 or 8; with 8 the data is the extra
// reserve capacity (u64le) returned in reserve. consumed counts bytes up to
// and including the terminator. Entry data aliases b.
func DecodeAuxMetadata(b []byte) (entries []AuxEntry, reserve *uint64, consumed int, err error) {
	off := 0
	for {
		if len(b)-off < 20 {
			return nil, nil, 0, errf(ErrCorrupt, "aux metadata record %d at offset %d: truncated header (%d bytes left)", len(entries), off, len(b)-off)
		}
		var e AuxEntry
		copy(e.UUID[:], b[off:])
		n := binary.LittleEndian.Uint32(b[off+16:])
		off += 20
		if uint64(n) > uint64(len(b)-off) {
			return nil, nil, 0, errf(ErrCorrupt, "aux metadata record %d: length %d exceeds the remaining %d bytes", len(entries), n, len(b)-off)
		}
		data := b[off : off+int(n) : off+int(n)]
		off += int(n)
		if e.UUID == ([16]byte{}) {
			switch n {
			case 0:
			case 8:
				r := binary.LittleEndian.Uint64(data)
				reserve = &r
			default:
				return nil, nil, 0, errf(ErrCorrupt, "aux metadata terminator: data length %d, expected 0 or 8", n)
			}
			return entries, reserve, off, nil
		}
		if len(entries) > 0 && bytes.Compare(e.UUID[:], entries[len(entries)-1].UUID[:]) < 0 {
			return nil, nil, 0, errf(ErrCorrupt, "aux metadata record %d: UUID %x sorts before %x", len(entries), e.UUID, entries[len(entries)-1].UUID)
		}
		e.Data = data
		entries = append(entries, e)
	}
}

// AppendAuxMetadata appends the aux metadata payload encoding of entries and
// the terminator (carrying reserve if non-nil).
// Layout: { uuid [16] | len u32le | data }* | zero uuid [16] | len u32le (0 or 8) | [reserve u64le].
func AppendAuxMetadata(dst []byte, entries []AuxEntry, reserve *uint64) ([]byte, error) {
	for i, e := range entries {
		if e.UUID == ([16]byte{}) {
			return dst, errf(errArg, "aux metadata entry %d: zero UUID", i)
		}
		if i > 0 && bytes.Compare(e.UUID[:], entries[i-1].UUID[:]) < 0 {
			return dst, errf(errArg, "aux metadata entry %d: UUIDs not sorted", i)
		}
		if len(e.Data) > math.MaxUint32 {
			return dst, errf(errArg, "aux metadata entry %d: %d bytes of data", i, len(e.Data))
		}
		dst = append(dst, e.UUID[:]...)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(e.Data)))
		dst = append(dst, e.Data...)
	}
	dst = append(dst, make([]byte, 16)...)
	if reserve == nil {
		return binary.LittleEndian.AppendUint32(dst, 0), nil
	}
	dst = binary.LittleEndian.AppendUint32(dst, 8)
	return binary.LittleEndian.AppendUint64(dst, *reserve), nil
}

// MkfsInfoAuxLen returns the on-medium length of the aux metadata stored
// alongside a creation info header whose aux length field is auxLen: checksum
// (8) | payload | zero padding to the IO Block; 0 if auxLen is 0.
func MkfsInfoAuxLen(auxLen uint64, l Layout) uint64 {
	if auxLen == 0 {
		return 0
	}
	return roundUp(8+auxLen, uint(l.ioLog2128())+7)
}

// DecodeMkfsInfoAux decodes the aux metadata stored alongside a creation info
// header (after it at the start of the medium, before it at the backup
// location). b must hold MkfsInfoAuxLen bytes. As the reference (and vector
// v08) shows, the checksum covers the payload and the padding, i.e. every
// byte after the checksum up to the IO Block boundary.
func DecodeMkfsInfoAux(b []byte, auxLen uint64, l Layout) ([]AuxEntry, *uint64, error) {
	n := MkfsInfoAuxLen(auxLen, l)
	if n == 0 {
		return nil, nil, nil
	}
	if uint64(len(b)) < n || auxLen > n-8 {
		return nil, nil, errf(ErrCorrupt, "creation info aux metadata: %d bytes, need %d", len(b), n)
	}
	b = b[:n]
	if got, want := Checksum(b[8:]), [ChecksumLen]byte(b[:8]); got != want {
		return nil, nil, errf(ErrCorrupt, "creation info aux metadata: checksum %x, stored %x", got, want)
	}
	payload := b[8 : 8+auxLen]
	for i, c := range b[8+auxLen:] {
		if c != 0 {
			return nil, nil, errf(ErrCorrupt, "creation info aux metadata: padding byte %d is %#x", i, c)
		}
	}
	e, r, consumed, err := DecodeAuxMetadata(payload)
	if err != nil {
		return nil, nil, err
	}
	if uint64(consumed) != auxLen {
		return nil, nil, errf(ErrCorrupt, "creation info aux metadata: payload ends at %d, header says %d", consumed, auxLen)
	}
	return e, r, nil
}
