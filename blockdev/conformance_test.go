package blockdev

import (
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// impl builds devices of one implementation for the conformance suite.
type impl struct {
	name string
	// open returns a device holding a copy of init, read-only if ro.
	open func(t *testing.T, init []byte, blockSize int, ro bool) Device
}

func impls() []impl {
	return []impl{
		{"Memory", func(t *testing.T, init []byte, bs int, ro bool) Device {
			m := NewMemoryFrom(init, bs)
			m.SetReadOnly(ro)
			return m
		}},
		{"File", openTestFile},
		{"Faulty", func(t *testing.T, init []byte, bs int, ro bool) Device {
			m := NewMemoryFrom(init, bs)
			m.SetReadOnly(ro)
			return NewFaulty(m)
		}},
	}
}

func openTestFile(t *testing.T, init []byte, bs int, ro bool) Device {
	t.Helper()
	path := filepath.Join(t.TempDir(), "image")
	if err := os.WriteFile(path, init, 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := OpenFile(path, &FileOptions{ReadOnly: ro, BlockSize: bs})
	if err != nil {
		t.Fatalf("OpenFile: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestConformance runs the Device contract against every implementation.
func TestConformance(t *testing.T) {
	cases := []struct {
		name string
		fn   func(t *testing.T, im impl)
	}{
		{"SizeAndBlockSize", testSizeAndBlockSize},
		{"ReadWrite", testReadWrite},
		{"ReadPastEnd", testReadPastEnd},
		{"WriteOutOfRange", testWriteOutOfRange},
		{"ReadOnly", testReadOnly},
		{"Resize", testResize},
		{"Trim", testTrim},
		{"ConcurrentReaders", testConcurrentReaders},
		{"ConcurrentWriters", testConcurrentWriters},
	}
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) { c.fn(t, im) })
			}
		})
	}
}

func testSizeAndBlockSize(t *testing.T, im impl) {
	for _, tc := range []struct {
		size int
		bs   int
	}{{0, 512}, {512, 512}, {8192, 4096}, {10000, 1024}, {1 << 20, 65536}} {
		d := im.open(t, make([]byte, tc.size), tc.bs, false)
		if got := d.Size(); got != int64(tc.size) {
			t.Errorf("size %d: Size() = %d", tc.size, got)
		}
		if got := d.BlockSize(); got != tc.bs {
			t.Errorf("block size %d: BlockSize() = %d", tc.bs, got)
		}
		if IsReadOnly(d) {
			t.Errorf("writable device reports read-only")
		}
	}
}

func testReadWrite(t *testing.T, im impl) {
	const size = 16384
	model := pattern(size, 1)
	d := im.open(t, model, 512, false)
	checkImage(t, d, model)
	writes := []struct {
		off int64
		n   int
	}{
		{0, 512},
		{512, 4096},
		{100, 1},        // unaligned single byte
		{1000, 3000},    // straddles blocks
		{size - 7, 7},   // ends exactly at Size
		{4096, 0},       // empty
		{size, 0},       // empty at Size is in range
		{0, size},       // whole device
		{8191, 2},       // straddles a block boundary
		{12000, 4384},   // ends at Size
		{3333, 128 * 3}, // arbitrary
	}
	for i, w := range writes {
		data := pattern(w.n, 100+i)
		n, err := d.WriteAt(data, w.off)
		if err != nil || n != w.n {
			t.Fatalf("WriteAt(%d bytes, %d) = %d, %v", w.n, w.off, n, err)
		}
		copy(model[w.off:], data)
		checkImage(t, d, model)
		got := make([]byte, w.n)
		if n, err := d.ReadAt(got, w.off); n != w.n || (err != nil && !(err == io.EOF && w.off+int64(w.n) == size)) {
			t.Fatalf("ReadAt(%d bytes, %d) = %d, %v", w.n, w.off, n, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("read back of write %d: %s", i, diffAt(got, data))
		}
	}
	if err := d.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	checkImage(t, d, model)
}

func testReadPastEnd(t *testing.T, im impl) {
	const size = 4096
	init := pattern(size, 2)
	d := im.open(t, init, 512, false)
	for _, tc := range []struct {
		off     int64
		n       int
		wantN   int
		wantErr error
	}{
		{0, size, size, nil},
		{size - 10, 20, 10, io.EOF},
		{size - 1, 1, 1, nil},
		{1, size, size - 1, io.EOF},
		{size, 1, 0, io.EOF},
		{size + 100, 10, 0, io.EOF},
		{0, 0, 0, nil},
		{-1, 10, 0, ErrOutOfRange},
		{math.MinInt64, 1, 0, ErrOutOfRange},
	} {
		p := make([]byte, tc.n)
		n, err := d.ReadAt(p, tc.off)
		if n != tc.wantN || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
			t.Errorf("ReadAt(%d bytes, %d) = %d, %v; want %d, %v", tc.n, tc.off, n, err, tc.wantN, tc.wantErr)
			continue
		}
		if n > 0 && !bytes.Equal(p[:n], init[tc.off:tc.off+int64(n)]) {
			t.Errorf("ReadAt(%d bytes, %d) returned wrong bytes", tc.n, tc.off)
		}
	}
}

