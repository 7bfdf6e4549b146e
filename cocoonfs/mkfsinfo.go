package cocoonfs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"slices"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// Keyless provisioning (spec "Online filesystem creation support"): a party
// without the key writes a filesystem creation info header (WriteMkfsInfo);
// the first read-write open with a key formats the image from it
// (FormatMkfsInfo). The header carries the layout, algorithms, salt and image
// size, and optionally initial aux metadata stored in a blob next to it.

// AuxEntry is one auxiliary filesystem metadata entry: plaintext data tagged
// with an RFC 4122 UUID (all-zero is reserved), kept alongside the encrypted
// filesystem, for example a wrapped key for a remote attestation service.
type AuxEntry struct {
	UUID [16]byte
	Data []byte
}

// MkfsInfoOptions describe the filesystem a creation info header asks for.
// The algorithm and layout fields mean what they mean in MkfsOptions.
type MkfsInfoOptions struct {
	// Size of the image to create, in bytes; 0 means the device's size. It
	// must be a multiple of the IO block.
	Size int64

	Hash     string // "sha2" (default), "sha3" or "sm3"
	Cipher   string // "aes" (default), "camellia" or "sm4"
	Strength int    // 128 (default), 192 or 256
	// Salt for the root key derivation; nil means 32 random bytes. The
	// header is not authenticated: whoever formats the image must check
	// the salt and algorithms by other means if that matters to them.
	Salt []byte

	AllocationBlock   int
	IOBlock           int
	AuthTreeDataBlock int
	AuthTreeNode      int
	IndexNode         int
	BitmapBlock       int

	// AuxEntries are stored in the aux metadata blob next to the header and
	// become the formatted filesystem's aux metadata. They are sorted by
	// UUID (stably: entries with equal UUIDs keep their order).
	AuxEntries []AuxEntry
	// AuxReserve is the aux metadata extra reserve capacity in bytes
	// (default 1 KiB); NoAuxReserve records none, so the filesystem gets no
	// second update group. Without entries and reserve no blob is stored.
	AuxReserve   int
	NoAuxReserve bool

	// Trim shrinks the device to the header and its aux metadata (the
	// device must implement blockdev.Resizer); the format grows it back to
	// the image size. Without Trim a device smaller than the image is grown
	// to it if it can be, and must hold it otherwise.
	Trim bool

	// Force writes to a device whose block size exceeds the IO block (see
	// Options.Force).
	Force bool
}

func (o *MkfsInfoOptions) mkfsOptions() *MkfsOptions {
	return &MkfsOptions{
		Hash: o.Hash, Cipher: o.Cipher, Strength: o.Strength,
		AllocationBlock: o.AllocationBlock, IOBlock: o.IOBlock, AuthTreeDataBlock: o.AuthTreeDataBlock,
		AuthTreeNode: o.AuthTreeNode, IndexNode: o.IndexNode, BitmapBlock: o.BitmapBlock,
		AuxReserve: o.AuxReserve, NoAuxReserve: o.NoAuxReserve, Force: o.Force,
	}
}

// mkfsInfoData is a creation info header with its aux metadata, encoded.
type mkfsInfoData struct {
	hdr     disk.MkfsInfoHeader
	raw     []byte // the IO Block padded header, integrity protected
	aux     []byte // checksum | payload | zero padding to the IO Block; nil for none
	entries []disk.AuxEntry
	reserve *uint64
}

