package cocoonfs

import (
	"bytes"
	"fmt"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// Offline (keyless) updates of the aux metadata: the A/B update group
// protocol on formatted images and the blob beside a creation info header.
// Online updates are part of a transaction (Tx.SetAuxMetadata, buildAux).

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
