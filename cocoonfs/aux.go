package cocoonfs

// Auxiliary filesystem metadata (spec "Auxiliary filesystem metadata";
// reference aux_fs_metadata.rs): plaintext UUID-tagged records that can be
// read, and updated offline, without the filesystem key.
//
// Facts taken from the reference where the spec is silent or loose:
//
//   - Extent layout: next ptr | next-but-one ptr | state (group heads only) |
//     integrity section (head skip 0, offset 16 or 17) | payload part. The
//     chain pointers and the state lie in the tier 0 realm; tier 0 alone
//     decides whether an extent counts as torn for the purpose of walking
//     the chain (at most one may be, and only with an update group 1).
//   - The torn extent may be in either group, including group 0's head: the
//     spec's own update protocol invalidates group 0's extents while it
//     rewrites them. Walking then starts at group 1's head.
//   - The active group is the first of group 0, group 1 whose head passes
//     tier 0 with a non-zero state and then its full integrity check; a head
//     that passes tier 0 but fails the full check makes its group inactive.
//     An extent of the active group failing its check is an error.
//   - The group payload is the concatenation of its extents' payload parts;
//     everything after the termination record must be zero.
//   - Updating a group of more than one extent first rewrites its head as
//     inactive (zero payload), then the tails, then the head with its state:
//     without that, a crash between tail and head writes would leave an
//     active group mixing old and new parts.
//   - If group 0 is not active, group 1 already holds the effective contents
//     and the mirroring step is skipped.
//   - ACTIVE_REALLOCATION_NEEDED is set if, for either group, the encoded
//     contents plus the extra reserve exceed the group's capacity, or the
//     capacity exceeds that by at least one max(IO Block, Auth Tree Data
//     Block) (0 bytes are needed for no entries and a reserve of 0).
//   - A torn extent is repaired by rewriting it inactive with a zero payload,
//     unless it is the head of the group written next. (sealfs also repairs
//     extents that pass tier 0 but fail the full check, which the reference
//     leaves alone; see auxChain.damaged.)

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

// AuxEntry (one record: UUID tag and data) is declared in mkfsinfo.go,
// which another change adds at the same time. Should that file not keep
// it, declare it here: type AuxEntry struct{ UUID [16]byte; Data []byte }.

// AuxMetadata is the auxiliary filesystem metadata of an image: free-form
// records tagged with UUIDs, stored in plaintext so that they can be read
// (and updated) without the filesystem key, for instance to carry a wrapped
// key to a key broker.
//
// Nothing in AuxMetadata is authenticated, not even when read through an
// open FS: anyone with write access to the medium can change it at will. A
// caller must authenticate whatever it uses (a wrapped key by its wrapping,
// a policy by a signature) and must not let its contents weaken any security
// decision.
type AuxMetadata struct {
	// Entries in increasing UUID order; equal UUIDs keep their order.
	Entries []AuxEntry
	// Reserve is the extra reserve capacity: the bytes the next (keyed)
	// reallocation of the aux metadata extents sets aside in both update
	// groups beyond the encoded contents, for later offline updates. nil
	// means none is defined: that reallocation then allocates no update
	// group 1, and offline updates become impossible.
	Reserve *uint64
	// Group is the update group the contents were read from (0 or 1), or -1
	// if they do not come from update groups (no aux metadata extents, or a
	// filesystem creation info image).
	Group int
	// ReallocationNeeded is the active group's "reallocation needed" hint,
	// set by offline updates that drew on the reserve.
	ReallocationNeeded bool
	// Capacity is the payload an offline update can store: the smaller of
	// the two update groups' payload capacities in bytes (or group 0's if
	// there is no group 1). It is 0 where contents are not stored in update
	// groups.
	Capacity uint64
}

// Aux metadata update group states (spec AUX_FS_METADATA_UPDATE_GROUP_STATE_*).
const (
	auxStateInactive      byte = 0
	auxStateActive        byte = 1
	auxStateReallocNeeded byte = 2
)

