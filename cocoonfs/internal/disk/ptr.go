package disk

import "encoding/binary"

// Pointer NIL values: the reference (extent_ptr.rs, encode_nil()) encodes NIL
// as all-ones, 0xffffffffffffffff, not as all-zeros as the spec text says;
// nodes and headers written by the reference carry all-ones. The zero value
// would decode as the extent of length 1 at Allocation Block 0.

// MaxExtentAllocBlocks is the longest extent an ExtentPtr can describe.
const MaxExtentAllocBlocks = 64

// ExtentPtr is an encoded extent pointer as stored (little-endian u64):
// start<<7 | (length-1)<<1 | indirect.
type ExtentPtr uint64

// NilExtentPtr is the NIL extent pointer.
const NilExtentPtr ExtentPtr = ^ExtentPtr(0)

// NewExtentPtr encodes the extent of n Allocation Blocks at start.
func NewExtentPtr(start, n uint64, indirect bool) (ExtentPtr, error) {
	if n == 0 || n > MaxExtentAllocBlocks {
		return 0, errf(errArg, "extent pointer: length %d not in 1..%d", n, MaxExtentAllocBlocks)
	}
	if start>>57 != 0 {
		return 0, errf(errArg, "extent pointer: start %d does not fit 57 bits", start)
	}
	p := ExtentPtr(start<<7 | (n-1)<<1)
	if indirect {
		p |= 1
	}
	if p == NilExtentPtr {
		return 0, errf(errArg, "extent pointer: start %d length %d encodes as NIL", start, n)
	}
	return p, nil
}

// ReadExtentPtr reads an encoded extent pointer from the first 8 bytes of b.
func ReadExtentPtr(b []byte) ExtentPtr { return ExtentPtr(binary.LittleEndian.Uint64(b)) }

// Append appends the 8-byte little-endian encoding of p.
func (p ExtentPtr) Append(dst []byte) []byte { return binary.LittleEndian.AppendUint64(dst, uint64(p)) }

// IsNil reports whether p is the NIL pointer.
func (p ExtentPtr) IsNil() bool { return p == NilExtentPtr }

// Decode returns the extent's start and length in Allocation Blocks and its
// indirect flag. The result is meaningless for NIL.
func (p ExtentPtr) Decode() (start, allocBlocks uint64, indirect bool) {
	return uint64(p) >> 7, (uint64(p)>>1)&63 + 1, p&1 != 0
}

// Check verifies that the extent ends within the 2^64 byte address space of
// layout l (as the reference's EncodedExtentPtr::decode() does). NIL passes.
func (p ExtentPtr) Check(l Layout) error {
	if p.IsNil() {
		return nil
	}
	start, n, _ := p.Decode()
	if (start+n)>>(57-uint(l.AllocBlockLog2128)) != 0 {
		return errf(ErrCorrupt, "extent pointer %#x: extent ends at Allocation Block %d, beyond 2^64 bytes", uint64(p), start+n)
	}
	return nil
}

// BlockPtr is an encoded block pointer as stored (little-endian u64):
// start<<7, the low 7 bits reserved and zero.
type BlockPtr uint64

// NilBlockPtr is the NIL block pointer (all-ones, as in the reference).
const NilBlockPtr BlockPtr = ^BlockPtr(0)

// NewBlockPtr encodes a pointer to the block at Allocation Block start.
func NewBlockPtr(start uint64) (BlockPtr, error) {
	if start>>57 != 0 {
		return 0, errf(errArg, "block pointer: start %d does not fit 57 bits", start)
	}
	return BlockPtr(start << 7), nil
}

// ReadBlockPtr reads an encoded block pointer from the first 8 bytes of b.
func ReadBlockPtr(b []byte) BlockPtr { return BlockPtr(binary.LittleEndian.Uint64(b)) }

// Append appends the 8-byte little-endian encoding of p.
func (p BlockPtr) Append(dst []byte) []byte { return binary.LittleEndian.AppendUint64(dst, uint64(p)) }

// IsNil reports whether p is the NIL pointer.
func (p BlockPtr) IsNil() bool { return p == NilBlockPtr }

// Start returns the block's start in Allocation Blocks.
func (p BlockPtr) Start() uint64 { return uint64(p) >> 7 }

// Check verifies the reserved low 7 bits are zero and that the block starts
// within the 2^64 byte address space of layout l (reference
// EncodedBlockPtr::decode()). NIL passes.
func (p BlockPtr) Check(l Layout) error {
	if p.IsNil() {
		return nil
	}
	if p&0x7f != 0 {
		return errf(ErrCorrupt, "block pointer %#x: reserved bits %#x set", uint64(p), uint64(p&0x7f))
	}
	if p.Start()>>(57-uint(l.AllocBlockLog2128)) != 0 {
		return errf(ErrCorrupt, "block pointer %#x: start %d beyond 2^64 bytes", uint64(p), p.Start())
	}
	return nil
}
