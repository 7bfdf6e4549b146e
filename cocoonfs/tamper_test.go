package cocoonfs

import (
	"bytes"
	"errors"
	"os"
	"testing"
)

// flipDevice serves an image with one byte XORed, leaving the shared image
// bytes untouched, so the sweep needs no copy per flip.
type flipDevice struct {
	data []byte
	off  int64
	mask byte
}

func (d *flipDevice) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(d.data)) {
		return 0, errEOF
	}
	n := copy(p, d.data[off:])
	if d.off >= off && d.off < off+int64(n) {
		p[d.off-off] ^= d.mask
	}
	if n < len(p) {
		return n, errEOF
	}
	return n, nil
}
func (d *flipDevice) WriteAt([]byte, int64) (int, error) { return 0, errors.New("read-only") }
func (d *flipDevice) Sync() error                        { return nil }
func (d *flipDevice) Size() int64                        { return int64(len(d.data)) }
func (d *flipDevice) BlockSize() int                     { return 512 }
func (d *flipDevice) ReadOnly() bool                     { return true }

// longTests selects the exhaustive variants (make test-long sets it).
var longTests = os.Getenv("SEALFS_LONG") != ""

// sweepOffsets returns the offsets to flip: bytes of the first 4 KiB
// (headers, entry leaf, small files, journal log head) every headStep, and a
// stride across the rest, offset so that it lands at varying positions
// within blocks.
func sweepOffsets(size, headStep, stride int64) []int64 {
	var offs []int64
	for o := int64(0); o < 4096 && o < size; o += headStep {
		offs = append(offs, o)
	}
	for o := int64(4096); o < size; o += stride {
		offs = append(offs, o+(o/stride*37)%stride)
	}
	return offs
}

// TestTamperSweep flips one byte at a time across each vector image: every
// file must then read back identical or be refused with an authentication
// (or, for the integrity-checked headers, corruption) error — never differ.
func TestTamperSweep(t *testing.T) {
	// make test covers ~1000 offsets per image; make test-long ~20000.
	headStep, stride := int64(7), int64(16381)
	if longTests {
		headStep, stride = 1, 509
	}
	for _, v := range formatted {
		t.Run(v.image, func(t *testing.T) {
			data, err := os.ReadFile(vectorPath(t, v.image))
			if err != nil {
				t.Fatal(err)
			}
			want := map[uint64][]byte{}
			f, err := Open(&flipDevice{data: data, off: -1}, vectorKey, nil)
			if err != nil {
				t.Fatal(err)
			}
			for ino := range v.files {
				if want[ino], err = f.ReadFile(ino); err != nil {
					t.Fatal(err)
				}
			}
			var same, refusedOpen, refusedRead int
			for _, off := range sweepOffsets(int64(len(data)), headStep, stride) {
				dev := &flipDevice{data: data, off: off, mask: 0x01 << (off % 8)}
				f, err := Open(dev, vectorKey, nil)
				if err != nil {
					if !refused(err) {
						t.Fatalf("flip at %#x: Open: unexpected error class: %v", off, err)
					}
					refusedOpen++
					continue
				}
				allSame := true
				for ino, w := range want {
					got, err := f.ReadFile(ino)
					switch {
					case err != nil && !refused(err):
						t.Fatalf("flip at %#x: inode %d: unexpected error class: %v", off, ino, err)
					case err != nil:
						allSame = false
					case !bytes.Equal(got, w):
						t.Fatalf("flip at %#x: inode %d returned different data without an error", off, ino)
					}
				}
				if allSame {
					same++
				} else {
					refusedRead++
				}
			}
			t.Logf("%d flips: %d unchanged, %d refused at open, %d refused at read", same+refusedOpen+refusedRead, same, refusedOpen, refusedRead)
		})
	}
}

func refused(err error) bool {
	return errors.Is(err, ErrAuthentication) || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrNotCocoonFS) || errors.Is(err, ErrUnsupported)
}

// TestVerifyCatchesAllocatedFlips: a flip inside any allocated block is found
// by Verify (flips in free space are not, by design: free blocks carry no
// authenticated contents).
func TestVerifyCatchesAllocatedFlips(t *testing.T) {
	data, err := os.ReadFile(vectorPath(t, "v01-sha2-aes128.img"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(&flipDevice{data: data, off: -1}, vectorKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	ab := int64(f.layout.AllocBlockSize())
	checked := 0
	step := int64(f.imageAllocBlocks / 64) // a representative slice
	if longTests {
		step = 7
	}
	for a := int64(0); a < int64(f.imageAllocBlocks); a += step {
		if allocated, err := isAllocated(f.bitmap, uint64(a)); err != nil || !allocated || inExtents(uint64(a), f.excluded) {
			continue
		}
		off := a*ab + (a*13)%ab
		g, err := Open(&flipDevice{data: data, off: off, mask: 0x80}, vectorKey, nil)
		if err != nil {
			if !refused(err) {
				t.Fatalf("flip at %#x: %v", off, err)
			}
			continue
		}
		if _, err := g.Verify(t.Context(), nil); !refused(err) {
			t.Fatalf("flip at %#x (allocation block %d): Verify = %v, want a refusal", off, a, err)
		}
		checked++
	}
	t.Logf("Verify refused all %d flips in allocated blocks that Open accepted", checked)
}