// encodeMkfsInfo encodes a creation info header and its aux metadata blob.
// Trivial aux metadata (no entries, no or zero reserve) is not stored, as
// the reference does not store it.
func encodeMkfsInfo(l disk.Layout, salt []byte, imageAllocBlocks uint64, entries []disk.AuxEntry, reserve *uint64) (*mkfsInfoData, error) {
	d := &mkfsInfoData{hdr: disk.MkfsInfoHeader{Layout: l, ImageSizeAllocBlocks: imageAllocBlocks, Salt: salt}, entries: entries, reserve: reserve}
	if len(entries) > 0 || reserve != nil && *reserve != 0 {
		payload, err := disk.AppendAuxMetadata(nil, entries, reserve)
		if err != nil {
			return nil, fmt.Errorf("cocoonfs: aux metadata: %w", err)
		}
		if len(payload) > maxMkfsInfoAux {
			return nil, fmt.Errorf("cocoonfs: %d bytes of aux metadata exceed %d: %w", len(payload), maxMkfsInfoAux, fs.ErrInvalid)
		}
		d.hdr.AuxMetadataLen = uint64(len(payload))
		d.aux = make([]byte, disk.MkfsInfoAuxLen(d.hdr.AuxMetadataLen, l))
		copy(d.aux[8:], payload)
		sum := disk.Checksum(d.aux[8:]) // payload and padding
		copy(d.aux, sum[:])
	}
	var err error
	if d.hdr.Salt == nil {
		d.hdr.Salt = []byte{}
	}
	if d.raw, err = disk.EncodeMkfsInfoHeader(d.hdr); err != nil {
		return nil, fmt.Errorf("cocoonfs: creation info header: %w", err)
	}
	return d, nil
}

// auxOffset returns where the aux blob of a header at off is stored: right
// after the header at the primary location, right before it at the backup
// location (spec "Storage as part of the filesystem creation info data").
func (d *mkfsInfoData) auxOffset(off uint64, backup bool) uint64 {
	if backup {
		return off - uint64(len(d.aux))
	}
	return off + uint64(len(d.raw))
}

// region returns the bytes [begin, end) the header at off and its aux blob
// occupy.
func (d *mkfsInfoData) region(off uint64, backup bool) (begin, end uint64) {
	if backup {
		return off - uint64(len(d.aux)), off + uint64(len(d.raw))
	}
	return 0, uint64(len(d.raw) + len(d.aux))
}

// mkfsInfoDevice writes a creation info header by the fail-safe extent
// write protocol, the aux blob first.
type mkfsInfoDevice struct{ dev blockdev.Device }

func (w mkfsInfoDevice) write(p []byte, off uint64) error {
	if _, err := w.dev.WriteAt(p, int64(off)); err != nil {
		return fmt.Errorf("cocoonfs: write %d bytes at %d: %w", len(p), off, err)
	}
	return nil
}

func (w mkfsInfoDevice) sync() error {
	if err := w.dev.Sync(); err != nil {
		return fmt.Errorf("cocoonfs: sync: %w", err)
	}
	return nil
}

// headLen is the length of a header's first device IO Block.
func (w mkfsInfoDevice) headLen(hdrLen int) int {
	return min(hdrLen, max(w.dev.BlockSize(), 128))
}

// invalidate zeroes the first device IO Block of the header at off and
// issues a barrier: from then on no header is found there.
func (w mkfsInfoDevice) invalidate(off uint64, hdrLen int) error {
	if err := w.write(make([]byte, w.headLen(hdrLen)), off); err != nil {
		return err
	}
	return w.sync()
}

// put writes d at off: (1) zero the header's first device IO Block (unless
// the caller just did), barrier; (2) the aux blob, barrier; (3) the header's
// tail, barrier; (4) its first device IO Block, barrier. The header becomes
// valid only with (4), when everything it depends on is durable.
func (w mkfsInfoDevice) put(d *mkfsInfoData, off uint64, backup, invalidated bool) error {
	if !invalidated {
		if err := w.invalidate(off, len(d.raw)); err != nil {
			return err
		}
	}
	if d.aux != nil {
		if err := w.write(d.aux, d.auxOffset(off, backup)); err != nil {
			return err
		}
		if err := w.sync(); err != nil {
			return err
		}
	}
	head := w.headLen(len(d.raw))
	if head < len(d.raw) {
		if err := w.write(d.raw[head:], off+uint64(head)); err != nil {
			return err
		}
		if err := w.sync(); err != nil {
			return err
		}
	}
	if err := w.write(d.raw[:head], off); err != nil {
		return err
	}
	return w.sync()
}