// auxPtrsLen is the length of the next / next-but-one pointer pair.
const auxPtrsLen = 16

// auxEntryHeaderLen is UUID (16) | data length u32le (4).
const auxEntryHeaderLen = 20

// ErrAuxOnlineUpdateNeeded: an offline (keyless) aux metadata update cannot
// be done because there is no update group 1 or the new contents do not fit
// the update groups; an online update with the key, which can reallocate,
// is needed. Errors wrapping it also match ErrNoSpace.
var ErrAuxOnlineUpdateNeeded = errors.New("an online (keyed) aux metadata update is needed")

type auxNoRoomError struct{ msg string }

func (e *auxNoRoomError) Error() string { return e.msg }
func (e *auxNoRoomError) Is(target error) bool {
	return target == ErrAuxOnlineUpdateNeeded || target == ErrNoSpace
}

func auxNoRoomf(format string, args ...any) error {
	return &auxNoRoomError{"cocoonfs: aux metadata: " + fmt.Sprintf(format, args...) +
		"; an online update with the key (which can reallocate the aux metadata extents) is needed"}
}

func auxCorruptf(format string, args ...any) error {
	return corruptf("aux metadata: "+format, args...)
}

// Add appends a record for uuid after all records whose UUID sorts before or
// equal to it, so the entries stay sorted and a new record comes after the
// existing ones with the same UUID. The all-zero UUID is reserved for the
// termination record and data is limited to 2^32-1 bytes.
func (m *AuxMetadata) Add(uuid [16]byte, data []byte) error {
	if uuid == ([16]byte{}) {
		return errors.New("cocoonfs: aux metadata: the all-zero UUID is reserved")
	}
	if uint64(len(data)) > 1<<32-1 {
		return fmt.Errorf("cocoonfs: aux metadata: %d bytes of data exceed the 2^32-1 limit of a record", len(data))
	}
	i := len(m.Entries)
	for i > 0 && bytes.Compare(m.Entries[i-1].UUID[:], uuid[:]) > 0 {
		i--
	}
	m.Entries = slices.Insert(m.Entries, i, AuxEntry{UUID: uuid, Data: bytes.Clone(data)})
	return nil
}

// Remove deletes the index-th record (0-based) among those tagged uuid and
// reports whether there was one.
func (m *AuxMetadata) Remove(uuid [16]byte, index int) bool {
	if i := m.find(uuid, index); i >= 0 {
		m.Entries = slices.Delete(m.Entries, i, i+1)
		return true
	}
	return false
}

// Get returns the data of the index-th record (0-based) tagged uuid.
func (m *AuxMetadata) Get(uuid [16]byte, index int) ([]byte, bool) {
	if i := m.find(uuid, index); i >= 0 {
		return m.Entries[i].Data, true
	}
	return nil, false
}

func (m *AuxMetadata) find(uuid [16]byte, index int) int {
	if index < 0 {
		return -1
	}
	for i, e := range m.Entries {
		if e.UUID == uuid {
			if index == 0 {
				return i
			}
			index--
		}
	}
	return -1
}

// EncodedLen is the length of the contents' on-medium encoding, termination
// record included, reserve excluded.
func (m *AuxMetadata) EncodedLen() uint64 {
	n := uint64(auxEntryHeaderLen)
	if m.Reserve != nil {
		n += 8
	}
	for _, e := range m.Entries {
		n += auxEntryHeaderLen + uint64(len(e.Data))
	}
	return n
}

func (m *AuxMetadata) clone() *AuxMetadata {
	c := *m
	c.Entries = make([]AuxEntry, len(m.Entries))
	for i, e := range m.Entries {
		c.Entries[i] = AuxEntry{UUID: e.UUID, Data: bytes.Clone(e.Data)}
	}
	if m.Reserve != nil {
		r := *m.Reserve
		c.Reserve = &r
	}
	return &c
}

