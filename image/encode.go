package image

import (
	"encoding/binary"
	"fmt"
)

// EncodeRootfs serializes r as a rootfs blob: an unpacked Cap'n Proto
// message whose root is the Rootfs struct.
//
// The bytes are exactly those the puzzlefs tool writes for the same values,
// so that an image built by sealfs and one built by puzzlefs from the same
// tree have the same digests. Cap'n Proto leaves the placement of objects
// to the writer, so this is a property of one writer: capnproto-rust's
// message::Builder with its default HeapAllocator, filled in the order
// puzzlefs's fill_capnp functions use. That writer's rules, which this
// encoder follows (and which TestEncodeRootfsVectors checks against the
// reference images):
//
//   - Segment 0 holds 1024 words; a later segment holds
//     max(needed, next) words, where next starts at 2048 and grows by each
//     new segment's size.
//   - An object goes into the segment of the pointer to it if it fits there;
//     otherwise into the first segment with room for it plus one word, that
//     word being the landing pad of a single far pointer.
//   - Objects are placed in the order they are initialized: a struct before
//     its children, list elements in order, and within an inode: the mode's
//     struct or list (and everything under it), then the additional struct,
//     its xattr list, each xattr's value before its key, then the symlink
//     target; within a file chunk, the BlobRef after the chunk list.
//   - The output holds each segment's used words only.
//
// Xattrs are written in the order given; the builder sorts them first.
func EncodeRootfs(r *Rootfs) ([]byte, error) {
	var e encoder
	e.newSegment(1)
	e.allocIn(0, 1) // the root pointer
	root := e.alloc(e.pos(0, 0), 3, kindStruct)
	e.setStructSize(root, 1, 2)
	e.put64(root.obj, 0, r.ManifestVersion)

	layers := e.structList(e.field(root.obj, 1, 0), len(r.Layers), 0, 1)
	for i := range r.Layers {
		l := &r.Layers[i]
		inodes := e.structList(e.field(layers.elem(i), 0, 0), len(l.Inodes), 3, 2)
		for j := range l.Inodes {
			if err := e.inode(inodes.elem(j), &l.Inodes[j]); err != nil {
				return nil, err
			}
		}
	}
	verity := e.structList(e.field(root.obj, 1, 1), len(r.Verity), 0, 2)
	for i, v := range r.Verity {
		e.data(e.field(verity.elem(i), 0, 0), v.Digest[:])
		e.data(e.field(verity.elem(i), 0, 1), v.Verity[:])
	}
	if e.err != nil {
		return nil, e.err
	}
	return e.bytes(), nil
}

// Pointer kinds, in a pointer's low two bits.
const (
	kindStruct = 0
	kindList   = 1
	kindFar    = 2
)

const (
	listByte      = 2 // list element size: 1 byte
	listComposite = 7 // list element size: inline composite (structs)
	firstSegment  = 1024
	maxSegment    = 1 << 29 // words; offsets in pointers have 30 bits
)

// wordPos is a word's position: segment and index in it.
type wordPos struct{ seg, idx int }

type segment struct {
	words []uint64 // len = capacity
	used  int
}

type encoder struct {
	segs []segment
	next int // size of the next segment (the HeapAllocator's heuristic)
	err  error
}

func (e *encoder) pos(seg, idx int) wordPos { return wordPos{seg, idx} }

func (e *encoder) newSegment(min int) int {
	if e.next == 0 {
		e.next = firstSegment
	}
	size := max(min, e.next)
	e.next += size
	if size > maxSegment {
		e.fail(fmt.Errorf("image: rootfs: an object of %d words is too large to encode", min))
		size = min
	}
	e.segs = append(e.segs, segment{words: make([]uint64, size)})
	return len(e.segs) - 1
}

func (e *encoder) fail(err error) {
	if e.err == nil {
		e.err = err
	}
}

// allocIn bumps n words in segment s, or reports that they do not fit.
func (e *encoder) allocIn(s, n int) (int, bool) {
	seg := &e.segs[s]
	if n > len(seg.words)-seg.used {
		return 0, false
	}
	idx := seg.used
	seg.used += n
	return idx, true
}

// placed is an allocated object: where it starts, and the pointer that
// describes it (the original pointer, or a landing pad next to the object).
type placed struct {
	obj, ptr wordPos
}

