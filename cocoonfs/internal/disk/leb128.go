package disk

// LEB128 as the reference's leb128.rs decodes it: values are limited to 64
// bits (anything that would set a higher bit is rejected as overflow), but
// overlong encodings, i.e. redundant trailing 0x80 (or, signed, sign) groups,
// are accepted, also beyond 10 bytes. The encoders always emit the minimal
// form.

// ReadULEB128 decodes an unsigned LEB128 value from the start of b and returns
// it with the number of bytes consumed.
func ReadULEB128(b []byte) (uint64, int, error) {
	var v uint64
	for i, c := range b {
		if i < 9 {
			v |= uint64(c&0x7f) << (7 * i)
			if c&0x80 == 0 {
				return v, i + 1, nil
			}
			continue
		}
		if i == 9 {
			if c&0x7e != 0 {
				return 0, 0, errf(ErrCorrupt, "unsigned LEB128: value exceeds 64 bits (byte 10 is %#x)", c)
			}
			v |= uint64(c&1) << 63
		} else if c&0x7f != 0 {
			return 0, 0, errf(ErrCorrupt, "unsigned LEB128: value exceeds 64 bits (byte %d is %#x)", i+1, c)
		}
		if c&0x80 == 0 {
			return v, i + 1, nil
		}
	}
	return 0, 0, errf(ErrCorrupt, "unsigned LEB128: truncated after %d bytes", len(b))
}

// ReadSLEB128 decodes a signed (two's complement) LEB128 value from the start
// of b and returns it with the number of bytes consumed.
func ReadSLEB128(b []byte) (int64, int, error) {
	var v uint64
	var sign byte
	for i, c := range b {
		if i < 9 {
			v |= uint64(c&0x7f) << (7 * i)
			if c&0x80 == 0 {
				shift := 64 - 7*(i+1)
				return int64(v<<shift) >> shift, i + 1, nil
			}
			continue
		}
		if i == 9 {
			// Bit 0 is bit 63 of the value; bits 1..6 must replicate it.
			sign = -(c & 1) & 0x7f
			if c&0x7f != sign {
				return 0, 0, errf(ErrCorrupt, "signed LEB128: value exceeds 64 bits (byte 10 is %#x)", c)
			}
			v |= uint64(c&1) << 63
		} else if c&0x7f != sign {
			return 0, 0, errf(ErrCorrupt, "signed LEB128: value exceeds 64 bits (byte %d is %#x)", i+1, c)
		}
		if c&0x80 == 0 {
			return int64(v), i + 1, nil
		}
	}
	return 0, 0, errf(ErrCorrupt, "signed LEB128: truncated after %d bytes", len(b))
}

// AppendULEB128 appends the minimal unsigned LEB128 encoding of v.
func AppendULEB128(dst []byte, v uint64) []byte {
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

// AppendSLEB128 appends the minimal signed LEB128 encoding of v.
func AppendSLEB128(dst []byte, v int64) []byte {
	for {
		c := byte(v) & 0x7f
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(dst, c)
		}
		dst = append(dst, c|0x80)
	}
}
