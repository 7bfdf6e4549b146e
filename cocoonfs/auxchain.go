package cocoonfs

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// Reading the aux metadata of formatted images: the circular extent list
// and its update groups, and finding the metadata without a key.

// auxGeometry locates the aux metadata extents of a formatted image.
type auxGeometry struct {
	dev      blockdev.Device
	l        disk.Layout
	heads    [2]disk.ExtentPtr
	limit    uint64 // extents must end at or before this allocation block
	reserved uint64 // allocation blocks [0, reserved) hold the headers and the journal log head
}

// auxExt is one extent of the chain as read from the medium.
type auxExt struct {
	ptr   disk.ExtentPtr
	start uint64
	n     uint64 // allocation blocks
	head  bool
	raw   []byte // stored bytes (after a write: what was written)
	ok0   bool   // tier 0 verified
	next  [2]disk.ExtentPtr
	state byte
}

func (e *auxExt) protOff() int {
	if e.head {
		return auxPtrsLen + 1
	}
	return auxPtrsLen
}

// auxChain is the walked list, in order starting at group 0's head.
type auxChain struct {
	g    auxGeometry
	ext  []*auxExt
	g1   int // index of group 1's head; len(ext) if there is none
	torn int // index of the extent failing tier 0, or -1
}

func (c *auxChain) group(g int) []int {
	lo, hi := 0, c.g1
	if g == 1 {
		lo, hi = c.g1, len(c.ext)
	}
	idx := make([]int, 0, hi-lo)
	for i := lo; i < hi; i++ {
		idx = append(idx, i)
	}
	return idx
}

// payloadCap is the payload bytes extent i holds.
func (c *auxChain) payloadCap(i int) uint64 {
	e := c.ext[i]
	return e.n*c.g.l.AllocBlockSize() - uint64(e.protOff()+disk.IntegrityLen(c.g.l))
}

func (c *auxChain) groupCap(g int) uint64 {
	var s uint64
	for _, i := range c.group(g) {
		s += c.payloadCap(i)
	}
	return s
}

// auxTier0 checks the tier 0 protection of an aux extent (no zero byte in
// the first 128 bytes) and returns its unmasked chain pointers and state.
func auxTier0(raw []byte, protOff int) (ok bool, next [2]disk.ExtentPtr, state byte) {
	if len(raw) < 128 {
		return false, next, 0
	}
	for _, b := range raw[:128] {
		if b == 0 {
			return false, next, 0
		}
	}
	var hdr [auxPtrsLen + 1]byte
	copy(hdr[:], raw[:protOff])
	mask := raw[protOff+disk.ChecksumLen]
	for i := range hdr[:protOff] {
		hdr[i] ^= mask
	}
	next[0] = disk.ReadExtentPtr(hdr[0:])
	next[1] = disk.ReadExtentPtr(hdr[8:])
	return true, next, hdr[auxPtrsLen]
}

// read reads and tier 0 checks the extent p points to.
func (g *auxGeometry) read(p disk.ExtentPtr) (*auxExt, error) {
	if p.IsNil() {
		return nil, auxCorruptf("NIL pointer in the extent chain")
	}
	if err := p.Check(g.l); err != nil {
		return nil, auxCorruptf("extent pointer %#x: %v", uint64(p), err)
	}
	start, n, indirect := p.Decode()
	if indirect {
		return nil, auxCorruptf("extent pointer %#x is indirect", uint64(p))
	}
	align := uint64(1) << max(g.l.IOBlockLog2, g.l.AuthTreeDataBlockLog2)
	if (start|(start+n))&(align-1) != 0 {
		return nil, auxCorruptf("extent %d+%d is not aligned to %d allocation blocks", start, n, align)
	}
	if start < g.reserved || start+n > g.limit {
		return nil, auxCorruptf("extent %d+%d lies outside allocation blocks %d-%d", start, n, g.reserved, g.limit-1)
	}
	e := &auxExt{ptr: p, start: start, n: n}
	for i, h := range g.heads {
		if h.IsNil() {
			continue
		}
		if hs, _, _ := h.Decode(); hs == start {
			if h != p {
				return nil, auxCorruptf("extent pointer %#x disagrees with update group %d's head pointer %#x", uint64(p), i, uint64(h))
			}
			e.head = true
		}
	}
	ab := g.l.AllocBlockSize()
	e.raw = make([]byte, n*ab)
	if _, err := g.dev.ReadAt(e.raw, int64(start*ab)); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("cocoonfs: aux metadata: read extent %d+%d: %w", start, n, err)
	}
	e.ok0, e.next, e.state = auxTier0(e.raw, e.protOff())
	return e, nil
}

