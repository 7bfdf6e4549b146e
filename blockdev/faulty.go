package blockdev

import (
	"errors"
	"fmt"
	"sync"
)

// TearGranularity is the unit in which TearWrite splits a write. It is
// finer than any sector, so a pivot can model both a clean sector-sized
// tear and the sub-sector tears some flash controllers exhibit.
const TearGranularity = 128

// OpKind identifies a logged operation.
type OpKind int

// Logged operation kinds.
const (
	OpWrite  OpKind = iota + 1 // a WriteAt; Data holds what reached the medium
	OpSync                     // a successful Sync barrier
	OpTrim                     // a Trim of [Off, Off+Len)
	OpResize                   // a Resize to Len bytes
)

func (k OpKind) String() string {
	switch k {
	case OpWrite:
		return "write"
	case OpSync:
		return "sync"
	case OpTrim:
		return "trim"
	case OpResize:
		return "resize"
	}
	return fmt.Sprintf("OpKind(%d)", int(k))
}

// LoggedOp is one operation that changed (or, for OpSync, ordered) the
// medium under a Faulty device.
type LoggedOp struct {
	Kind OpKind
	// Off is the offset of a write or trim.
	Off int64
	// Len is the length of a write or trim, or the new size of a resize.
	Len int64
	// Data is a private copy of the bytes a write put on the medium. For a
	// torn write that is the mix of new and old bytes, so replaying a log
	// reproduces the live image exactly.
	Data []byte
	// Seq is a write's WriteAt number, as counted by Writes and used by
	// CutAfter and TearWrite; 0 for other kinds.
	Seq int
	// Torn marks the torn write that ended a TearWrite run.
	Torn bool
}

// Faulty wraps a Device and injects the faults the medium's contract
// allows — power cuts between writes, torn writes, flipped bits — while
// logging every change so a test can rebuild any intermediate image.
//
// Writes are numbered 1, 2, 3, … in the order their WriteAt calls acquire
// the device, counting every WriteAt call since NewFaulty or the last Reset,
// whether it succeeds, fails or is refused after a power cut. CutAfter and
// TearWrite name writes by that number.
//
// Once the power is cut every mutating call (WriteAt, Sync, Trim, Resize)
// fails with ErrPowerCut and changes nothing, until Reset. Reads keep
// working, so a test can inspect what a crashed program left behind.
//
// Faulty applies writes to the underlying device in issue order and does
// not reorder writes between barriers; it is therefore kinder than the
// Device contract. Log and Replay let a test build reordered images itself.
//
// All methods are safe for concurrent use. Mutating calls are serialized,
// which is what gives writes a total order to number.
type Faulty struct {
	under Device

	mu       sync.RWMutex
	writes   int  // WriteAt calls since creation or Reset
	cutAfter int  // power is cut after this write; -1 when unarmed
	tearAt   int  // the write to tear; 0 when unarmed
	pivot    int  // tear pivot relative to the torn write's start
	newFirst bool // tear keeps new data before the pivot
	cut      bool // power is off
	log      []LoggedOp
	flips    map[int64]byte // XOR masks applied to reads
}

var (
	_ Device         = (*Faulty)(nil)
	_ ReadOnlyDevice = (*Faulty)(nil)
	_ Resizer        = (*Faulty)(nil)
	_ Trimmer        = (*Faulty)(nil)
)

// NewFaulty wraps under with no faults armed. Writes should go only
// through the Faulty device while it is in use, or its log and numbering
// will not describe the medium.
func NewFaulty(under Device) *Faulty {
	return &Faulty{under: under, cutAfter: -1}
}

// Under returns the wrapped device.
func (f *Faulty) Under() Device { return f.under }

