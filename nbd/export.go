package nbd

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/sealfs/sealfs/blockdev"
)

// Export is one named device the server offers.
type Export struct {
	// Name is what clients ask for (nbd://host/NAME). The empty name, which
	// clients send when given no name, selects the server's first export.
	Name string

	// Description is sent as NBD_INFO_DESCRIPTION when a client asks.
	Description string

	// Device is the medium. The server reads and writes it and calls Sync on
	// flush, FUA and shutdown; it never closes it.
	Device blockdev.Device

	// ReadOnly refuses writes even if the device accepts them. A device
	// that reports blockdev.IsReadOnly is always exported read-only.
	ReadOnly bool

	// NoTrim turns off NBD_CMD_TRIM, which is otherwise offered when the
	// device implements blockdev.Trimmer and the export is writable.
	NoTrim bool

	// AfterSync, if set, is called after every successful Sync of the
	// device (flush, FUA, disconnect, shutdown) while writes are held off,
	// e.g. to record a verity device's new root hash.
	AfterSync func()
}

// export is an Export with the state the server keeps for it.
type export struct {
	*Export
	mu   sync.RWMutex // RLock: ReadAt; Lock: WriteAt, Trim, Sync
	bs   int64
	size int64
	ro   bool
	trim blockdev.Trimmer
}

func newExport(e *Export) (*export, error) {
	if e == nil || e.Device == nil {
		return nil, errors.New("nbd: export without a device")
	}
	if len(e.Name) > 4096 {
		return nil, fmt.Errorf("nbd: export name of %d bytes is longer than 4096", len(e.Name))
	}
	x := &export{Export: e, bs: int64(e.Device.BlockSize()), size: e.Device.Size()}
	if x.bs < 1 {
		x.bs = blockdev.MinBlockSize
	}
	x.ro = e.ReadOnly || blockdev.IsReadOnly(e.Device)
	if t, ok := e.Device.(blockdev.Trimmer); ok && !x.ro && !e.NoTrim {
		x.trim = t
	}
	return x, nil
}

func (x *export) flags() uint16 {
	f := uint16(flagHasFlags | flagSendFlush | flagCanMultiConn)
	if x.ro {
		return f | flagReadOnly
	}
	f |= flagSendFUA | flagSendWriteZeroes
	if x.trim != nil {
		f |= flagSendTrim
	}
	return f
}

// span widens [off, off+n) to whole device blocks, capped at the size.
func (x *export) span(off, n int64) (start, end int64) {
	start = off - off%x.bs
	end = off + n
	if r := end % x.bs; r != 0 {
		end += x.bs - r
	}
	return start, min(end, x.size)
}

// readFull reads exactly len(p) bytes at off from the device.
func (x *export) readFull(p []byte, off int64) error {
	n, err := x.Device.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// readAt fills p from off; the caller has checked the range.
func (x *export) readAt(p []byte, off int64) error {
	x.mu.RLock()
	defer x.mu.RUnlock()
	start, end := x.span(off, int64(len(p)))
	if start == off && end == off+int64(len(p)) {
		return x.readFull(p, off)
	}
	buf := make([]byte, end-start)
	if err := x.readFull(buf, start); err != nil {
		return err
	}
	copy(p, buf[off-start:])
	return nil
}

// writeAt writes p at off, read-modify-writing partial first and last
// blocks; the caller has checked the range.
func (x *export) writeAt(p []byte, off int64) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := int64(len(p))
	start, end := x.span(off, n)
	if start == off && end == off+n {
		_, err := x.Device.WriteAt(p, off)
		return err
	}
	buf := make([]byte, end-start)
	head := off > start
	if head {
		if err := x.readFull(buf[:min(x.bs, end-start)], start); err != nil {
			return fmt.Errorf("read-modify-write of block %d: %w", start/x.bs, err)
		}
	}
	if off+n < end {
		// The last block is partial; read it unless it is the first one,
		// already read.
		if tail := off + n - (off+n)%x.bs; !head || tail != start {
			if err := x.readFull(buf[tail-start:], tail); err != nil {
				return fmt.Errorf("read-modify-write of block %d: %w", tail/x.bs, err)
			}
		}
	}
	copy(buf[off-start:], p)
	_, err := x.Device.WriteAt(buf, start)
	return err
}

// trimRange discards the whole device blocks inside [off, off+n).
func (x *export) trimRange(off, n int64) error {
	start := off
	if r := start % x.bs; r != 0 {
		start += x.bs - r
	}
	end := off + n
	if end != x.size {
		end -= end % x.bs
	}
	if end <= start {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.trim.Trim(start, end-start)
}

func (x *export) sync() error {
	if x.ro {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.Device.Sync(); err != nil {
		return err
	}
	if x.AfterSync != nil {
		x.AfterSync()
	}
	return nil
}