// encodeAux returns the payload encoding of m, sorting the entries by UUID
// first (stably, so records an update callback appended land after existing
// ones with the same UUID).
func encodeAux(m *AuxMetadata) ([]byte, error) {
	slices.SortStableFunc(m.Entries, func(a, b AuxEntry) int { return bytes.Compare(a.UUID[:], b.UUID[:]) })
	for i, e := range m.Entries {
		if e.UUID == ([16]byte{}) {
			return nil, fmt.Errorf("cocoonfs: aux metadata entry %d: the all-zero UUID is reserved", i)
		}
	}
	p, err := disk.AppendAuxMetadata(nil, toDiskEntries(m.Entries), m.Reserve)
	if err != nil {
		return nil, fmt.Errorf("cocoonfs: aux metadata: %w", err)
	}
	if m.Reserve != nil && uint64(len(p)) > ^uint64(0)-*m.Reserve {
		return nil, fmt.Errorf("cocoonfs: aux metadata: a reserve of %d bytes overflows the 64-bit storage size", *m.Reserve)
	}
	return p, nil
}

func toDiskEntries(in []AuxEntry) []disk.AuxEntry {
	out := make([]disk.AuxEntry, len(in))
	for i, e := range in {
		out[i] = disk.AuxEntry{UUID: e.UUID, Data: e.Data}
	}
	return out
}

// decodeAuxPayload decodes a group's concatenated payload (or a creation
// info blob's payload): the records, then only zeros.
func decodeAuxPayload(p []byte) ([]AuxEntry, *uint64, error) {
	de, reserve, consumed, err := disk.DecodeAuxMetadata(p)
	if err != nil {
		return nil, nil, fmt.Errorf("cocoonfs: aux metadata: %w", err)
	}
	for i, b := range p[consumed:] {
		if b != 0 {
			return nil, nil, auxCorruptf("byte %d after the termination record is %#x, not zero", consumed+i, b)
		}
	}
	if reserve != nil && *reserve > ^uint64(0)-uint64(consumed) {
		return nil, nil, auxCorruptf("extra reserve of %d bytes overflows the 64-bit storage size", *reserve)
	}
	entries := make([]AuxEntry, len(de))
	for i, e := range de {
		entries[i] = AuxEntry{UUID: e.UUID, Data: bytes.Clone(e.Data)}
	}
	return entries, reserve, nil
}

// needsRealloc is the reference's rule for setting
// ACTIVE_REALLOCATION_NEEDED on an offline update.
func needsRealloc(m *AuxMetadata, encLen, capacity uint64, l disk.Layout) bool {
	var need uint64
	trivial := len(m.Entries) == 0 && (m.Reserve == nil || *m.Reserve == 0)
	if !trivial {
		need = encLen
		if m.Reserve != nil {
			need += *m.Reserve
		}
	}
	block := l.AllocBlockSize() << max(l.IOBlockLog2, l.AuthTreeDataBlockLog2)
	return need > capacity || capacity-need >= block
}

// ---------------------------------------------------------------------------
// Formatted images: the circular extent list.

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

// ---------------------------------------------------------------------------
// Locating the aux metadata without a key.

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

// ---------------------------------------------------------------------------
// Offline updates.

