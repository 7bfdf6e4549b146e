package blob

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"os"
	"testing"

	"github.com/sealfs/sealfs/internal/testutil"

	"github.com/klauspost/compress/zstd"

	"github.com/sealfs/sealfs/merkle"
)

// syntheticDelivery is a compressed Type 1 delivery blob of size bytes
// whose chunks all hold the same bytes, produced as it is read (one zstd
// frame, repeated), so a test can install a blob of any size without
// holding it or compressing it. It is written from RFC-0207 and
// merkle-formats.md §2 independently of package delivery's encoder.
type syntheticDelivery struct {
	size        int64
	chunk       []byte // the bytes of every full chunk
	full, last  []byte // their zstd frame, and the last (shorter) chunk's
	chunks      int64
	headers     []byte // delivery header, archive header, seek table
	lastSize    int64
	pos, length int64
}

func newSyntheticDelivery(t testing.TB, size int64) *syntheticDelivery {
	t.Helper()
	const maxEntries, defaultChunk, align = 1023, 32 << 10, 8 << 10
	cs := int64(defaultChunk)
	if size > maxEntries*defaultChunk {
		cs = ((size+maxEntries-1)/maxEntries + align - 1) / align * align
	}
	d := &syntheticDelivery{size: size, chunks: (size + cs - 1) / cs}
	d.lastSize = size - (d.chunks-1)*cs
	// Random letters of a 16-letter alphabet: compresses to about 60%.
	d.chunk = randBytes(uint64(cs), int(cs))
	for i, b := range d.chunk {
		d.chunk[i] = "abcdefghijklmnop"[b&15]
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderCRC(true))
	if err != nil {
		t.Fatal(err)
	}
	d.full = enc.EncodeAll(d.chunk, nil)
	d.last = enc.EncodeAll(d.chunk[:d.lastSize], nil)
	enc.Close()

	table := make([]byte, 32+32*d.chunks)
	copy(table, []byte{0x46, 0x9b, 0x78, 0xef, 0x0f, 0xd0, 0xb2, 0x03})
	binary.LittleEndian.PutUint16(table[8:], 2)
	binary.LittleEndian.PutUint32(table[12:], uint32(d.chunks))
	cOff := uint64(len(table))
	for i := int64(0); i < d.chunks; i++ {
		e := table[32+32*i:]
		dSize, cSize := uint64(cs), uint64(len(d.full))
		if i == d.chunks-1 {
			dSize, cSize = uint64(d.lastSize), uint64(len(d.last))
		}
		binary.LittleEndian.PutUint64(e[0:], uint64(i*cs))
		binary.LittleEndian.PutUint64(e[8:], dSize)
		binary.LittleEndian.PutUint64(e[16:], cOff)
		binary.LittleEndian.PutUint64(e[24:], cSize)
		cOff += cSize
	}
	binary.LittleEndian.PutUint32(table[16:], crc32.Update(crc32.ChecksumIEEE(table[:16]), crc32.IEEETable, table[20:]))
	h := make([]byte, 28)
	copy(h, []byte{0xfc, 0x1a, 0xb1, 0x0b})
	binary.LittleEndian.PutUint32(h[4:], 1)
	binary.LittleEndian.PutUint32(h[8:], 28)
	binary.LittleEndian.PutUint64(h[12:], cOff)
	binary.LittleEndian.PutUint32(h[24:], 1) // compressed
	binary.LittleEndian.PutUint32(h[20:], crc32.ChecksumIEEE(h))
	d.headers = append(h, table...)
	d.length = int64(len(d.headers)) + int64(cOff) - int64(len(table))
	return d
}

// Read implements io.Reader.
func (d *syntheticDelivery) Read(p []byte) (int, error) {
	if d.pos >= d.length {
		return 0, io.EOF
	}
	var src []byte
	var at int64
	if d.pos < int64(len(d.headers)) {
		src, at = d.headers, d.pos
	} else {
		off := d.pos - int64(len(d.headers))
		i := off / int64(len(d.full))
		src, at = d.full, off%int64(len(d.full))
		if i == d.chunks-1 {
			src = d.last
		}
	}
	n := copy(p, src[at:])
	d.pos += int64(n)
	return n, nil
}

