package bd

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
)

// TestConformance runs the block-device contract against every variant,
// for both supported extreme block sizes.
func TestConformance(t *testing.T) {
	cases := []struct {
		name string
		fn   func(t *testing.T, v variant, bs int)
	}{
		{"SizeAndBlockSize", testSizeAndBlockSize},
		{"ReadWrite", testReadWrite},
		{"Unaligned", testUnaligned},
		{"ReadPastEnd", testReadPastEnd},
		{"WriteOutOfRange", testWriteOutOfRange},
		{"RandomIO", testRandomIO},
		{"SyncReopen", testSyncReopen},
		{"ByteAddressable", testByteAddressable},
		{"Concurrent", testConcurrent},
	}
	for _, v := range variants() {
		t.Run(v.name, func(t *testing.T) {
			for _, bs := range []int{512, 4096} {
				for _, c := range cases {
					t.Run(name(c.name, "/bs=", bs), func(t *testing.T) { c.fn(t, v, bs) })
				}
			}
		})
	}
}

func testSizeAndBlockSize(t *testing.T, v variant, bs int) {
	in := v.open(t, pattern(16*bs, 1), bs)
	if in.dev.Size() != int64(16*bs) || in.dev.BlockSize() != bs {
		t.Fatalf("Size, BlockSize = %d, %d; want %d, %d", in.dev.Size(), in.dev.BlockSize(), 16*bs, bs)
	}
	if blockdev.IsReadOnly(in.dev) != v.readOnly {
		t.Fatalf("ReadOnly = %v", !v.readOnly)
	}
}

func testReadWrite(t *testing.T, v variant, bs int) {
	const blocks = 37 // not a power of two: exercises tree padding
	model := pattern(blocks*bs, 2)
	in := v.open(t, model, bs)
	checkContents(t, in.dev, model)
	if v.readOnly {
		if _, err := in.dev.WriteAt(make([]byte, bs), 0); !errors.Is(err, blockdev.ErrReadOnly) {
			t.Fatalf("WriteAt on read-only variant = %v; want ErrReadOnly", err)
		}
		return
	}
	for i, w := range []struct{ blk, n int }{{0, 1}, {blocks - 1, 1}, {3, 5}, {0, blocks}, {17, 2}, {5, 0}} {
		data := pattern(w.n*bs, uint64(10+i))
		if n, err := in.dev.WriteAt(data, int64(w.blk*bs)); n != len(data) || err != nil {
			t.Fatalf("WriteAt(%d blocks at %d) = %d, %v", w.n, w.blk, n, err)
		}
		copy(model[w.blk*bs:], data)
		got := make([]byte, len(data))
		if n, err := in.dev.ReadAt(got, int64(w.blk*bs)); n != len(got) || (err != nil && err != io.EOF) || !bytes.Equal(got, data) {
			t.Fatalf("read back of write %d: n=%d err=%v equal=%v", i, n, err, bytes.Equal(got, data))
		}
		checkContents(t, in.dev, model)
	}
	if err := in.dev.Sync(); err != nil {
		t.Fatal(err)
	}
	if (v.name == "Crypt" || strings.HasPrefix(v.name, "VeriCrypt")) && bytes.Contains(in.data.Bytes(), model[:bs]) {
		t.Errorf("a plaintext block is visible on the lower device")
	}
}

func testUnaligned(t *testing.T, v variant, bs int) {
	in := v.open(t, pattern(4*bs, 3), bs)
	for _, c := range []struct {
		off int64
		n   int
	}{{1, bs}, {0, bs - 1}, {int64(bs), 1}, {int64(bs / 2), bs}} {
		if _, err := in.dev.ReadAt(make([]byte, c.n), c.off); !errors.Is(err, ErrUnaligned) {
			t.Errorf("ReadAt(%d, %d) = %v; want ErrUnaligned", c.n, c.off, err)
		}
		if v.readOnly {
			continue
		}
		if _, err := in.dev.WriteAt(make([]byte, c.n), c.off); !errors.Is(err, ErrUnaligned) {
			t.Errorf("WriteAt(%d, %d) = %v; want ErrUnaligned", c.n, c.off, err)
		}
	}
}

func testReadPastEnd(t *testing.T, v variant, bs int) {
	init := pattern(4*bs, 4)
	in := v.open(t, init, bs)
	for _, c := range []struct {
		off      int64
		n, wantN int
		wantErr  error
	}{
		{0, 4 * bs, 4 * bs, nil},
		{int64(3 * bs), 2 * bs, bs, io.EOF},
		{int64(4 * bs), bs, 0, io.EOF},
		{int64(8 * bs), bs, 0, io.EOF},
		{0, 0, 0, nil},
		{-int64(bs), bs, 0, blockdev.ErrOutOfRange},
	} {
		p := make([]byte, c.n)
		n, err := in.dev.ReadAt(p, c.off)
		if n != c.wantN || !errors.Is(err, c.wantErr) || (c.wantErr == nil && err != nil) {
			t.Errorf("ReadAt(%d, %d) = %d, %v; want %d, %v", c.n, c.off, n, err, c.wantN, c.wantErr)
		} else if n > 0 && !bytes.Equal(p[:n], init[c.off:c.off+int64(n)]) {
			t.Errorf("ReadAt(%d, %d) returned wrong bytes", c.n, c.off)
		}
	}
}

