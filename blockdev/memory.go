package blockdev

import (
	"fmt"
	"io"
	"math"
	"sync"
)

// Memory is a Device held in RAM. It is the medium of choice under Faulty:
// snapshots (Bytes) and restores (NewMemoryFrom) are cheap, so a crash test
// can rebuild the starting image for every cut point.
//
// Sync is a no-op: a write that returned is already as durable as this
// medium gets. All methods are safe for concurrent use; each WriteAt is
// applied atomically with respect to other calls.
type Memory struct {
	mu        sync.RWMutex
	data      []byte
	blockSize int
	readOnly  bool
}

var (
	_ Device         = (*Memory)(nil)
	_ ReadOnlyDevice = (*Memory)(nil)
	_ Resizer        = (*Memory)(nil)
	_ Trimmer        = (*Memory)(nil)
)

// MaxMemorySize is the largest a memory device grows (Resize): growing
// beyond would exhaust the process's memory on an untrusted size (a hostile
// creation info header formatted onto a memory device) instead of failing.
const MaxMemorySize = 16 << 30

// NewMemory returns a zero-filled writable device of size bytes. A
// blockSize of 0 selects DefaultBlockSize. It panics if size is negative or
// does not fit in memory, or if blockSize is not a power of two >= 512:
// those are programming errors in a test, not conditions to handle.
func NewMemory(size int64, blockSize int) *Memory {
	if size < 0 || uint64(size) > math.MaxInt {
		panic(fmt.Sprintf("blockdev: NewMemory: invalid size %d", size))
	}
	return &Memory{data: make([]byte, size), blockSize: memBlockSize(blockSize)}
}

// NewMemoryFrom returns a writable device holding a copy of data, so the
// caller's snapshot stays intact however the device is written. blockSize
// is as for NewMemory.
func NewMemoryFrom(data []byte, blockSize int) *Memory {
	return &Memory{data: append([]byte(nil), data...), blockSize: memBlockSize(blockSize)}
}

func memBlockSize(bs int) int {
	if bs == 0 {
		return DefaultBlockSize
	}
	if err := checkBlockSize(bs); err != nil {
		panic(err)
	}
	return bs
}

// ReadAt implements Device.
func (m *Memory) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	n, err := readLen(len(p), off, int64(len(m.data)))
	if err != nil {
		return 0, err
	}
	if n > 0 {
		copy(p[:n], m.data[off:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt implements Device.
func (m *Memory) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.readOnly {
		return 0, fmt.Errorf("blockdev: write of %d bytes at offset %d: %w", len(p), off, ErrReadOnly)
	}
	if err := checkRange("write", off, int64(len(p)), int64(len(m.data))); err != nil {
		return 0, err
	}
	return copy(m.data[off:], p), nil
}

// Sync implements Device; memory has no volatile cache to flush.
func (m *Memory) Sync() error { return nil }

// Size implements Device.
func (m *Memory) Size() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return int64(len(m.data))
}

// BlockSize implements Device.
func (m *Memory) BlockSize() int { return m.blockSize }

// ReadOnly implements ReadOnlyDevice.
func (m *Memory) ReadOnly() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.readOnly
}

// SetReadOnly makes the device refuse (ro) or accept writes, resizes and
// trims, so one image can be tested through both mount modes.
func (m *Memory) SetReadOnly(ro bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.readOnly = ro
}

// Resize implements Resizer.
func (m *Memory) Resize(size int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.readOnly {
		return fmt.Errorf("blockdev: resize to %d bytes: %w", size, ErrReadOnly)
	}
	if size < 0 || uint64(size) > math.MaxInt || size > MaxMemorySize {
		return fmt.Errorf("blockdev: resize to %d bytes (a memory device holds at most %d): %w", size, int64(MaxMemorySize), ErrOutOfRange)
	}
	old := int64(len(m.data))
	if size <= old {
		// Clear the cut-off tail so growing again yields zeros, as a
		// truncated file would.
		clear(m.data[size:])
		m.data = m.data[:size]
		return nil
	}
	if size <= int64(cap(m.data)) {
		m.data = m.data[:size]
		clear(m.data[old:]) // spare capacity is not ours to trust
		return nil
	}
	grown := make([]byte, size)
	copy(grown, m.data)
	m.data = grown
	return nil
}

// Trim implements Trimmer by zero-filling, the cheapest deterministic
// choice, which keeps Replay results byte-exact.
func (m *Memory) Trim(off, length int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.readOnly {
		return fmt.Errorf("blockdev: trim of %d bytes at offset %d: %w", length, off, ErrReadOnly)
	}
	if err := checkRange("trim", off, length, int64(len(m.data))); err != nil {
		return err
	}
	clear(m.data[off : off+length])
	return nil
}

// Bytes returns a copy of the current contents: a snapshot that later
// writes do not change.
func (m *Memory) Bytes() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]byte(nil), m.data...)
}
