package disk

import "encoding/binary"

// Inode index node payloads (reference inode_index.rs, InodeIndexTreeLayout
// and the node decode() functions). B is the decrypted payload capacity: the
// node size minus the IV, rounded down to the cipher block. Only the first
// 12+20*M (leaf) or 12+12*M (internal) bytes are the encoded node; the node
// level is the last u32 of that encoded part, not of B. Therefore the level
// position differs between leaf and internal nodes of the same size, and the
// caller must know which kind it reads (NodeLevel takes the kind).
//
// Leaf: next leaf block ptr | M x extent ptr | M x inode u64le | M x flags u32le | level u32le (= 1).
// Internal: (M+1) x child block ptr | M x key u64le | level u32le (>= 2).
//
// The spec's internal node formulas (M = floor((B-12)/12), keys ending at
// 8+12M) cannot hold 8-byte keys; the reference uses M = floor((B-12)/16) with
// the keys at 8+8M..8+16M and the level at 8+16M, and so does this package.
//
// Unoccupied entries: key 0, flags 0, pointer NIL (all-ones, see ptr.go). The
// leaf decoder mirrors the reference: keys strictly increasing until the first
// 0, then all zero; occupied pointers non-NIL, unoccupied NIL; flags reserved
// bits (8..31) clear.

// LeafFlagsReserved are the inode flags bits that must be zero.
const LeafFlagsReserved uint32 = 0xffffff00

// MaxLeafEntries returns M_leaf = floor((B-12)/20).
func MaxLeafEntries(B int) int { return max(B-12, 0) / 20 }

// MinLeafEntries returns m_leaf = ceil(M_leaf/2).
func MinLeafEntries(B int) int { return (MaxLeafEntries(B) + 1) / 2 }

// MaxInternalKeys returns M_internal = floor((B-12)/16) (reference; the
// spec's /12 is wrong).
func MaxInternalKeys(B int) int { return max(B-12, 0) / 16 }

// MinInternalKeys returns m_internal = floor((M_internal-1)/2), the
// reference's M/2 lowered by one for even M.
func MinInternalKeys(B int) int { return max(MaxInternalKeys(B)-1, 0) / 2 }

// LeafEntry is an inode index leaf entry.
type LeafEntry struct {
	Inode uint64
	Ptr   ExtentPtr
	Flags uint32
}

// LeafNode is a decoded inode index leaf node.
type LeafNode struct {
	Next    BlockPtr
	Entries []LeafEntry
}

// InternalNode is a decoded inode index internal node; len(Children) ==
// len(Keys)+1 and Keys[i] separates Children[i] and Children[i+1].
type InternalNode struct {
	Level    uint32 // 1-based from the leaves, >= 2
	Children []BlockPtr
	Keys     []uint64
}

// anyLayout gives pointer range checks the most permissive Allocation Block
// size; callers check against the real layout with ExtentPtr.Check.
var anyLayout Layout

func leafParams(B int) (int, error) {
	m := MaxLeafEntries(B)
	if (m+1)/2 < 3 {
		return 0, errf(ErrCorrupt, "leaf node: payload of %d bytes holds %d entries, minimum fill would be below 3", B, m)
	}
	return m, nil
}

func internalParams(B int) (int, error) {
	m := MaxInternalKeys(B)
	if m < 3 {
		return 0, errf(ErrCorrupt, "internal node: payload of %d bytes holds %d keys, need at least 3", B, m)
	}
	return m, nil
}

// NodeLevel returns the 1-based level of a node payload, read where a leaf
// (internal == false) or an internal node (internal == true) keeps it.
func NodeLevel(payload []byte, internal bool) (uint32, error) {
	var end int
	if internal {
		m, err := internalParams(len(payload))
		if err != nil {
			return 0, err
		}
		end = 12 + 16*m
	} else {
		m, err := leafParams(len(payload))
		if err != nil {
			return 0, err
		}
		end = 12 + 20*m
	}
	return binary.LittleEndian.Uint32(payload[end-4:]), nil
}

// DecodeLeafNode decodes and validates a decrypted leaf node payload of B =
// len(payload) bytes.
func DecodeLeafNode(payload []byte) (LeafNode, error) {
	m, err := leafParams(len(payload))
	if err != nil {
		return LeafNode{}, err
	}
	ptrs, keys, flags := payload[8:], payload[8+8*m:], payload[8+16*m:]
	if lvl := binary.LittleEndian.Uint32(payload[8+20*m:]); lvl != 1 {
		return LeafNode{}, errf(ErrCorrupt, "leaf node: level %d, expected 1", lvl)
	}
	n := LeafNode{Next: ReadBlockPtr(payload)}
	if err := n.Next.Check(anyLayout); err != nil {
		return LeafNode{}, errf(ErrCorrupt, "leaf node next pointer: %v", err)
	}
	cnt := 0
	for ; cnt < m; cnt++ {
		k := binary.LittleEndian.Uint64(keys[8*cnt:])
		if k == 0 {
			break
		}
		if cnt > 0 && k <= binary.LittleEndian.Uint64(keys[8*(cnt-1):]) {
			return LeafNode{}, errf(ErrCorrupt, "leaf node: entry %d inode %d not above previous", cnt, k)
		}
	}
	if cnt > 0 {
		n.Entries = make([]LeafEntry, cnt)
	}
	for i := range m {
		k := binary.LittleEndian.Uint64(keys[8*i:])
		p := ReadExtentPtr(ptrs[8*i:])
		f := binary.LittleEndian.Uint32(flags[4*i:])
		if i >= cnt {
			if k != 0 || !p.IsNil() || f != 0 {
				return LeafNode{}, errf(ErrCorrupt, "leaf node: unoccupied entry %d has inode %d, pointer %#x, flags %#x", i, k, uint64(p), f)
			}
			continue
		}
		if p.IsNil() {
			return LeafNode{}, errf(ErrCorrupt, "leaf node: entry %d (inode %d) has a NIL pointer", i, k)
		}
		if err := p.Check(anyLayout); err != nil {
			return LeafNode{}, errf(ErrCorrupt, "leaf node entry %d: %v", i, err)
		}
		if f&LeafFlagsReserved != 0 {
			return LeafNode{}, errf(ErrCorrupt, "leaf node: entry %d (inode %d) flags %#x have reserved bits set", i, k, f)
		}
		n.Entries[i] = LeafEntry{Inode: k, Ptr: p, Flags: f}
	}
	return n, nil
}