func testWriteOutOfRange(t *testing.T, im impl) {
	const size = 4096
	init := pattern(size, 3)
	d := im.open(t, init, 512, false)
	for _, tc := range []struct {
		off int64
		n   int
	}{
		{size - 10, 20},
		{size, 1},
		{size + 512, 512},
		{-1, 1},
		{-512, 1024},
		{math.MaxInt64, 1},
		{math.MaxInt64 - 1, 2},
		{math.MinInt64, 0},
	} {
		n, err := d.WriteAt(pattern(tc.n, 4), tc.off)
		if n != 0 || !errors.Is(err, ErrOutOfRange) {
			t.Errorf("WriteAt(%d bytes, %d) = %d, %v; want 0, ErrOutOfRange", tc.n, tc.off, n, err)
			continue
		}
		// Messages must name the offending range, or a format bug is
		// untraceable from a log line.
		if msg := err.Error(); !strings.Contains(msg, strconv.FormatInt(tc.off, 10)) || !strings.Contains(msg, strconv.Itoa(tc.n)) {
			t.Errorf("error %q does not name offset %d and length %d", msg, tc.off, tc.n)
		}
	}
	checkImage(t, d, init)
}

func testReadOnly(t *testing.T, im impl) {
	const size = 4096
	init := pattern(size, 5)
	d := im.open(t, init, 512, true)
	if !IsReadOnly(d) {
		t.Fatal("read-only device does not report ReadOnly")
	}
	if n, err := d.WriteAt([]byte{1, 2, 3}, 10); n != 0 || !errors.Is(err, ErrReadOnly) {
		t.Errorf("WriteAt = %d, %v; want ErrReadOnly", n, err)
	}
	if _, err := d.WriteAt([]byte{1}, size); !errors.Is(err, ErrReadOnly) {
		t.Errorf("out-of-range WriteAt on read-only device = %v; want ErrReadOnly first", err)
	}
	if r, ok := d.(Resizer); ok {
		if err := r.Resize(2 * size); !errors.Is(err, ErrReadOnly) {
			t.Errorf("Resize = %v; want ErrReadOnly", err)
		}
	}
	if tr, ok := d.(Trimmer); ok {
		if err := tr.Trim(0, 512); !errors.Is(err, ErrReadOnly) {
			t.Errorf("Trim = %v; want ErrReadOnly", err)
		}
	}
	if err := d.Sync(); err != nil {
		t.Errorf("Sync on read-only device = %v; want nil", err)
	}
	if d.Size() != size {
		t.Errorf("Size = %d after refused resize", d.Size())
	}
	checkImage(t, d, init)
}