// CutAfter arms a power cut right after write number n (1-based, as
// described on Faulty): writes 1..n go through, and every WriteAt, Sync,
// Trim and Resize after write n fails with ErrPowerCut and changes nothing.
// That includes a Sync between write n and write n+1: the power fails the
// moment write n is on the medium, so a program never learns that write n
// became durable. CutAfter(0) cuts the power now, before any write. If write n has already happened, the power is cut
// immediately. CutAfter replaces an earlier CutAfter. It panics if n < 0.
func (f *Faulty) CutAfter(n int) {
	if n < 0 {
		panic(fmt.Sprintf("blockdev: CutAfter(%d): negative write number", n))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cutAfter = n
	if f.writes >= n {
		f.cut = true
	}
}

// TearWrite arms write number n (1-based, as described on Faulty) to tear:
// it is the last write that reaches the medium, and the power is cut right
// after it. pivot, a byte offset relative to the write's start, splits the
// write: with newFirst the bytes before pivot receive the new data and the
// bytes from pivot on keep their old medium contents; without it the bytes
// before pivot keep the old contents and the rest receive the new data.
// The torn WriteAt returns ErrPowerCut, with n = pivot for newFirst (the
// new bytes form a prefix) and n = 0 otherwise.
//
// A real device tears only within one IO block, so callers pick pivots
// inside the block they want torn; TearPivots lists every candidate. pivot
// must be a multiple of TearGranularity and at most the write's length;
// a pivot beyond the write is detected when it happens and makes the write
// fail unapplied, with an error wrapping ErrOutOfRange and ErrPowerCut.
//
// TearWrite replaces an earlier TearWrite; a CutAfter armed for an earlier
// write still wins. It panics if n < 1 or pivot is negative or not a
// multiple of TearGranularity.
func (f *Faulty) TearWrite(n int, pivot int, newFirst bool) {
	if n < 1 {
		panic(fmt.Sprintf("blockdev: TearWrite(%d, ...): write numbers start at 1", n))
	}
	if err := checkPivot(pivot); err != nil {
		panic(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tearAt, f.pivot, f.newFirst = n, pivot, newFirst
}

func checkPivot(pivot int) error {
	if pivot < 0 || pivot%TearGranularity != 0 {
		return fmt.Errorf("blockdev: tear pivot %d is not a non-negative multiple of %d: %w",
			pivot, TearGranularity, ErrOutOfRange)
	}
	return nil
}

// Writes returns how many WriteAt calls were made since NewFaulty or the
// last Reset, including failed and refused ones; it is the number of the
// latest write.
func (f *Faulty) Writes() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.writes
}

// PowerCut reports whether the power has been cut, so a harness can tell
// a run that crashed from one that finished before its cut point.
func (f *Faulty) PowerCut() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.cut
}

// Log returns a copy of every operation that reached the medium since
// NewFaulty or the last Reset, in order: writes (including the torn one),
// successful syncs, trims and resizes. Refused and failed operations are
// not logged, nor are FlipBit's changes, which are tampering rather than
// the program's own writes.
func (f *Faulty) Log() []LoggedOp {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]LoggedOp, len(f.log))
	for i, op := range f.log {
		op.Data = append([]byte(nil), op.Data...)
		out[i] = op
	}
	return out
}

// Reset makes f behave as if just returned by NewFaulty(f.Under()): the
// write count restarts at 0, the log is emptied, CutAfter, TearWrite and
// FlipOnRead are disarmed and the power is restored. The medium is left as
// it is. Clearing the log with the count keeps Seq numbers and log
// positions in step with a fresh run: snapshot the medium, Reset, run the
// workload, and the log replays onto the snapshot. Read Log first to keep
// the old one.
func (f *Faulty) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes, f.cutAfter, f.tearAt, f.cut = 0, -1, 0, false
	f.log, f.flips = nil, nil
}