// mkfsInfoKeep returns the device range the backup copy of d occupies on a
// device of devSize bytes, and checks that it is clear of the primary copy.
func mkfsInfoKeep(d *mkfsInfoData, devSize uint64) (off, begin, end uint64, err error) {
	off, ok := disk.MkfsInfoBackupOffset(devSize, d.hdr.Layout)
	if !ok {
		return 0, 0, 0, fmt.Errorf("cocoonfs: a %d-byte device is too small for a backup creation info header (at least 8 KiB and 16 IO blocks): %w", devSize, ErrNoSpace)
	}
	if uint64(len(d.aux)) > off {
		return 0, 0, 0, fmt.Errorf("cocoonfs: %d bytes of aux metadata do not fit before the backup creation info header: %w", len(d.aux), ErrNoSpace)
	}
	begin, end = d.region(off, true)
	if _, pend := d.region(0, false); pend > begin || end > devSize {
		return 0, 0, 0, fmt.Errorf("cocoonfs: the creation info header and its %d bytes of aux metadata overlap their backup copy on a %d-byte device: %w", len(d.aux), devSize, ErrNoSpace)
	}
	return off, begin, end, nil
}

// WriteMkfsInfo marks dev for keyless provisioning: it writes a filesystem
// creation info header (magic CCFSMKFS) asking for the filesystem opts
// describe, with the aux metadata entries and reserve in a blob right after
// it. Whoever first opens the image read-write with a key formats it (see
// FormatMkfsInfo); until then it holds no key-dependent data at all.
//
// Everything is checked first, including that the filesystem will fit (a
// dry run of the format with a throwaway key), so a refused WriteMkfsInfo
// leaves dev untouched. The writes then follow the fail-safe extent write
// protocol: a stale backup creation info header is invalidated, the first
// device IO block is zeroed, the aux blob is written, and the header is
// written last, each step behind a barrier.
//
// With no aux entries, the default reserve and the same salt and layout, the
// header and blob are byte for byte those the reference cocoonfs tool writes.
func WriteMkfsInfo(dev blockdev.Device, opts *MkfsInfoOptions) error {
	if opts == nil {
		opts = &MkfsInfoOptions{}
	}
	if blockdev.IsReadOnly(dev) {
		return fmt.Errorf("cocoonfs: mkfsinfo: %w", blockdev.ErrReadOnly)
	}
	mo := opts.mkfsOptions()
	l, err := mkfsLayout(mo)
	if err != nil {
		return err
	}
	if err := checkDeviceBlockSize(dev, l, opts.Force); err != nil {
		return err
	}
	salt := opts.Salt
	if salt == nil {
		salt = randomBytes(32)
	}
	size := opts.Size
	if size == 0 {
		size = dev.Size()
	}
	if size <= 0 || uint64(size)%l.IOBlockSize() != 0 {
		return fmt.Errorf("cocoonfs: image size %d is not a positive multiple of the %d-byte IO block", size, l.IOBlockSize())
	}
	entries, err := sortedAuxEntries(opts.AuxEntries)
	if err != nil {
		return err
	}
	_, reserve := (&builder{opts: mo}).auxContents()
	d, err := encodeMkfsInfo(l, salt, uint64(size)/l.AllocBlockSize(), entries, reserve)
	if err != nil {
		return err
	}

	// The device as it will be: trimmed to the header and blob, or holding
	// at least the image.
	_, dataEnd := d.region(0, false)
	final := max(dev.Size(), size)
	if opts.Trim {
		final = int64(dataEnd)
	}
	if final != dev.Size() {
		if _, ok := dev.(blockdev.Resizer); !ok {
			if opts.Trim {
				return fmt.Errorf("cocoonfs: mkfsinfo: cannot trim a %T: %w", dev, errors.ErrUnsupported)
			}
			return fmt.Errorf("cocoonfs: image size %d exceeds the %d-byte device", size, dev.Size())
		}
	}
	if opts.Trim && size > dev.Size() {
		// The first open grows the device to the image: refuse now a size
		// it cannot grow to (a file system's largest file), not then.
		if err := probeGrow(dev, size); err != nil {
			return err
		}
	}
	if int64(dataEnd) > min(size, final) {
		return fmt.Errorf("cocoonfs: the creation info header and aux metadata (%d bytes) exceed the %d-byte image: %w", dataEnd, size, ErrNoSpace)
	}

	// Dry run of the format, on the device as the format will see it (grown
	// to the image if smaller), with its backup copy kept free.
	_, kb, ke, err := mkfsInfoKeep(d, uint64(max(final, size)))
	if err != nil {
		return err
	}
	mo.Salt, mo.Size = salt, size
	mo.info = &mkfsInfoBuild{layout: l, entries: entries, reserve: reserve, keepOff: kb, keepEnd: ke}
	b, err := newBuilder(nil, l, salt, size, randomBytes(32), mo)
	if err != nil {
		return fmt.Errorf("cocoonfs: mkfsinfo: the filesystem would not fit: %w", err)
	}
	b.f.keys.wipe()

	w := mkfsInfoDevice{dev}
	// A valid backup creation info header left at the final backup location
	// (an earlier, interrupted format) would be taken for ours if a power
	// cut left the primary header invalid: invalidate it first.
	if off, ok := disk.MkfsInfoBackupOffset(uint64(final), disk.Layout{}); ok && off < uint64(dev.Size()) {
		if old, err := readMkfsInfoAt(dev, off, true); err == nil {
			if err := w.invalidate(off, len(old.raw)); err != nil {
				return err
			}
		}
	}
	// Invalidate whatever header is at the start. A device too short to
	// hold a header's first block holds none (and grows with zeros).
	if dev.Size() >= int64(w.headLen(len(d.raw))) {
		if err := w.invalidate(0, len(d.raw)); err != nil {
			return err
		}
	}
	if final != dev.Size() {
		if err := dev.(blockdev.Resizer).Resize(final); err != nil {
			return fmt.Errorf("cocoonfs: resize device to %d bytes: %w", final, err)
		}
		if err := w.sync(); err != nil {
			return err
		}
	}
	return w.put(d, 0, false, true)
}