func testResize(t *testing.T, im impl) {
	init := pattern(4096, 6)
	d := im.open(t, init, 512, false)
	r, ok := d.(Resizer)
	if !ok {
		t.Skip("not a Resizer")
	}
	model := append([]byte(nil), init...)
	steps := []struct {
		size  int64
		write bool // write a pattern into the tail after resizing
	}{
		{10000, true},
		{1000, false},
		{4096, false}, // regrown range must read as zeros, not old data
		{0, false},
		{512, true},
		{512, false},
	}
	for i, s := range steps {
		if err := r.Resize(s.size); err != nil {
			t.Fatalf("Resize(%d): %v", s.size, err)
		}
		if int64(len(model)) > s.size {
			model = model[:s.size]
		} else {
			model = append(model, make([]byte, s.size-int64(len(model)))...)
		}
		if d.Size() != s.size {
			t.Fatalf("Size = %d after Resize(%d)", d.Size(), s.size)
		}
		if s.write {
			data := pattern(int(s.size/2), 60+i)
			if _, err := d.WriteAt(data, s.size-int64(len(data))); err != nil {
				t.Fatalf("WriteAt after Resize(%d): %v", s.size, err)
			}
			copy(model[s.size-int64(len(data)):], data)
		}
		checkImage(t, d, model)
		if _, err := d.WriteAt([]byte{1}, s.size); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("WriteAt at new Size %d = %v; want ErrOutOfRange", s.size, err)
		}
	}
	if err := r.Resize(-1); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("Resize(-1) = %v; want ErrOutOfRange", err)
	}
	if err := d.Sync(); err != nil {
		t.Errorf("Sync after resize: %v", err)
	}
}

func testTrim(t *testing.T, im impl) {
	const size = 16384
	model := pattern(size, 7)
	d := im.open(t, model, 4096, false)
	tr, ok := d.(Trimmer)
	if !ok {
		t.Skip("not a Trimmer")
	}
	for _, tc := range []struct {
		off, n int64
	}{
		{4096, 4096}, // whole block
		{100, 50},    // inside a block
		{8000, 300},  // straddling a boundary
		{size - 1, 1},
		{0, 0},
		{size, 0},
	} {
		if err := tr.Trim(tc.off, tc.n); err != nil {
			t.Fatalf("Trim(%d, %d): %v", tc.off, tc.n, err)
		}
		// Trimmed contents are unspecified by the contract; every device
		// here reads zeros, which Replay's byte-exactness relies on.
		clear(model[tc.off : tc.off+tc.n])
		checkImage(t, d, model)
	}
	for _, tc := range []struct {
		off, n int64
	}{{-1, 10}, {size - 10, 11}, {size + 1, 0}, {0, -1}, {1, math.MaxInt64}} {
		if err := tr.Trim(tc.off, tc.n); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("Trim(%d, %d) = %v; want ErrOutOfRange", tc.off, tc.n, err)
		}
	}
	checkImage(t, d, model)
}

func testConcurrentReaders(t *testing.T, im impl) {
	const size = 64 << 10
	init := pattern(size, 8)
	d := im.open(t, init, 4096, false)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 5000)
			for i := range 200 {
				off := int64((g*7919 + i*4099) % size)
				n, err := d.ReadAt(buf, off)
				if err != nil && err != io.EOF {
					errs <- err
					return
				}
				if !bytes.Equal(buf[:n], init[off:off+int64(n)]) {
					errs <- errors.New("concurrent read returned wrong bytes at offset " + strconv.FormatInt(off, 10))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// testConcurrentWriters checks that writers to disjoint blocks, readers and
// syncs may run at once (the race detector watches) and that every write
// lands.
func testConcurrentWriters(t *testing.T, im impl) {
	const bs, blocks = 512, 16
	d := im.open(t, make([]byte, bs*blocks), bs, false)
	want := make([]byte, bs*blocks)
	var wg sync.WaitGroup
	for b := range blocks {
		data := pattern(bs, 200+b)
		copy(want[b*bs:], data)
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 10 {
				if _, err := d.WriteAt(data, int64(b*bs)); err != nil {
					t.Error(err)
					return
				}
			}
			if err := d.Sync(); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, bs)
			for range 10 {
				if _, err := d.ReadAt(buf, int64(b*bs)); err != nil {
					t.Error(err)
					return
				}
				_ = d.Size()
			}
		}()
	}
	wg.Wait()
	checkImage(t, d, want)
}
