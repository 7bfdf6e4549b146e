package disk

import (
	"encoding/binary"
	"hash/crc32"
)

// ChecksumLen is the length of a CocoonFS checksum.
const ChecksumLen = 8

// snbTable maps a byte to the byte with its neighbouring bits swapped
// (bit 0 <-> bit 1, bit 2 <-> bit 3, ...).
var snbTable = func() (t [256]byte) {
	for i := range t {
		b := byte(i)
		t[i] = (b&0x55)<<1 | (b>>1)&0x55
	}
	return t
}()

// checksummer accumulates the two CRC-32 registers of the CocoonFS checksum.
type checksummer struct{ crc, crcSNB uint32 }

func (c *checksummer) write(p []byte) {
	c.crc = crc32.Update(c.crc, crc32.IEEETable, p)
	var buf [256]byte
	for len(p) > 0 {
		n := copy(buf[:], p)
		for i := range n {
			buf[i] = snbTable[buf[i]]
		}
		c.crcSNB = crc32.Update(c.crcSNB, crc32.IEEETable, buf[:n])
		p = p[n:]
	}
}

func (c *checksummer) sum() (s [ChecksumLen]byte) {
	binary.LittleEndian.PutUint32(s[0:], c.crc)
	binary.LittleEndian.PutUint32(s[4:], c.crcSNB)
	return s
}

// Checksum computes the CocoonFS checksum over the concatenation of data:
// the standard (IEEE, reflected) CRC-32 of the data followed by the CRC-32 of
// the data with each byte's neighbouring bits swapped, both little-endian.
// The reference's crc32le_* functions are bit-for-bit the IEEE CRC-32 that
// hash/crc32 implements (init ~0, final ~crc, LSB-first).
func Checksum(data ...[]byte) [ChecksumLen]byte {
	var c checksummer
	for _, d := range data {
		c.write(d)
	}
	return c.sum()
}