// sortedAuxEntries converts and sorts aux entries by UUID, stably.
func sortedAuxEntries(in []AuxEntry) ([]disk.AuxEntry, error) {
	out := make([]disk.AuxEntry, len(in))
	for i, e := range in {
		if e.UUID == ([16]byte{}) {
			return nil, fmt.Errorf("cocoonfs: aux metadata entry %d: the all-zero UUID is reserved: %w", i, fs.ErrInvalid)
		}
		if uint64(len(e.Data)) > 1<<32-1 {
			return nil, fmt.Errorf("cocoonfs: aux metadata entry %d: %d bytes of data exceed 4 GiB: %w", i, len(e.Data), fs.ErrInvalid)
		}
		out[i] = disk.AuxEntry{UUID: e.UUID, Data: e.Data}
	}
	slices.SortStableFunc(out, func(a, b disk.AuxEntry) int { return bytes.Compare(a.UUID[:], b.UUID[:]) })
	return out, nil
}

// maxMkfsInfoAux bounds the aux metadata a creation info header may carry
// (the format itself allows up to 2^64 bytes); it is meant for small items
// such as wrapped keys.
const maxMkfsInfoAux = 64 << 20

// readMkfsInfoAt reads and fully verifies the creation info header at off
// and its aux metadata blob.
func readMkfsInfoAt(dev blockdev.Device, off uint64, backup bool) (*mkfsInfoData, error) {
	first, err := readUpTo(dev, off, 128)
	if err != nil {
		return nil, err
	}
	n, err := disk.MkfsInfoHeaderReadLen(first)
	if err != nil {
		return nil, fmt.Errorf("cocoonfs: creation info header at %d: %w", off, err)
	}
	raw, err := readUpTo(dev, off, n)
	if err != nil {
		return nil, err
	}
	hdr, err := disk.DecodeMkfsInfoHeader(raw)
	if err != nil {
		return nil, fmt.Errorf("cocoonfs: creation info header at %d: %w", off, err)
	}
	d := &mkfsInfoData{hdr: hdr, raw: raw[:hdr.Len()]}
	if hdr.AuxMetadataLen == 0 {
		return d, nil
	}
	// The header is not authenticated: bound the aux metadata by the device
	// and by maxMkfsInfoAux before allocating for it.
	auxLen := disk.MkfsInfoAuxLen(hdr.AuxMetadataLen, hdr.Layout)
	if hdr.AuxMetadataLen > maxMkfsInfoAux || backup && auxLen > off {
		return nil, corruptf("creation info header at %d: %d bytes of aux metadata", off, hdr.AuxMetadataLen)
	}
	auxOff := off + uint64(len(d.raw))
	if backup {
		auxOff = off - auxLen
	}
	if auxOff+auxLen > uint64(dev.Size()) {
		return nil, corruptf("creation info aux metadata at %d: %d bytes beyond the %d-byte device", auxOff, auxLen, dev.Size())
	}
	d.aux = make([]byte, auxLen)
	if _, err := dev.ReadAt(d.aux, int64(auxOff)); err != nil {
		return nil, fmt.Errorf("cocoonfs: read %d bytes at %d: %w", auxLen, auxOff, err)
	}
	if d.entries, d.reserve, err = disk.DecodeMkfsInfoAux(d.aux, hdr.AuxMetadataLen, hdr.Layout); err != nil {
		return nil, fmt.Errorf("cocoonfs: creation info aux metadata at %d: %w", auxOff, err)
	}
	return d, nil
}