// alloc places an object of n words for the pointer at ref and writes the
// pointer's kind and offset; the caller adds the size bits.
func (e *encoder) alloc(ref wordPos, n int, kind uint64) placed {
	if idx, ok := e.allocIn(ref.seg, n); ok {
		obj := wordPos{ref.seg, idx}
		e.setTarget(ref, obj, kind)
		return placed{obj, ref}
	}
	// Room for a landing pad and the object, in the first segment that has it.
	s, idx := -1, 0
	for i := range e.segs {
		if j, ok := e.allocIn(i, n+1); ok {
			s, idx = i, j
			break
		}
	}
	if s < 0 {
		s = e.newSegment(n + 1)
		idx, _ = e.allocIn(s, n+1)
	}
	pad := wordPos{s, idx}
	// A single far pointer: landing pad index, segment id.
	e.segs[ref.seg].words[ref.idx] = uint64(idx)<<3 | kindFar | uint64(s)<<32
	obj := wordPos{s, idx + 1}
	e.setTarget(pad, obj, kind)
	return placed{obj, pad}
}

func (e *encoder) setTarget(ref, obj wordPos, kind uint64) {
	off := int64(obj.idx - ref.idx - 1)
	e.segs[ref.seg].words[ref.idx] = uint64(uint32(off<<2)) | kind
}

func (e *encoder) setStructSize(p placed, dataWords, ptrs int) {
	w := &e.segs[p.ptr.seg].words[p.ptr.idx]
	*w = *w&0xffffffff | uint64(dataWords)<<32 | uint64(ptrs)<<48
}

func (e *encoder) setListSize(p placed, elemSize, count int) {
	w := &e.segs[p.ptr.seg].words[p.ptr.idx]
	*w = *w&0xffffffff | uint64(elemSize)<<32 | uint64(count)<<35
}

// field returns the position of pointer i of a struct with dataWords data
// words at obj.
func (e *encoder) field(obj wordPos, dataWords, i int) wordPos {
	return wordPos{obj.seg, obj.idx + dataWords + i}
}

// put64 etc. set a data field at a byte offset of a struct's data section.
func (e *encoder) put64(obj wordPos, byteOff int, v uint64) {
	e.putBits(obj, byteOff*8, 64, v)
}

func (e *encoder) putBits(obj wordPos, bitOff, bits int, v uint64) {
	w := &e.segs[obj.seg].words[obj.idx+bitOff/64]
	shift := uint(bitOff % 64)
	mask := uint64(1)<<uint(bits) - 1
	if bits == 64 {
		mask = ^uint64(0)
	}
	*w = *w&^(mask<<shift) | (v&mask)<<shift
}

// structList is an inline composite list's elements.
type structList struct {
	first    wordPos // element 0
	elemSize int     // words
}

func (l structList) elem(i int) wordPos {
	return wordPos{l.first.seg, l.first.idx + i*l.elemSize}
}

func (e *encoder) structList(ref wordPos, n, dataWords, ptrs int) structList {
	size := dataWords + ptrs
	if n > maxSegment/max(size, 1) {
		e.fail(fmt.Errorf("image: rootfs: a list of %d elements is too large to encode", n))
		n = 0
	}
	p := e.alloc(ref, 1+n*size, kindList)
	e.setListSize(p, listComposite, n*size)
	// The tag word describes the elements like a struct pointer whose
	// offset field holds the element count.
	e.segs[p.obj.seg].words[p.obj.idx] = uint64(n)<<2 | kindStruct | uint64(dataWords)<<32 | uint64(ptrs)<<48
	return structList{wordPos{p.obj.seg, p.obj.idx + 1}, size}
}

func (e *encoder) newStruct(ref wordPos, dataWords, ptrs int) wordPos {
	p := e.alloc(ref, dataWords+ptrs, kindStruct)
	e.setStructSize(p, dataWords, ptrs)
	return p.obj
}

func (e *encoder) data(ref wordPos, b []byte) {
	if len(b) > maxSegment*8 {
		e.fail(fmt.Errorf("image: rootfs: %d bytes of data is too large to encode", len(b)))
		return
	}
	p := e.alloc(ref, (len(b)+7)/8, kindList)
	e.setListSize(p, listByte, len(b))
	words := e.segs[p.obj.seg].words[p.obj.idx:]
	for i := 0; i < len(b); i += 8 {
		var w [8]byte
		copy(w[:], b[i:])
		words[i/8] = binary.LittleEndian.Uint64(w[:])
	}
}