// FlipBit flips bit (0 = least significant) of the byte at off on the
// underlying medium now, by reading and rewriting it through Under. It
// models an attacker or a decaying medium between mounts, so it works even
// after a power cut, is not counted as a write and is not logged.
func (f *Faulty) FlipBit(off int64, bit uint) error {
	if bit > 7 {
		return fmt.Errorf("blockdev: flip of bit %d at offset %d: bit beyond a byte: %w", bit, off, ErrOutOfRange)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var b [1]byte
	if err := checkRange("bit flip", off, 1, f.under.Size()); err != nil {
		return err
	}
	if err := readFull(f.under, b[:], off); err != nil {
		return err
	}
	b[0] ^= 1 << bit
	if _, err := f.under.WriteAt(b[:], off); err != nil {
		return fmt.Errorf("blockdev: flip of bit %d at offset %d: %w", bit, off, err)
	}
	return nil
}

// FlipOnRead makes every later read covering the byte at off return it
// with bit (0 = least significant) flipped, leaving the medium unchanged:
// a transient or in-transit corruption that a format must catch on the
// read path. Registering the same bit twice cancels out, as two flips do.
// It panics if bit > 7 or off < 0.
func (f *Faulty) FlipOnRead(off int64, bit uint) {
	if bit > 7 || off < 0 {
		panic(fmt.Sprintf("blockdev: FlipOnRead(%d, %d): invalid offset or bit", off, bit))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.flips == nil {
		f.flips = make(map[int64]byte)
	}
	f.flips[off] ^= 1 << bit
	if f.flips[off] == 0 {
		delete(f.flips, off)
	}
}

// ReadAt implements Device, applying FlipOnRead registrations to the
// returned bytes.
func (f *Faulty) ReadAt(p []byte, off int64) (int, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := f.under.ReadAt(p, off)
	for at, mask := range f.flips {
		if at >= off && at-off < int64(n) {
			p[at-off] ^= mask
		}
	}
	return n, err
}

// WriteAt implements Device, applying the armed power cut or tear.
func (f *Faulty) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	seq := f.writes
	if f.cut || (f.cutAfter >= 0 && seq > f.cutAfter) {
		f.cut = true
		return 0, fmt.Errorf("blockdev: write %d (%d bytes at offset %d) refused: %w", seq, len(p), off, ErrPowerCut)
	}
	if seq == f.tearAt {
		f.cut = true
		return f.tear(seq, p, off)
	}
	n, err := f.under.WriteAt(p, off)
	if n > 0 || err == nil {
		f.log = append(f.log, LoggedOp{Kind: OpWrite, Off: off, Len: int64(n), Data: append([]byte(nil), p[:n]...), Seq: seq})
	}
	if seq == f.cutAfter {
		f.cut = true
	}
	return n, err
}

// tear performs the armed torn write; the caller has already cut the power.
func (f *Faulty) tear(seq int, p []byte, off int64) (int, error) {
	mixed, err := tornData(f.under, p, off, f.pivot, f.newFirst)
	if err != nil {
		return 0, fmt.Errorf("blockdev: torn write %d: %w (%w)", seq, err, ErrPowerCut)
	}
	n, err := f.under.WriteAt(mixed, off)
	if n > 0 || err == nil {
		f.log = append(f.log, LoggedOp{Kind: OpWrite, Off: off, Len: int64(n), Data: mixed[:n], Seq: seq, Torn: true})
	}
	if err != nil {
		return 0, fmt.Errorf("blockdev: torn write %d: %w (%w)", seq, err, ErrPowerCut)
	}
	n = 0
	if f.newFirst {
		n = f.pivot
	}
	return n, fmt.Errorf("blockdev: write %d (%d bytes at offset %d) torn at byte %d, new data %s: %w",
		seq, len(p), off, f.pivot, tearOrder(f.newFirst), ErrPowerCut)
}

func tearOrder(newFirst bool) string {
	if newFirst {
		return "first"
	}
	return "last"
}

// tornData returns what the medium holds after writing p at off is torn at
// pivot: new bytes on one side of the pivot, the current contents of d on
// the other.
func tornData(d Device, p []byte, off int64, pivot int, newFirst bool) ([]byte, error) {
	if err := checkPivot(pivot); err != nil {
		return nil, err
	}
	if pivot > len(p) {
		return nil, fmt.Errorf("tear pivot %d beyond write of %d bytes at offset %d, nothing written: %w",
			pivot, len(p), off, ErrOutOfRange)
	}
	if err := checkRange("torn write", off, int64(len(p)), d.Size()); err != nil {
		return nil, err
	}
	mixed := make([]byte, len(p))
	if err := readFull(d, mixed, off); err != nil {
		return nil, err
	}
	if newFirst {
		copy(mixed[:pivot], p)
	} else {
		copy(mixed[pivot:], p[pivot:])
	}
	return mixed, nil
}

// Sync implements Device; a successful Sync is logged as a barrier.
func (f *Faulty) Sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cut {
		return fmt.Errorf("blockdev: sync after write %d refused: %w", f.writes, ErrPowerCut)
	}
	if err := f.under.Sync(); err != nil {
		return err
	}
	f.log = append(f.log, LoggedOp{Kind: OpSync})
	return nil
}

// Size implements Device.
func (f *Faulty) Size() int64 { return f.under.Size() }

// BlockSize implements Device.
func (f *Faulty) BlockSize() int { return f.under.BlockSize() }

// ReadOnly implements ReadOnlyDevice by asking the wrapped device.
func (f *Faulty) ReadOnly() bool { return IsReadOnly(f.under) }

// Resize implements Resizer when the wrapped device does; otherwise it
// fails with an error wrapping errors.ErrUnsupported. It is logged, not
// counted as a write, and refused after a power cut.
func (f *Faulty) Resize(size int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cut {
		return fmt.Errorf("blockdev: resize to %d bytes refused: %w", size, ErrPowerCut)
	}
	r, ok := f.under.(Resizer)
	if !ok {
		return fmt.Errorf("blockdev: resize to %d bytes: %T cannot resize: %w", size, f.under, errors.ErrUnsupported)
	}
	if err := r.Resize(size); err != nil {
		return err
	}
	f.log = append(f.log, LoggedOp{Kind: OpResize, Len: size})
	return nil
}

// Trim implements Trimmer, forwarding to the wrapped device or, when it
// cannot trim, writing zeros (allowed, since trimmed contents are
// unspecified). It is logged, not counted as a write, and refused after a
// power cut.
func (f *Faulty) Trim(off, length int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cut {
		return fmt.Errorf("blockdev: trim of %d bytes at offset %d refused: %w", length, off, ErrPowerCut)
	}
	if err := trim(f.under, off, length); err != nil {
		return err
	}
	f.log = append(f.log, LoggedOp{Kind: OpTrim, Off: off, Len: length})
	return nil
}

// trim discards a range on any device: natively where supported, else by
// zero-filling.
func trim(d Device, off, length int64) error {
	if t, ok := d.(Trimmer); ok {
		return t.Trim(off, length)
	}
	if err := checkRange("trim", off, length, d.Size()); err != nil {
		return err
	}
	if err := writeZeros(d, off, length); err != nil {
		return fmt.Errorf("blockdev: trim of %d bytes at offset %d: %w", length, off, err)
	}
	return nil
}