// walk collects the circular list. At most one extent may fail tier 0, and
// only if there is an update group 1; it is skipped through its
// predecessor's next-but-one pointer. If group 0's head is the torn one, the
// walk starts at group 1's head.
func (g *auxGeometry) walk() (*auxChain, error) {
	c := &auxChain{g: *g, torn: -1}
	if g.heads[0].IsNil() {
		if !g.heads[1].IsNil() {
			return nil, auxCorruptf("update group 1 without update group 0")
		}
		return c, nil
	}
	if !g.heads[1].IsNil() {
		s0, _, _ := g.heads[0].Decode()
		s1, _, _ := g.heads[1].Decode()
		if s0 == s1 {
			return nil, auxCorruptf("both update groups have the same head extent")
		}
	}
	align := uint64(1) << max(g.l.IOBlockLog2, g.l.AuthTreeDataBlockLog2)
	maxExtents := min(g.limit/align+1, 1<<16)
	byStart := map[uint64]*auxExt{}
	get := func(p disk.ExtentPtr) (*auxExt, error) {
		s, _, _ := p.Decode()
		if e, ok := byStart[s]; ok {
			if e.ptr != p {
				return nil, auxCorruptf("two pointers to allocation block %d with different lengths", s)
			}
			return e, nil
		}
		if uint64(len(byStart)) >= maxExtents {
			return nil, auxCorruptf("the extent chain does not close")
		}
		e, err := g.read(p)
		if err != nil {
			return nil, err
		}
		byStart[s] = e
		return e, nil
	}

	h0, err := get(g.heads[0])
	if err != nil {
		return nil, err
	}
	var torn *auxExt
	first := h0
	if !h0.ok0 {
		if g.heads[1].IsNil() {
			return nil, auxCorruptf("the head extent of the only update group is torn")
		}
		torn = h0
		if first, err = get(g.heads[1]); err != nil {
			return nil, err
		}
		if !first.ok0 {
			return nil, auxCorruptf("the head extents of both update groups are torn")
		}
	}

	order := []*auxExt{first}
	seen := map[*auxExt]bool{first: true}
	add := func(e *auxExt) error {
		if seen[e] {
			return auxCorruptf("the extent chain loops back to allocation block %d", e.start)
		}
		seen[e] = true
		order = append(order, e)
		return nil
	}
	closes := func(p disk.ExtentPtr) (bool, error) {
		if s, _, _ := p.Decode(); s != first.start {
			return false, nil
		}
		if p != first.ptr {
			return false, auxCorruptf("the extent chain closes with a pointer of the wrong length")
		}
		return true, nil
	}
	cur := first
	for {
		done, err := closes(cur.next[0])
		if err != nil {
			return nil, err
		}
		if done {
			second := first.ptr
			if len(order) > 1 {
				second = order[1].ptr
			}
			if cur.next[1] != second {
				return nil, auxCorruptf("the last extent's next-but-one pointer %#x does not point to the second extent %#x", uint64(cur.next[1]), uint64(second))
			}
			break
		}
		e, err := get(cur.next[0])
		if err != nil {
			return nil, err
		}
		if err := add(e); err != nil {
			return nil, err
		}
		if e.ok0 {
			if cur.next[1] != e.next[0] {
				return nil, auxCorruptf("inconsistent chain at allocation block %d: next-but-one %#x, but the next extent's next is %#x", cur.start, uint64(cur.next[1]), uint64(e.next[0]))
			}
			cur = e
			continue
		}
		if torn != nil && torn != e {
			return nil, auxCorruptf("more than one torn extent (allocation blocks %d and %d)", torn.start, e.start)
		}
		if g.heads[1].IsNil() {
			return nil, auxCorruptf("torn extent at allocation block %d without an update group 1", e.start)
		}
		torn = e
		// Skip it through the next-but-one pointer.
		if done, err := closes(cur.next[1]); err != nil || done {
			if err != nil {
				return nil, err
			}
			break
		}
		m, err := get(cur.next[1])
		if err != nil {
			return nil, err
		}
		if err := add(m); err != nil {
			return nil, err
		}
		if !m.ok0 {
			return nil, auxCorruptf("more than one torn extent (allocation blocks %d and %d)", e.start, m.start)
		}
		cur = m
	}

	// Rotate so that group 0's head comes first; find group 1's head.
	i0 := slices.Index(order, h0)
	if i0 < 0 {
		return nil, auxCorruptf("the extent chain does not pass through update group 0's head")
	}
	c.ext = append(order[i0:], order[:i0]...)
	c.g1 = len(c.ext)
	if !g.heads[1].IsNil() {
		s1, _, _ := g.heads[1].Decode()
		c.g1 = slices.IndexFunc(c.ext, func(e *auxExt) bool { return e.start == s1 })
		if c.g1 <= 0 {
			return nil, auxCorruptf("the extent chain does not pass through update group 1's head")
		}
	}
	if torn != nil {
		c.torn = slices.Index(c.ext, torn)
	}
	// The extents must not overlap each other.
	sorted := slices.Clone(c.ext)
	slices.SortFunc(sorted, func(a, b *auxExt) int { return cmp.Compare(a.start, b.start) })
	for i := 1; i < len(sorted); i++ {
		if sorted[i-1].start+sorted[i-1].n > sorted[i].start {
			return nil, auxCorruptf("extents at allocation blocks %d and %d overlap", sorted[i-1].start, sorted[i].start)
		}
	}
	return c, nil
}