// Inode layout (capnp compile -ocapnp): data words 3, pointers 2;
// ino bits 0-63, mode tag 64-79, permissions 80-95, uid 96-127,
// gid 128-159; mode's struct or list in pointer 0, additional in pointer 1.
func (e *encoder) inode(obj wordPos, in *Inode) error {
	e.put64(obj, 0, in.Ino)
	tag, ok := modeTags[in.Type]
	if !ok {
		return fmt.Errorf("image: rootfs: inode %d: cannot encode type %d", in.Ino, in.Type)
	}
	e.putBits(obj, 64, 16, tag)
	mode := e.field(obj, 3, 0)
	switch in.Type {
	case TypeChar, TypeBlock:
		s := e.newStruct(mode, 2, 0)
		e.put64(s, 0, in.Major)
		e.put64(s, 8, in.Minor)
	case TypeDir:
		s := e.newStruct(mode, 1, 1)
		var look uint64
		if in.Dir != nil && in.Dir.LookBelow {
			look = 1
		}
		e.putBits(s, 0, 1, look)
		var ents []DirEntry
		if in.Dir != nil {
			ents = in.Dir.Entries
		}
		l := e.structList(e.field(s, 1, 0), len(ents), 1, 1)
		for i, d := range ents {
			el := l.elem(i)
			e.put64(el, 0, d.Ino)
			e.data(e.field(el, 1, 0), d.Name)
		}
	case TypeFile:
		l := e.structList(mode, len(in.Chunks), 1, 1)
		for i, c := range in.Chunks {
			el := l.elem(i)
			e.put64(el, 0, c.Len)
			blob := e.newStruct(e.field(el, 1, 0), 2, 1)
			e.data(e.field(blob, 2, 0), c.Blob.Digest[:])
			e.put64(blob, 0, c.Blob.Offset)
			var comp uint64
			if c.Blob.Compressed {
				comp = 1
			}
			e.putBits(blob, 64, 1, comp)
		}
	}
	e.putBits(obj, 96, 32, uint64(in.UID))
	e.putBits(obj, 128, 32, uint64(in.GID))
	e.putBits(obj, 80, 16, uint64(in.Permissions))
	// puzzlefs keeps the additional struct only when it has something in
	// it, and then always writes the xattr list, even an empty one.
	if len(in.Xattrs) > 0 || in.SymlinkTarget != nil {
		add := e.newStruct(e.field(obj, 3, 1), 0, 2)
		l := e.structList(e.field(add, 0, 0), len(in.Xattrs), 0, 2)
		for i, x := range in.Xattrs {
			el := l.elem(i)
			e.data(e.field(el, 0, 1), x.Value)
			e.data(e.field(el, 0, 0), x.Key)
		}
		if in.SymlinkTarget != nil {
			e.data(e.field(add, 0, 1), in.SymlinkTarget)
		}
	}
	return nil
}

// modeTags are the union tags of Inode.mode, in schema order.
var modeTags = map[InodeType]uint64{
	TypeUnknown: 0, TypeFifo: 1, TypeChar: 2, TypeDir: 3, TypeBlock: 4,
	TypeFile: 5, TypeSymlink: 6, TypeSocket: 7, TypeWhiteout: 8,
}

// bytes returns the message in the standard stream framing: the segment
// count minus one and each segment's size in words (little-endian uint32s,
// padded to a word), then the segments' used words.
func (e *encoder) bytes() []byte {
	n := len(e.segs)
	hdr := 4 * (1 + n)
	hdr += hdr % 8
	total := hdr
	for _, s := range e.segs {
		total += 8 * s.used
	}
	out := make([]byte, total)
	binary.LittleEndian.PutUint32(out, uint32(n-1))
	for i, s := range e.segs {
		binary.LittleEndian.PutUint32(out[4+4*i:], uint32(s.used))
	}
	off := hdr
	for _, s := range e.segs {
		for _, w := range s.words[:s.used] {
			binary.LittleEndian.PutUint64(out[off:], w)
			off += 8
		}
	}
	return out
}
