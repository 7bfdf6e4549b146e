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
	"errors"
	"fmt"
	"slices"

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