// UpdateAuxMetadataOffline changes the auxiliary filesystem metadata of the
// image on dev without the key. update receives a copy of the current
// contents (entries, reserve) and edits it; when it returns nil the new
// contents are written. Entries end up sorted by UUID, records with equal
// UUIDs keeping their relative order (use AuxMetadata.Add).
//
// On a formatted image the update follows the format's A/B protocol over the
// two update groups, every extent written with the fail-safe extent write
// protocol: a power cut at any point leaves either the old or the new
// contents readable. It needs an update group 1 and room for the new
// contents in both groups (the slack the extra reserve left at the last
// allocation); otherwise it fails with an error matching
// ErrAuxOnlineUpdateNeeded (and ErrNoSpace). An image with a pending journal
// is refused (ErrPendingJournal): the journal may move the aux metadata.
//
// On an image holding only a filesystem creation info header, the blob next
// to the header is updated through the backup header location (the spec's
// A/B strategy), which must lie beyond the primary data on the device.
//
// Nothing authenticated changes (aux metadata extents are excluded from the
// authentication tree), so the image still opens and verifies with its key.
// Writable devices whose block size exceeds the image's IO block are refused
// (ErrIOBlockTooSmall), as by Open; use UpdateAuxMetadataOfflineOptions with
// Options.Force to accept the risk.
func UpdateAuxMetadataOffline(dev blockdev.Device, update func(*AuxMetadata) error) error {
	return UpdateAuxMetadataOfflineOptions(dev, nil, update)
}

// UpdateAuxMetadataOfflineOptions is UpdateAuxMetadataOffline with options;
// only Options.Force is used.
func UpdateAuxMetadataOfflineOptions(dev blockdev.Device, opts *Options, update func(*AuxMetadata) error) error {
	if opts == nil {
		opts = &Options{}
	}
	if blockdev.IsReadOnly(dev) {
		return fmt.Errorf("cocoonfs: aux metadata update: %w", blockdev.ErrReadOnly)
	}
	img, err := probeAuxImage(dev)
	if err != nil {
		return err
	}
	if bs := uint64(dev.BlockSize()); !opts.Force && bs > img.l.IOBlockSize() {
		return fmt.Errorf("cocoonfs: aux metadata update: %w: the image's IO block is %d bytes but the device writes in %d-byte blocks, so a torn write could damage two aux metadata extents (or headers) at once; pass --force (Options.Force) to accept the risk",
			ErrIOBlockTooSmall, img.l.IOBlockSize(), bs)
	}
	w := &auxWriter{dev: dev, devIO: min(uint64(dev.BlockSize()), img.l.IOBlockSize())}
	if !img.formatted {
		return img.updateMkfsAux(w, update)
	}
	if img.journal == disk.JournalActive {
		return fmt.Errorf("cocoonfs: aux metadata: offline update refused: %w (the committed transaction may reallocate the aux metadata; open the image read-write with the key to replay it first)", ErrPendingJournal)
	}
	c, err := img.geom.walk()
	if err != nil {
		return err
	}
	if len(c.ext) == 0 {
		return auxNoRoomf("the image has no aux metadata extents")
	}
	if c.g1 == len(c.ext) {
		return auxNoRoomf("the image has no update group 1 (no extra reserve was defined at the last allocation)")
	}
	cur, oldEnc, err := c.evaluate(true)
	if err != nil {
		return err
	}
	next := cur.clone()
	if err := update(next); err != nil {
		return err
	}
	newEnc, err := encodeAux(next)
	if err != nil {
		return err
	}
	l := img.l
	cap0, cap1 := c.groupCap(0), c.groupCap(1)
	if n := uint64(len(newEnc)); n > cap0 || n > cap1 {
		return auxNoRoomf("the new contents take %d bytes, but the update groups hold %d and %d", n, cap0, cap1)
	}
	if cur.Group == 0 && uint64(len(oldEnc)) > cap1 {
		return auxNoRoomf("the current contents (%d bytes) do not fit update group 1 (%d bytes) for the fail-safe copy", len(oldEnc), cap1)
	}
	realloc := needsRealloc(next, uint64(len(newEnc)), cap0, l) || needsRealloc(next, uint64(len(newEnc)), cap1, l)
	damaged := c.damaged()
	if cur.Group == 0 && len(damaged) == 0 && realloc == cur.ReallocationNeeded && bytes.Equal(oldEnc, newEnc) {
		return nil // nothing to do
	}

	// 1. Repair damaged extents, unless one is the first extent written below
	// anyway (group 1's head if group 0 holds the contents, else group 0's).
	first := 0
	if cur.Group == 0 {
		first = c.g1
	}
	for _, i := range damaged {
		if i == first {
			continue
		}
		if err := c.writeExtent(w, i, auxStateInactive, nil); err != nil {
			return err
		}
	}
	// 2./3. Make group 1 an active copy of the current contents (if group 0
	// holds them; if group 1 is the active one, it already does).
	if cur.Group == 0 {
		state := auxStateActive
		if cur.ReallocationNeeded {
			state = auxStateReallocNeeded
		}
		if err := c.writeGroup(w, 1, oldEnc, state); err != nil {
			return err
		}
	}
	// 4. Write the new contents to group 0.
	state := auxStateActive
	if realloc {
		state = auxStateReallocNeeded
	}
	if err := c.writeGroup(w, 0, newEnc, state); err != nil {
		return err
	}
	return w.sync()
}