// root is the Merkle root of the blob, computed without holding it.
func (d *syntheticDelivery) root() merkle.Digest {
	st := merkle.NewFuchsiaStream(io.Discard)
	for i := int64(0); i < d.chunks-1; i++ {
		st.Write(d.chunk)
	}
	st.Write(d.chunk[:d.lastSize])
	root, _, _ := st.Finish()
	return root
}

// TestPutDeliveryBoundedMemory installs a 384 MiB delivery blob (64 MiB
// under the race detector; 8 GiB with SEALFS_LONG=1) with PutDelivery and
// checks what that allocated: decoding goes chunk by chunk through fixed
// buffers into the verified write path, whose Merkle tree spills to a
// file, so the bound holds whatever the blob size.
func TestPutDeliveryBoundedMemory(t *testing.T) {
	size := int64(384 << 20)
	if raceEnabled {
		size = 64 << 20
	}
	if os.Getenv("SEALFS_LONG") != "" {
		size = 8 << 30
	}
	const bound = 24 << 20
	d := newSyntheticDelivery(t, size)
	want := d.root()
	s := newStore(t)
	var name merkle.Digest
	var err error
	allocated, peak := testutil.MemoryOf(func() { name, err = s.PutDelivery(d) })
	if err != nil {
		t.Fatal(err)
	}
	if name != want {
		t.Fatalf("installed as %s; want %s", name, want)
	}
	t.Logf("%d MiB blob (%d MiB delivered): allocated %.1f MiB in all, heap grew by at most %.1f MiB (bound %d MiB)",
		size>>20, d.length>>20, float64(allocated)/(1<<20), float64(peak)/(1<<20), bound>>20)
	if allocated > bound || peak > bound {
		t.Errorf("allocated %d bytes, heap grew by %d; want both under %d", allocated, peak, bound)
	}
	info, err := s.Stat(name)
	if err != nil || info.Size != size || info.TreeBytes != merkle.FuchsiaTreeSize(size) {
		t.Fatalf("Stat = %+v, %v", info, err)
	}
	b, err := s.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, off := range []int64{0, size / 2, size - 100} {
		got := make([]byte, 100)
		if _, err := b.ReadAt(got, off); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		c := int64(len(d.chunk))
		want := d.chunk[off%c : off%c+100]
		if !bytes.Equal(got, want) {
			t.Fatalf("bytes at %d differ", off)
		}
	}
}

// TestSpill installs blobs around block and hash-block boundaries with a
// spill threshold of a few hashes, so the level-0 hashes go through the
// spill file: the stored trees must be the ones FuchsiaBuilder computes,
// and no file is left behind.
func TestSpill(t *testing.T) {
	defer func(old int) { spillMemory = old }(spillMemory)
	spillMemory = 100
	for _, n := range []int{0, 1, blockSize, blockSize + 1, 3*blockSize + 5, 257 * blockSize, 300*blockSize + 9} {
		data := randBytes(uint64(n), n)
		s := newStore(t)
		name, err := s.Put(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if want := merkle.FuchsiaRoot(data); name != want {
			t.Fatalf("%d bytes: name %s; want %s", n, name, want)
		}
		if err := s.Verify(name); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		raw, err := os.ReadFile(s.path(name))
		if err != nil {
			t.Fatal(err)
		}
		b := merkle.NewFuchsiaBuilder()
		b.Write(data)
		_, tree := b.Finish()
		if !bytes.Equal(raw[headerSize+n:], tree) {
			t.Fatalf("%d bytes: stored tree differs from FuchsiaBuilder's", n)
		}
		if tmp, _ := s.tempFiles(); len(tmp) != 0 {
			t.Fatalf("%d bytes: left %v", n, tmp)
		}
	}
}