// extents returns the chain's extents in list order.
func (c *auxChain) extents() []disk.Extent {
	out := make([]disk.Extent, len(c.ext))
	for i, e := range c.ext {
		out[i] = disk.Extent{Start: e.start, Len: e.n}
	}
	return out
}

// damaged lists the extents failing their integrity check (necessarily in
// an inactive group): the one failing tier 0, if any, first, then those
// that pass tier 0 but not the rest (a head write torn past its first 128
// bytes). The format needs only the first repaired before another extent is
// written, as only tier 0 matters for walking the chain; offline updates
// repair them all, so that a reader treating any failed check as a torn
// extent never meets two after a further power cut.
func (c *auxChain) damaged() []int {
	var out []int
	if c.torn >= 0 {
		out = append(out, c.torn)
	}
	for i, e := range c.ext {
		if e.ok0 && c.verified(i) == nil {
			out = append(out, i)
		}
	}
	return out
}

// verified returns extent i's contents with the protections removed, or
// nil if they do not verify.
func (c *auxChain) verified(i int) []byte {
	e := c.ext[i]
	if !e.ok0 {
		return nil
	}
	b := bytes.Clone(e.raw)
	if err := disk.VerifyAndRemoveIntegrity(b, 0, e.protOff(), c.g.l); err != nil {
		return nil
	}
	return b
}

// evaluate finds the active group and decodes its contents. It also returns
// the group's encoded payload as stored (up to the termination record). An
// invalid state in a head that passes tier 0 is an error where the
// reference reports one: always before an update (strict), on reading only
// for heads examined before the active group is found.
func (c *auxChain) evaluate(strict bool) (*AuxMetadata, []byte, error) {
	if len(c.ext) == 0 {
		return &AuxMetadata{Group: -1}, nil, nil
	}
	groups := 1
	if c.g1 < len(c.ext) {
		groups = 2
	}
	badState := func(g int) error {
		if h := c.ext[c.group(g)[0]]; h.ok0 && h.state > auxStateReallocNeeded {
			return auxCorruptf("update group %d's head has the invalid state %d", g, h.state)
		}
		return nil
	}
	if strict {
		for g := range groups {
			if err := badState(g); err != nil {
				return nil, nil, err
			}
		}
	}
	for g := range groups {
		if err := badState(g); err != nil {
			return nil, nil, err
		}
		idx := c.group(g)
		h := c.ext[idx[0]]
		if !h.ok0 || h.state == auxStateInactive {
			continue
		}
		headPlain := c.verified(idx[0])
		if headPlain == nil {
			continue // head torn past tier 0: the group is not active
		}
		var payload []byte
		for _, i := range idx {
			plain := headPlain
			if i != idx[0] {
				if plain = c.verified(i); plain == nil {
					return nil, nil, auxCorruptf("extent at allocation block %d of the active update group %d fails its integrity check", c.ext[i].start, g)
				}
			}
			payload = append(payload, plain[c.ext[i].protOff()+disk.IntegrityLen(c.g.l):]...)
		}
		entries, reserve, err := decodeAuxPayload(payload)
		if err != nil {
			return nil, nil, fmt.Errorf("update group %d: %w", g, err)
		}
		md := &AuxMetadata{
			Entries:            entries,
			Reserve:            reserve,
			Group:              g,
			ReallocationNeeded: h.state == auxStateReallocNeeded,
			Capacity:           c.groupCap(0),
		}
		if groups == 2 {
			md.Capacity = min(md.Capacity, c.groupCap(1))
		}
		enc, err := disk.AppendAuxMetadata(nil, toDiskEntries(entries), reserve)
		if err != nil {
			return nil, nil, auxCorruptf("%v", err)
		}
		return md, enc, nil
	}
	return nil, nil, auxCorruptf("no update group is active")
}