// EncodeLeafNode encodes n into a B-byte payload (zero beyond the encoded
// node).
func EncodeLeafNode(n LeafNode, B int) ([]byte, error) {
	m, err := leafParams(B)
	if err != nil {
		return nil, err
	}
	if len(n.Entries) > m {
		return nil, errf(errArg, "leaf node: %d entries exceed %d", len(n.Entries), m)
	}
	out := make([]byte, B)
	binary.LittleEndian.PutUint64(out, uint64(n.Next))
	ptrs, keys, flags := out[8:], out[8+8*m:], out[8+16*m:]
	for i := range m {
		p := NilExtentPtr
		if i < len(n.Entries) {
			e := n.Entries[i]
			if e.Inode == 0 || (i > 0 && e.Inode <= n.Entries[i-1].Inode) || e.Ptr.IsNil() || e.Flags&LeafFlagsReserved != 0 {
				return nil, errf(errArg, "leaf node: invalid entry %d %+v", i, e)
			}
			p = e.Ptr
			binary.LittleEndian.PutUint64(keys[8*i:], e.Inode)
			binary.LittleEndian.PutUint32(flags[4*i:], e.Flags)
		}
		binary.LittleEndian.PutUint64(ptrs[8*i:], uint64(p))
	}
	binary.LittleEndian.PutUint32(out[8+20*m:], 1)
	return out, nil
}

// DecodeInternalNode decodes and validates a decrypted internal node payload
// of B = len(payload) bytes.
func DecodeInternalNode(payload []byte) (InternalNode, error) {
	m, err := internalParams(len(payload))
	if err != nil {
		return InternalNode{}, err
	}
	children, keys := payload, payload[8+8*m:]
	n := InternalNode{Level: binary.LittleEndian.Uint32(payload[8+16*m:])}
	if n.Level <= 1 {
		return InternalNode{}, errf(ErrCorrupt, "internal node: level %d, expected >= 2", n.Level)
	}
	cnt := 0
	for ; cnt < m; cnt++ {
		k := binary.LittleEndian.Uint64(keys[8*cnt:])
		if k == 0 {
			break
		}
		if cnt > 0 && k <= binary.LittleEndian.Uint64(keys[8*(cnt-1):]) {
			return InternalNode{}, errf(ErrCorrupt, "internal node: key %d (%d) not above previous", cnt, k)
		}
	}
	for i := cnt; i < m; i++ {
		if k := binary.LittleEndian.Uint64(keys[8*i:]); k != 0 {
			return InternalNode{}, errf(ErrCorrupt, "internal node: unoccupied key slot %d holds %d", i, k)
		}
	}
	n.Keys = make([]uint64, cnt)
	for i := range cnt {
		n.Keys[i] = binary.LittleEndian.Uint64(keys[8*i:])
	}
	n.Children = make([]BlockPtr, cnt+1)
	for i := range m + 1 {
		p := ReadBlockPtr(children[8*i:])
		if i > cnt {
			if !p.IsNil() {
				return InternalNode{}, errf(ErrCorrupt, "internal node: unoccupied child %d pointer %#x is not NIL", i, uint64(p))
			}
			continue
		}
		if p.IsNil() {
			return InternalNode{}, errf(ErrCorrupt, "internal node: child %d pointer is NIL", i)
		}
		if err := p.Check(anyLayout); err != nil {
			return InternalNode{}, errf(ErrCorrupt, "internal node child %d: %v", i, err)
		}
		n.Children[i] = p
	}
	return n, nil
}

// EncodeInternalNode encodes n into a B-byte payload.
func EncodeInternalNode(n InternalNode, B int) ([]byte, error) {
	m, err := internalParams(B)
	if err != nil {
		return nil, err
	}
	if len(n.Keys) > m || len(n.Children) != len(n.Keys)+1 || n.Level < 2 {
		return nil, errf(errArg, "internal node: %d keys, %d children, level %d", len(n.Keys), len(n.Children), n.Level)
	}
	out := make([]byte, B)
	for i := range m + 1 {
		p := NilBlockPtr
		if i < len(n.Children) {
			p = n.Children[i]
			if p.IsNil() || p&0x7f != 0 {
				return nil, errf(errArg, "internal node: child %d pointer %#x", i, uint64(p))
			}
		}
		binary.LittleEndian.PutUint64(out[8*i:], uint64(p))
	}
	for i, k := range n.Keys {
		if k == 0 || (i > 0 && k <= n.Keys[i-1]) {
			return nil, errf(errArg, "internal node: key %d (%d) not increasing", i, k)
		}
		binary.LittleEndian.PutUint64(out[8+8*m+8*i:], k)
	}
	binary.LittleEndian.PutUint32(out[8+16*m:], n.Level)
	return out, nil
}