// errFormatted is returned by FormatMkfsInfo for a formatted image.
var errFormatted = fmt.Errorf("the medium holds a formatted CocoonFS filesystem: %w", fs.ErrExist)

// findMkfsInfo returns the creation info header a format starts from: the
// primary one if it verifies in full, else the backup copy if that does
// (an interrupted format). A fully valid static header means the medium is
// formatted (errFormatted). Unlike ProbeHeader, which checks only tier 0,
// every check is made: a primary header torn past its first 128 bytes
// falls through to the backup, as the spec requires.
func findMkfsInfo(dev blockdev.Device) (d *mkfsInfoData, backupOff uint64, backup bool, err error) {
	first, err := readUpTo(dev, 0, 128)
	if err != nil {
		return nil, 0, false, err
	}
	kind, perr := disk.ProbeHeader(first)
	var primaryErr error
	switch {
	case kind == disk.HeaderRegular && perr == nil:
		// Decoded here rather than by readStaticHeader, which asks
		// mkfsInfoPending when the static header is torn.
		if n, err := disk.StaticHeaderReadLen(first); err == nil {
			if b, err := readUpTo(dev, 0, n); err == nil && uint64(len(b)) == n {
				if _, err := disk.DecodeStaticHeader(b); err == nil {
					return nil, 0, false, fmt.Errorf("cocoonfs: %w", errFormatted)
				}
			}
		}
	case kind == disk.HeaderMkfs && perr == nil:
		if d, err := readMkfsInfoAt(dev, 0, false); err == nil {
			return d, 0, false, nil
		} else {
			primaryErr = err
		}
	}
	// The backup location depends on the device size alone; the header's IO
	// block must allow it (the location is aligned to at least that).
	size := uint64(dev.Size())
	if off, ok := disk.MkfsInfoBackupOffset(size, disk.Layout{}); ok {
		if d, err := readMkfsInfoAt(dev, off, true); err == nil {
			if want, ok := disk.MkfsInfoBackupOffset(size, d.hdr.Layout); ok && want == off {
				return d, off, true, nil
			}
		}
	}
	if primaryErr != nil {
		return nil, 0, false, primaryErr
	}
	return nil, 0, false, fmt.Errorf("cocoonfs: %w: neither a filesystem nor a creation info header (primary or backup)", ErrNotCocoonFS)
}