// auxImage describes where an image keeps its aux metadata.
type auxImage struct {
	dev blockdev.Device
	l   disk.Layout

	// Formatted images.
	formatted bool
	geom      auxGeometry
	journal   disk.JournalState

	// Creation info images: the effective header and its location.
	mkfs    disk.MkfsInfoHeader
	mkfsOff uint64
	backup  bool // the effective header is the backup copy
}

func probeAuxImage(dev blockdev.Device) (*auxImage, error) {
	first, err := readUpTo(dev, 0, disk.MinHeaderReadLen)
	if err != nil {
		return nil, err
	}
	kind, perr := disk.ProbeHeader(padTo128(first))
	if kind == disk.HeaderRegular && perr == nil {
		sh, err := readStaticHeader(dev)
		if err != nil {
			return nil, err
		}
		return probeFormatted(dev, sh)
	}
	if kind == disk.HeaderMkfs && perr == nil {
		if h, err := readMkfsHeaderAt(dev, 0); err == nil {
			return &auxImage{dev: dev, l: h.Layout, mkfs: h}, nil
		} else if kind == disk.HeaderMkfs && !errors.Is(err, disk.ErrTorn) {
			return nil, fmt.Errorf("cocoonfs: creation info header: %w", err)
		}
	}
	// The primary header is missing or torn: an interrupted format or aux
	// metadata update leaves the backup creation info header.
	if off, ok := disk.MkfsInfoBackupOffset(uint64(dev.Size()), disk.Layout{}); ok {
		if h, err := readMkfsHeaderAt(dev, off); err == nil {
			if boff, ok := disk.MkfsInfoBackupOffset(uint64(dev.Size()), h.Layout); ok && boff == off {
				return &auxImage{dev: dev, l: h.Layout, mkfs: h, mkfsOff: off, backup: true}, nil
			}
		}
	}
	if kind == disk.HeaderNone {
		return nil, fmt.Errorf("cocoonfs: %w: no CocoonFS magic at offset 0", ErrNotCocoonFS)
	}
	return nil, fmt.Errorf("cocoonfs: header: %w", perr)
}

func padTo128(b []byte) []byte {
	if len(b) >= disk.MinHeaderReadLen {
		return b
	}
	return append(bytes.Clone(b), make([]byte, disk.MinHeaderReadLen-len(b))...)
}

func readMkfsHeaderAt(dev blockdev.Device, off uint64) (disk.MkfsInfoHeader, error) {
	first, err := readUpTo(dev, off, disk.MinHeaderReadLen)
	if err != nil {
		return disk.MkfsInfoHeader{}, err
	}
	n, err := disk.MkfsInfoHeaderReadLen(padTo128(first))
	if err != nil {
		return disk.MkfsInfoHeader{}, err
	}
	b, err := readUpTo(dev, off, n)
	if err != nil {
		return disk.MkfsInfoHeader{}, err
	}
	return disk.DecodeMkfsInfoHeader(b)
}