// auxWriter performs the fail-safe writes.
type auxWriter struct {
	dev   blockdev.Device
	devIO uint64 // the device IO block: min(device block size, image IO block)
}

func (w *auxWriter) sync() error {
	if err := w.dev.Sync(); err != nil {
		return fmt.Errorf("cocoonfs: aux metadata: write barrier: %w", err)
	}
	return nil
}

func (w *auxWriter) write(p []byte, off uint64) error {
	if _, err := w.dev.WriteAt(p, int64(off)); err != nil {
		return fmt.Errorf("cocoonfs: aux metadata: write of %d bytes at %d: %w", len(p), off, err)
	}
	return nil
}

// failSafe writes buf at off following the spec's fail-safe extent write
// protocol, preceded by a barrier so that earlier writes to other extents
// are durable before this one becomes invalid (at most one extent of the
// chain may be invalid at a time): barrier, zero the first device IO block,
// barrier, tail, barrier, first device IO block.
func (w *auxWriter) failSafe(buf []byte, off uint64) error {
	head := min(w.devIO, uint64(len(buf)))
	if err := w.sync(); err != nil {
		return err
	}
	if err := w.write(make([]byte, head), off); err != nil {
		return err
	}
	if err := w.sync(); err != nil {
		return err
	}
	if uint64(len(buf)) > head {
		if err := w.write(buf[head:], off+head); err != nil {
			return err
		}
		if err := w.sync(); err != nil {
			return err
		}
	}
	return w.write(buf[:head], off)
}

// commitTails returns the first and last bytes of the commit IDs possibly
// on the medium in extent e: the one in its integrity section and the one
// at its last tier 1 checkpoint, so the new commit ID differs from both.
func (c *auxChain) commitTails(e *auxExt) [2][2]byte {
	sec := e.protOff()
	cid := e.raw[sec : sec+disk.ChecksumLen]
	var t [2][2]byte
	t[0] = [2]byte{cid[0], cid[disk.ChecksumLen-1]}
	if iob := c.g.l.IOBlockSize(); iob > 128 && uint64(len(e.raw)) >= iob {
		cp := e.raw[iob-disk.ChecksumLen : iob]
		t[1] = [2]byte{cp[0], cp[disk.ChecksumLen-1]}
	}
	return t
}

// writeExtent writes extent i with the given state (heads only) and payload
// part, chain pointers from the list.
func (c *auxChain) writeExtent(w *auxWriter, i int, state byte, part []byte) error {
	e := c.ext[i]
	l := c.g.l
	buf := make([]byte, e.n*l.AllocBlockSize())
	n := len(c.ext)
	c.ext[(i+1)%n].ptr.Append(buf[:0])
	c.ext[(i+2)%n].ptr.Append(buf[8:8])
	prot := e.protOff()
	if e.head {
		buf[auxPtrsLen] = state
	}
	if uint64(len(part)) > c.payloadCap(i) {
		return fmt.Errorf("cocoonfs: aux metadata: internal error: %d payload bytes for an extent holding %d", len(part), c.payloadCap(i))
	}
	copy(buf[prot+disk.IntegrityLen(l):], part)
	if err := disk.ApplyIntegrityAvoiding(buf, 0, prot, l, c.commitTails(e)); err != nil {
		return fmt.Errorf("cocoonfs: aux metadata: %w", err)
	}
	if err := w.failSafe(buf, e.start*l.AllocBlockSize()); err != nil {
		return err
	}
	e.raw = buf
	e.ok0, e.next, e.state = auxTier0(buf, prot)
	return nil
}