// errInterruptedFormat is what a read-only Open reports for a medium whose
// static header is torn while a creation info header verifies.
var errInterruptedFormat = fmt.Errorf("cocoonfs: %w: the static header is invalid but a creation info header is intact (an interrupted format); formatting restarts on the first read-write open", ErrNotFormatted)

// mkfsInfoPending reports whether dev is to be formatted from a creation
// info header: it holds no valid static header but a creation info header
// that verifies in full, at the start or (an interrupted format) at the
// backup location. A read-write Open calls FormatMkfsInfo when it does.
func mkfsInfoPending(dev blockdev.Device) bool {
	_, _, _, err := findMkfsInfo(dev)
	return err == nil
}

// formatIfPending is Open's hook for keyless provisioning: a read-write
// open of a medium pending a format (mkfsInfoPending) formats it first, and
// Open then opens the new filesystem as usual. With a rollback guard set
// (ExpectRoot, MinCounter) the caller knows a filesystem was there: a
// creation info header in its place means the image was replaced, and
// nothing is written.
func formatIfPending(dev blockdev.Device, key []byte, opts *Options) error {
	if !opts.ReadWrite || !mkfsInfoPending(dev) {
		return nil
	}
	if opts.ExpectRoot != nil || opts.MinCounter != nil {
		return fmt.Errorf("%w: the medium holds a filesystem creation info header, not the expected filesystem", ErrRollback)
	}
	f, err := FormatMkfsInfo(dev, key, opts.Force)
	if err != nil {
		return err
	}
	return f.Close()
}

// FormatMkfsInfo formats a medium that holds a filesystem creation info
// header (see WriteMkfsInfo) with key, as the header asks: its layout,
// algorithms, salt and image size, and its aux metadata entries and reserve.
// It restarts a format that was interrupted, when only the backup copy of
// the header is intact. It returns the new filesystem opened. force is as
// Options.Force.
//
// The sequence is crash safe: after a power cut at any write, the medium
// holds a creation info header that verifies (at the start or at the backup
// location), and FormatMkfsInfo restarts from it, or a complete filesystem.
//
//  1. Everything is laid out and encrypted in memory first; errors leave
//     the medium untouched. A device smaller than the image is grown.
//  2. If the header is the primary one, a copy goes to the backup location
//     near the device's end (a function of the device size only): aux blob,
//     barrier, header by the fail-safe protocol. From here on the backup
//     verifies.
//  3. The filesystem is written as Mkfs writes it: the primary header is
//     invalidated, then everything but the static header, a barrier, the
//     static header last. The backup copy's blocks are kept out of the new
//     image's allocations (held as used while laying out, free in the
//     written bitmap, skipped by the free-space fill), so they are intact
//     until the static header is durable. Keeping them free rather than
//     writing the filesystem in an order that reaches them last also keeps
//     the image's placement independent of the backup's position.
//  4. Only then are the backup copy's blocks overwritten (random bytes),
//     behind a barrier: they are unallocated space of the new filesystem.
func FormatMkfsInfo(dev blockdev.Device, key []byte, force bool) (*FS, error) {
	if len(key) == 0 {
		return nil, errors.New("cocoonfs: empty key")
	}
	if blockdev.IsReadOnly(dev) {
		return nil, fmt.Errorf("cocoonfs: format: %w", blockdev.ErrReadOnly)
	}
	d, foundOff, backup, err := findMkfsInfo(dev)
	if err != nil {
		return nil, err
	}
	l := d.hdr.Layout
	if err := checkDeviceBlockSize(dev, l, force); err != nil {
		return nil, err
	}
	ab, iob := l.AllocBlockSize(), l.IOBlockSize()
	if d.hdr.ImageSizeAllocBlocks > (1<<63-1)/ab {
		return nil, corruptf("creation info header asks for %d allocation blocks", d.hdr.ImageSizeAllocBlocks)
	}
	// The reference aligns the image size down to the IO block.
	size := int64(d.hdr.ImageSizeAllocBlocks * ab / iob * iob)
	if err := checkMkfsSize(dev, l, size); err != nil {
		return nil, err
	}
	w := mkfsInfoDevice{dev}
	devSize := max(dev.Size(), size)
	if backup && devSize != dev.Size() {
		// Growing the device moves the backup location, so the copy found
		// would be lost: restore the primary copy first (as the reference
		// relocates its backup) and go on from there.
		if _, _, _, err := mkfsInfoKeep(d, uint64(dev.Size())); err != nil {
			return nil, err
		}
		if err := w.put(d, 0, false, false); err != nil {
			return nil, err
		}
		backup = false
	}
	keepAt, kb, ke, err := mkfsInfoKeep(d, uint64(devSize))
	if err != nil {
		return nil, err
	}
	if backup && keepAt != foundOff {
		return nil, corruptf("backup creation info header at %d, expected at %d", foundOff, keepAt)
	}
	opts := &MkfsOptions{Size: size, Salt: d.hdr.Salt, Force: force,
		info: &mkfsInfoBuild{layout: l, entries: d.entries, reserve: d.reserve, keepOff: kb, keepEnd: ke}}
	b, err := newBuilder(dev, l, d.hdr.Salt, size, key, opts)
	if err != nil {
		return nil, err
	}
	defer b.f.keys.wipe()
	if err := growDevice(dev, size); err != nil {
		return nil, err
	}
	if !backup {
		if err := w.put(d, keepAt, true, false); err != nil {
			return nil, err
		}
	}
	if err := b.write(); err != nil {
		return nil, err
	}
	// The static header is durable: the backup copy has served its purpose.
	if err := w.write(randomBytes(int(ke-kb)), kb); err != nil {
		return nil, err
	}
	if err := w.sync(); err != nil {
		return nil, err
	}
	return Open(dev, key, &Options{Force: true})
}