// probeFormatted finds the aux head pointers: the journal log head's if a
// journal is active (the mutable header may then be stale), else the
// mutable header's.
func probeFormatted(dev blockdev.Device, sh disk.StaticHeader) (*auxImage, error) {
	l := sh.Layout
	algs, err := resolveAlgorithms(l)
	if err != nil {
		return nil, fmt.Errorf("cocoonfs: aux metadata: cannot locate the mutable header: %w", err)
	}
	ab := l.AllocBlockSize()
	bs, rootLen, preLen := algs.cipher.BlockSize, algs.rootHMAC.Size, algs.preauthHMAC.Size
	jhOff := disk.JournalLogHeadOffset(sh, rootLen, bs, preLen)
	jhLen, err := disk.JournalLogHeadLen(l, bs, preLen)
	if err != nil {
		return nil, fmt.Errorf("cocoonfs: journal log head: %w", err)
	}
	jb, err := readUpTo(dev, jhOff, jhLen)
	if err != nil {
		return nil, err
	}
	if uint64(len(jb)) < jhLen {
		return nil, corruptf("image ends inside the journal log head at offset %d", jhOff)
	}
	jh, err := disk.DecodeJournalLogHead(jb, l)
	if err != nil {
		return nil, fmt.Errorf("cocoonfs: journal log head: %w", err)
	}
	img := &auxImage{dev: dev, l: l, formatted: true, journal: jh.State}
	img.geom = auxGeometry{dev: dev, l: l, limit: uint64(dev.Size()) / ab, reserved: (jhOff + jhLen) / ab}
	if jh.State == disk.JournalActive {
		img.geom.heads = jh.AuxHeads
		return img, nil
	}
	mhOff := disk.MutableHeaderOffset(sh)
	mhLen := disk.MutableHeaderPaddedLen(l, rootLen, bs, preLen)
	mb, err := readUpTo(dev, mhOff, mhLen)
	if err != nil {
		return nil, err
	}
	if uint64(len(mb)) < mhLen {
		return nil, corruptf("image ends inside the mutable header")
	}
	mh, err := disk.DecodeMutableHeader(mb, l, rootLen, bs, preLen)
	if err != nil {
		return nil, fmt.Errorf("cocoonfs: mutable header: %w", err)
	}
	img.geom.heads = mh.AuxHeads
	img.geom.limit = min(img.geom.limit, mh.ImageSizeAllocBlocks)
	return img, nil
}

// ReadAuxMetadata reads the auxiliary filesystem metadata of the image on
// dev without the key: from the aux metadata update groups of a formatted
// image (following a pending journal's pointers, if any), or from the blob
// stored with a filesystem creation info header. An image without aux
// metadata yields no entries and no reserve.
//
// The result is unauthenticated; see AuxMetadata.
func ReadAuxMetadata(dev blockdev.Device) (*AuxMetadata, error) {
	img, err := probeAuxImage(dev)
	if err != nil {
		return nil, err
	}
	if !img.formatted {
		md, _, err := img.readMkfsAux()
		return md, err
	}
	c, err := img.geom.walk()
	if err != nil {
		return nil, err
	}
	md, _, err := c.evaluate(false)
	return md, err
}

// AuxMetadata reads the image's auxiliary filesystem metadata. Like
// everything about aux metadata it is NOT authenticated, even though f was
// opened with the key: the format keeps it in plaintext, outside the
// authentication tree, so that it can be changed without the key. Do not
// base security decisions on it; authenticate what you use.
func (f *FS) AuxMetadata() (*AuxMetadata, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	g := f.auxGeometry()
	c, err := g.walk()
	if err != nil {
		return nil, err
	}
	md, _, err := c.evaluate(false)
	return md, err
}

// auxGeometry locates the open image's aux metadata chain; the caller
// holds f.mu or is bootstrapping f.
func (f *FS) auxGeometry() auxGeometry {
	return auxGeometry{
		dev:      f.dev,
		l:        f.layout,
		heads:    f.header.AuxHeads,
		limit:    f.imageAllocBlocks,
		reserved: f.journalHead.Start + f.journalHead.Len,
	}
}

// auxChainExtents returns the aux metadata extents of both update groups in
// list order, tolerating the one torn extent the format allows anywhere in
// the chain (including group 0's head, which an offline update invalidates
// while rewriting it). Open and journal replay use it through
// walkAuxExtents (read.go), which should just return it; like them it reads
// f's fields without locking.
func (f *FS) auxChainExtents() ([]disk.Extent, error) {
	g := f.auxGeometry()
	c, err := g.walk()
	if err != nil {
		return nil, err
	}
	return c.extents(), nil
}