// writeGroup stores payload in group g: a multi-extent group is first made
// inactive through its head, then its tails are written, then its head with
// state; a single-extent group is written in one fail-safe step.
func (c *auxChain) writeGroup(w *auxWriter, g int, payload []byte, state byte) error {
	idx := c.group(g)
	headCap := min(c.payloadCap(idx[0]), uint64(len(payload)))
	if len(idx) > 1 {
		if err := c.writeExtent(w, idx[0], auxStateInactive, nil); err != nil {
			return err
		}
		pos := headCap
		for _, i := range idx[1:] {
			end := min(pos+c.payloadCap(i), uint64(len(payload)))
			if err := c.writeExtent(w, i, 0, payload[pos:end]); err != nil {
				return err
			}
			pos = end
		}
	}
	return c.writeExtent(w, idx[0], state, payload[:headCap])
}

// ---------------------------------------------------------------------------
// Creation info images.

// mkfsAuxRange returns where the blob of auxLen payload bytes lies for a
// creation info header at off: after a primary header, before the backup.
func (img *auxImage) mkfsAuxRange(off uint64, backup bool, auxLen uint64) (uint64, uint64) {
	n := disk.MkfsInfoAuxLen(auxLen, img.l)
	if !backup {
		return img.mkfs.Len(), n
	}
	return off - n, n
}

// readMkfsAux reads the blob next to the effective creation info header.
func (img *auxImage) readMkfsAux() (*AuxMetadata, []byte, error) {
	h := img.mkfs
	if h.AuxMetadataLen == 0 {
		return &AuxMetadata{Group: -1}, nil, nil
	}
	if h.AuxMetadataLen > uint64(img.dev.Size()) {
		return nil, nil, auxCorruptf("creation info header records %d bytes of aux metadata on a %d-byte device", h.AuxMetadataLen, img.dev.Size())
	}
	off, n := img.mkfsAuxRange(img.mkfsOff, img.backup, h.AuxMetadataLen)
	if img.backup && n > img.mkfsOff {
		return nil, nil, auxCorruptf("%d bytes of aux metadata do not fit before the backup creation info header", n)
	}
	b, err := readUpTo(img.dev, off, n)
	if err != nil {
		return nil, nil, err
	}
	if uint64(len(b)) < n {
		return nil, nil, auxCorruptf("the device ends inside the aux metadata stored with the creation info header")
	}
	if _, _, err := disk.DecodeMkfsInfoAux(b, h.AuxMetadataLen, img.l); err != nil {
		return nil, nil, fmt.Errorf("cocoonfs: aux metadata: %w", err)
	}
	payload := b[8 : 8+h.AuxMetadataLen]
	entries, reserve, err := decodeAuxPayload(payload)
	if err != nil {
		return nil, nil, err
	}
	return &AuxMetadata{Entries: entries, Reserve: reserve, Group: -1}, bytes.Clone(payload), nil
}

// mkfsAuxBlob encapsulates a payload: checksum | payload | zero padding to
// the IO Block, the checksum covering payload and padding.
func mkfsAuxBlob(payload []byte, l disk.Layout) []byte {
	if len(payload) == 0 {
		return nil
	}
	b := make([]byte, disk.MkfsInfoAuxLen(uint64(len(payload)), l))
	copy(b[8:], payload)
	sum := disk.Checksum(b[8:])
	copy(b, sum[:])
	return b
}

