package cocoonfs

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"testing/fstest"

	"github.com/sealfs/sealfs/blockdev"
)

// countingDevice counts the bytes read through it.
type countingDevice struct {
	blockdev.Device
	read atomic.Int64
}

func (d *countingDevice) ReadAt(p []byte, off int64) (int, error) {
	d.read.Add(int64(len(p)))
	return d.Device.ReadAt(p, off)
}

// boundarySizes are file sizes around every boundary a reader crosses: the
// cipher block, the allocation block, the data block, the read chunk.
func boundarySizes() []int {
	var out []int
	for _, b := range []int{0, 16, 128, 512, 4096, readChunk, 2 * readChunk} {
		for _, d := range []int{-17, -16, -15, -1, 0, 1, 15, 16, 17} {
			if n := b + d; n >= 0 {
				out = append(out, n)
			}
		}
	}
	return append(out, 3*readChunk+12345)
}

func writeFiles(t testing.TB, f *FS, files map[uint64][]byte) {
	t.Helper()
	tx, err := f.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for ino, data := range files {
		if err := tx.WriteFile(ino, data, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestFileReadAt reads files of every boundary size through ReadAt at
// random offsets and lengths (small ones served from a cached window, large
// ones cut into pieces read in parallel), through WriteTo and through io/fs, and
// compares with what was written.
func TestFileReadAt(t *testing.T) {
	for _, layout := range []struct {
		name string
		opts MkfsOptions
	}{
		{"default", MkfsOptions{}},
		{"io4k", MkfsOptions{IOBlock: 4096}},
		{"sm4", MkfsOptions{Hash: "sm3", Cipher: "sm4"}},
	} {
		t.Run(layout.name, func(t *testing.T) {
			opts := layout.opts
			opts.NoRandomizeUnallocated = true
			dev := mkfsMem(t, 64<<20, &opts)
			f := openRW(t, dev)
			r := rand.New(rand.NewPCG(1, 2))
			files := map[uint64][]byte{}
			sizes := boundarySizes()
			if raceDetector && layout.name != "default" {
				// The race detector slows this tenfold; one layout covers
				// the concurrency, the others the arithmetic.
				sizes = sizes[:len(sizes)/2]
			}
			for i, n := range sizes {
				b := make([]byte, n)
				for j := range b {
					b[j] = byte(r.Uint32())
				}
				files[uint64(100+i)] = b
			}
			writeFiles(t, f, files)
			for ino, want := range files {
				rd, err := f.OpenFile(ino)
				if err != nil {
					t.Fatalf("OpenFile(%d): %v", ino, err)
				}
				st, err := rd.Stat()
				if err != nil || st.Size != int64(len(want)) {
					t.Fatalf("inode %d: Stat = %d, %v; want %d", ino, st.Size, err, len(want))
				}
				var buf bytes.Buffer
				if n, err := rd.WriteTo(&buf); err != nil || n != int64(len(want)) || !bytes.Equal(buf.Bytes(), want) {
					t.Fatalf("inode %d: WriteTo = %d, %v (equal %v)", ino, n, err, bytes.Equal(buf.Bytes(), want))
				}
				for k := 0; k < 20; k++ {
					off := r.IntN(len(want) + 2)
					p := make([]byte, r.IntN(3*4096+50))
					if k%4 == 0 {
						// Large enough to be cut into pieces read in
						// parallel, of lengths no piece count divides.
						p = make([]byte, r.IntN(3*readChunk))
					}
					n, err := rd.ReadAt(p, int64(off))
					wantN := max(0, min(len(p), len(want)-off))
					if n != wantN || !bytes.Equal(p[:n], want[min(off, len(want)):min(off, len(want))+wantN]) {
						t.Fatalf("inode %d: ReadAt(%d bytes at %d) = %d, %v; want %d bytes", ino, len(p), off, n, err, wantN)
					}
					if n < len(p) && err != io.EOF {
						t.Fatalf("inode %d: short ReadAt at %d returned %v, want io.EOF", ino, off, err)
					}
				}
			}
		})
	}
}

// TestIOFSStreams runs fstest over files read in place, a few bytes at a
// time among other reads.
func TestIOFSStreams(t *testing.T) {
	dev := mkfsMem(t, 4<<20, &MkfsOptions{NoRandomizeUnallocated: true})
	f := openRW(t, dev)
	files := map[uint64][]byte{}
	for i, n := range []int{0, 1, 4095, 70000, 200000} {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(j * (i + 3))
		}
		files[uint64(20+i)] = b
	}
	writeFiles(t, f, files)
	if err := fstest.TestFS(f.FS(), "20", "21", "22", "23", "24"); err != nil {
		t.Fatal(err)
	}
}

// TestStatReadsOnlyTheTail: the length of a file comes from its last
// cipher blocks, so Stat and OpenFile of a large file read a few data
// blocks, not the file.
func TestStatReadsOnlyTheTail(t *testing.T) {
	dev := mkfsMem(t, 8<<20, &MkfsOptions{NoRandomizeUnallocated: true})
	f := openRW(t, dev)
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	writeFiles(t, f, map[uint64][]byte{77: big})
	cd := &countingDevice{Device: dev}
	g, err := Open(cd, txKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := cd.read.Load()
	st, err := g.Stat(77)
	if err != nil || st.Size != int64(len(big)) {
		t.Fatalf("Stat = %+v, %v", st, err)
	}
	// The tail's data blocks, the path to them in the tree, the extents
	// list and bitmap blocks: a few KiB against the file's 3 MiB.
	if n := cd.read.Load() - before; n > 64<<10 {
		t.Errorf("Stat of a %d-byte file read %d bytes from the device", len(big), n)
	}
}

// TestFileFollowsCommits: an open File sees a replaced inode's new contents
// and reports fs.ErrNotExist once it is removed.
func TestFileFollowsCommits(t *testing.T) {
	dev := mkfsMem(t, 4<<20, nil)
	f := openRW(t, dev)
	writeFiles(t, f, map[uint64][]byte{50: []byte("first version")})
	rd, err := f.OpenFile(50)
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, f, map[uint64][]byte{50: []byte("the second, longer version")})
	p := make([]byte, 100)
	n, _ := rd.ReadAt(p, 0)
	if string(p[:n]) != "the second, longer version" {
		t.Fatalf("after a commit, ReadAt = %q", p[:n])
	}
	tx, _ := f.Begin()
	if err := tx.Remove(50); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.ReadAt(p, 0); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after removal, ReadAt = %v, want fs.ErrNotExist", err)
	}
}