// readAuxMetadata returns the aux metadata in effect in f: that of update
// group 0 if it is active, else that of group 1. Each group is the run of
// extents of the circular list from its head up to the next group's head;
// their payloads concatenate to the encoding.
func readAuxMetadata(f *FS) ([]disk.AuxEntry, *uint64, error) {
	heads := f.header.AuxHeads
	if heads[0].IsNil() {
		return nil, nil, nil
	}
	l := f.layout
	read := func(p disk.ExtentPtr, head bool) (raw []byte, err error) {
		start, n, indirect := p.Decode()
		if indirect {
			return nil, corruptf("aux metadata extent pointer %#x is indirect", uint64(p))
		}
		if raw, err = f.readRawExtent(disk.Extent{Start: start, Len: n}); err != nil {
			return nil, err
		}
		protOff := 16
		if head {
			protOff = 17
		}
		if err := disk.VerifyAndRemoveIntegrity(raw, 0, protOff, l); err != nil {
			return nil, fmt.Errorf("cocoonfs: aux metadata extent at allocation block %d: %w", start, err)
		}
		return raw, nil
	}
	var errs []error
	for g := range 2 {
		if heads[g].IsNil() {
			break
		}
		raw, err := read(heads[g], true)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if raw[16] == 0 {
			continue // inactive
		}
		var payload []byte
		for i := 0; ; i++ {
			payload = append(payload, raw[auxExtentHeaderLen(l, i == 0):]...)
			next := disk.ReadExtentPtr(raw[:8])
			if next == heads[0] || next == heads[1] || i > 1<<16 {
				break
			}
			if raw, err = read(next, false); err != nil {
				break
			}
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		e, r, _, err := disk.DecodeAuxMetadata(payload)
		if err != nil {
			errs = append(errs, fmt.Errorf("cocoonfs: aux metadata update group %d: %w", g, err))
			continue
		}
		return e, r, nil
	}
	return nil, nil, errors.Join(append(errs, corruptf("no active aux metadata update group"))...)
}