// updateMkfsAux updates the blob next to a creation info header with the
// spec's A/B strategy over the primary and backup header locations:
//
//  1. (primary effective) invalidate the backup header, barrier, write the
//     current blob before it, barrier, write the header there (fail-safe);
//  2. invalidate the primary header, barrier, write the new blob after it,
//     barrier, write the updated header (fail-safe);
//  3. invalidate the backup header again.
//
// If only the backup is valid (an interrupted update), step 1 is skipped.
func (img *auxImage) updateMkfsAux(w *auxWriter, update func(*AuxMetadata) error) error {
	cur, oldPayload, err := img.readMkfsAux()
	if err != nil {
		return err
	}
	next := cur.clone()
	if err := update(next); err != nil {
		return err
	}
	newPayload, err := encodeAux(next)
	if err != nil {
		return err
	}
	if len(next.Entries) == 0 && next.Reserve == nil {
		newPayload = nil // no aux metadata at all: aux length 0
	}
	if !img.backup && bytes.Equal(oldPayload, newPayload) {
		return nil
	}
	size := uint64(img.dev.Size())
	l := img.l
	hdrLen := img.mkfs.Len()
	boff, ok := disk.MkfsInfoBackupOffset(size, l)
	if !ok || boff+hdrLen > size {
		return fmt.Errorf("cocoonfs: aux metadata: the %d-byte device is too small to hold the backup creation info header a fail-safe update needs; grow it to the image size the header records (%d bytes) first: %w",
			size, img.mkfs.ImageSizeAllocBlocks*l.AllocBlockSize(), ErrNoSpace)
	}
	if img.backup && boff != img.mkfsOff {
		return auxCorruptf("backup creation info header at %d, expected at %d", img.mkfsOff, boff)
	}
	oldBlob := mkfsAuxBlob(oldPayload, l)
	newBlob := mkfsAuxBlob(newPayload, l)
	backupStart := boff - uint64(len(oldBlob))
	if uint64(len(oldBlob)) > boff || hdrLen+uint64(len(newBlob)) > backupStart {
		return fmt.Errorf("cocoonfs: aux metadata: %d bytes do not fit between the creation info header and its backup copy at %d: %w",
			len(newPayload), boff, ErrNoSpace)
	}

	oldHdr := img.mkfs
	oldHdr.AuxMetadataLen = uint64(len(oldPayload))
	newHdr := img.mkfs
	newHdr.AuxMetadataLen = uint64(len(newPayload))
	if !img.backup {
		// 1. The backup copy of the current state.
		b, err := disk.EncodeMkfsInfoHeader(oldHdr)
		if err != nil {
			return fmt.Errorf("cocoonfs: creation info header: %w", err)
		}
		if err := w.sync(); err != nil {
			return err
		}
		if err := w.write(make([]byte, hdrLen), boff); err != nil {
			return err
		}
		if err := w.sync(); err != nil {
			return err
		}
		if len(oldBlob) > 0 {
			if err := w.write(oldBlob, backupStart); err != nil {
				return err
			}
			if err := w.sync(); err != nil {
				return err
			}
		}
		if err := w.failSafe(b, boff); err != nil {
			return err
		}
	}
	// 2. The primary copy of the new state.
	b, err := disk.EncodeMkfsInfoHeader(newHdr)
	if err != nil {
		return fmt.Errorf("cocoonfs: creation info header: %w", err)
	}
	if err := w.sync(); err != nil {
		return err
	}
	if err := w.write(make([]byte, hdrLen), 0); err != nil {
		return err
	}
	if err := w.sync(); err != nil {
		return err
	}
	if len(newBlob) > 0 {
		if err := w.write(newBlob, hdrLen); err != nil {
			return err
		}
		if err := w.sync(); err != nil {
			return err
		}
	}
	if err := w.failSafe(b, 0); err != nil {
		return err
	}
	// 3. Retire the backup.
	if err := w.sync(); err != nil {
		return err
	}
	if err := w.write(make([]byte, min(w.devIO, hdrLen)), boff); err != nil {
		return err
	}
	return w.sync()
}