func testWriteOutOfRange(t *testing.T, v variant, bs int) {
	init := pattern(4*bs, 5)
	in := v.open(t, init, bs)
	want := blockdev.ErrOutOfRange
	if v.readOnly {
		want = blockdev.ErrReadOnly
	}
	for _, off := range []int64{int64(4 * bs), int64(3 * bs), -int64(bs), 1 << 60} {
		if n, err := in.dev.WriteAt(make([]byte, 2*bs), off); n != 0 || !errors.Is(err, want) {
			t.Errorf("WriteAt(2 blocks, %d) = %d, %v; want %v", off, n, err, want)
		}
	}
	checkContents(t, in.dev, init)
}

func testRandomIO(t *testing.T, v variant, bs int) {
	const blocks = 64
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 1))
	model := pattern(blocks*bs, 6)
	in := v.open(t, model, bs)
	for i := range 300 {
		b := r.IntN(blocks)
		n := 1 + r.IntN(min(8, blocks-b))
		if v.readOnly || r.IntN(2) == 0 {
			got := make([]byte, n*bs)
			if _, err := in.dev.ReadAt(got, int64(b*bs)); err != nil && err != io.EOF {
				t.Fatalf("op %d: ReadAt: %v", i, err)
			}
			if !bytes.Equal(got, model[b*bs:(b+n)*bs]) {
				t.Fatalf("op %d: ReadAt(%d blocks at %d) wrong", i, n, b)
			}
			continue
		}
		data := pattern(n*bs, r.Uint64())
		if _, err := in.dev.WriteAt(data, int64(b*bs)); err != nil {
			t.Fatalf("op %d: WriteAt: %v", i, err)
		}
		copy(model[b*bs:], data)
		if r.IntN(10) == 0 {
			if err := in.dev.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	checkContents(t, in.dev, model)
}

func testSyncReopen(t *testing.T, v variant, bs int) {
	model := pattern(9*bs, 7)
	in := v.open(t, model, bs)
	if !v.readOnly {
		data := pattern(2*bs, 70)
		if _, err := in.dev.WriteAt(data, int64(3*bs)); err != nil {
			t.Fatal(err)
		}
		copy(model[3*bs:], data)
	}
	if err := in.dev.Sync(); err != nil {
		t.Fatal(err)
	}
	d, err := in.reopen(nil)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	checkContents(t, d, model)
	if r, ok := in.dev.(rooted); ok {
		if !bytes.Equal(r.Root(), d.(rooted).Root()) {
			t.Errorf("reopened device reports a different root")
		}
	}
}

// testByteAddressable runs random sub-block and unaligned reads and writes
// through the wrapper against a model.
func testByteAddressable(t *testing.T, v variant, bs int) {
	const blocks = 16
	size := blocks * bs
	model := pattern(size, 8)
	in := v.open(t, model, bs)
	d := ByteAddressable(in.dev)
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 2))
	for i := range 400 {
		off := r.IntN(size)
		n := r.IntN(min(3*bs, size-off) + 1)
		if v.readOnly || r.IntN(2) == 0 {
			got := make([]byte, n)
			if m, err := d.ReadAt(got, int64(off)); m != n || (err != nil && err != io.EOF) {
				t.Fatalf("op %d: ReadAt(%d, %d) = %d, %v", i, n, off, m, err)
			}
			if !bytes.Equal(got, model[off:off+n]) {
				t.Fatalf("op %d: ReadAt(%d, %d) wrong", i, n, off)
			}
			continue
		}
		data := pattern(n, r.Uint64())
		if m, err := d.WriteAt(data, int64(off)); m != n || err != nil {
			t.Fatalf("op %d: WriteAt(%d, %d) = %d, %v", i, n, off, m, err)
		}
		copy(model[off:], data)
	}
	checkContents(t, d, model)
	// Past the end: blockdev semantics.
	if n, err := d.ReadAt(make([]byte, 10), int64(size-3)); n != 3 || err != io.EOF {
		t.Errorf("ReadAt across the end = %d, %v; want 3, EOF", n, err)
	}
	if !v.readOnly {
		if _, err := d.WriteAt(make([]byte, 10), int64(size-3)); !errors.Is(err, blockdev.ErrOutOfRange) {
			t.Errorf("WriteAt across the end = %v; want ErrOutOfRange", err)
		}
	}
}

// testConcurrent runs parallel writers on disjoint sub-block ranges (which
// share blocks, through ByteAddressable) and parallel readers.
func testConcurrent(t *testing.T, v variant, bs int) {
	const blocks, workers = 32, 8
	size := blocks * bs
	model := pattern(size, 9)
	in := v.open(t, model, bs)
	d := ByteAddressable(in.dev)
	// Each worker owns the bytes i ≡ w (mod workers) at a stride of 100.
	var wg sync.WaitGroup
	errc := make(chan error, 2*workers)
	var mu sync.Mutex
	for w := range workers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if v.readOnly {
				return
			}
			for i := range 40 {
				off := (i*workers + w) * 100 % (size - 100)
				off -= off % 100
				if (off/100)%workers != w {
					continue
				}
				data := pattern(100, uint64(w*1000+i))
				if _, err := d.WriteAt(data, int64(off)); err != nil {
					errc <- err
					return
				}
				mu.Lock()
				copy(model[off:], data)
				mu.Unlock()
			}
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, 2*bs)
			for i := range 40 {
				b := (w*7 + i*3) % (blocks - 1)
				if _, err := in.dev.ReadAt(buf, int64(b*bs)); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	checkContents(t, d, model)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	re, err := in.reopen(nil)
	if err != nil {
		t.Fatal(err)
	}
	checkContents(t, re, model)
}
