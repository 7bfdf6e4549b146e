package fusefs

import (
	"bytes"
	"errors"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs"
)

var testKey = []byte("fusefs test key, 32 bytes long..")

// newImage makes an image of size bytes on a memory device and opens it
// read-write.
func newImage(t testing.TB, size int64, files map[uint64][]byte) *cocoonfs.FS {
	t.Helper()
	dev := blockdev.NewMemory(size, 512)
	if _, err := cocoonfs.Mkfs(dev, testKey, &cocoonfs.MkfsOptions{NoRandomizeUnallocated: true, IOBlock: 4096, Files: files}); err != nil {
		t.Fatal(err)
	}
	f, err := cocoonfs.Open(dev, testKey, &cocoonfs.Options{ReadWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// testFilesystem is the shared state of a mount, without a mount.
func testFilesystem(f *cocoonfs.FS) *filesystem {
	return &filesystem{fsys: f, live: map[uint64]*fileNode{}, gens: map[uint64]uint64{}, logged: map[string]bool{}, log: log.New(os.Stderr, "", 0)}
}

func pattern(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// checkContent compares everything c holds with want.
func checkContent(t *testing.T, c *content, want []byte, what string) {
	t.Helper()
	if c.size != int64(len(want)) {
		t.Fatalf("%s: size %d, want %d", what, c.size, len(want))
	}
	if c.streaming() {
		if err := c.closeStream(); err != nil {
			t.Fatalf("%s: closeStream: %v", what, err)
		}
	}
	got := make([]byte, len(want)+100)
	n, err := c.readAt(got, 0)
	if n != len(want) || (err != io.EOF && !(err == nil && len(want) == len(got))) {
		t.Fatalf("%s: readAt = %d, %v; want %d, EOF", what, n, err, len(want))
	}
	if !bytes.Equal(got[:n], want) {
		t.Fatalf("%s: contents differ (first difference at %d)", what, firstDiff(got[:n], want))
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestContentModel applies random writes, appends, truncates, reads and
// commits to a file's content and to a byte slice, and compares them after
// every step, and the committed file after every commit.
func TestContentModel(t *testing.T) {
	f := newImage(t, 96<<20, map[uint64][]byte{100: pattern(700<<10, 1)})
	fsys := testFilesystem(f)
	seeds := 4
	if testing.Short() || raceEnabled {
		seeds = 1
	}
	for seed := range uint64(seeds) {
		r := rand.New(rand.NewPCG(seed, 99))
		t.Logf("seed %d", seed)
		model := pattern(700<<10, 1)
		st, err := f.Stat(100)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size != int64(len(model)) {
			model = mustRead(t, f, 100)
		}
		c := newCommittedContent(f, 100, st.Flags, st.Size)
		for step := range 60 {
			var what string
			switch op := r.IntN(10); {
			case op < 3: // write somewhere, maybe past the end
				off := r.Int64N(int64(len(model)) + 20000)
				p := pattern(1+r.IntN(70000), r.Uint64())
				what = "write"
				if err := c.writeAt(p, off); err != nil {
					t.Fatalf("step %d: writeAt(%d bytes at %d): %v", step, len(p), off, err)
				}
				if end := off + int64(len(p)); end > int64(len(model)) {
					model = append(model, make([]byte, end-int64(len(model)))...)
				}
				copy(model[off:], p)
			case op < 5: // append a lot, in kernel-sized writes
				what = "append"
				p := pattern(1+r.IntN(3<<20), r.Uint64())
				for i := 0; i < len(p); i += 128 << 10 {
					q := p[i:min(i+128<<10, len(p))]
					if err := c.writeAt(q, int64(len(model))); err != nil {
						t.Fatalf("step %d: append: %v", step, err)
					}
					model = append(model, q...)
				}
			case op < 6:
				what = "truncate"
				size := r.Int64N(int64(len(model)) + 100000)
				if r.IntN(4) == 0 {
					size = 0
				}
				if err := c.truncate(size); err != nil {
					t.Fatalf("step %d: truncate(%d): %v", step, size, err)
				}
				if size < int64(len(model)) {
					model = model[:size]
				} else {
					model = append(model, make([]byte, size-int64(len(model)))...)
				}
			case op < 8:
				what = "read"
				if c.streaming() && r.IntN(2) == 0 {
					continue // keep streaming sometimes
				}
				if c.streaming() {
					if err := c.closeStream(); err != nil {
						t.Fatal(err)
					}
				}
				off := r.Int64N(int64(len(model)) + 10)
				p := make([]byte, r.IntN(200000))
				n, err := c.readAt(p, off)
				want := model[min(off, int64(len(model))):]
				want = want[:min(len(want), len(p))]
				if n != len(want) || (n < len(p) && err != io.EOF) || (n == len(p) && err != nil) {
					t.Fatalf("step %d: readAt(%d at %d) = %d, %v; want %d", step, len(p), off, n, err, len(want))
				}
				if !bytes.Equal(p[:n], want) {
					t.Fatalf("step %d: read at %d differs at %d", step, off, firstDiff(p[:n], want))
				}
			default:
				what = "commit"
				if err := fsys.commitContent(c, 100, noExtra); err != nil {
					t.Fatalf("step %d: commit: %v", step, err)
				}
				if c.dirty {
					t.Fatalf("step %d: dirty after commit", step)
				}
				if got := mustRead(t, f, 100); !bytes.Equal(got, model) {
					t.Fatalf("step %d: committed file (%d bytes) differs from the model (%d bytes) at %d", step, len(got), len(model), firstDiff(got, model))
				}
			}
			if c.dirtyBytes() > maxDirty {
				t.Fatalf("step %d (%s): %d dirty bytes, more than %d", step, what, c.dirtyBytes(), maxDirty)
			}
			if r.IntN(8) == 0 {
				checkContent(t, c, model, what)
			}
		}
		if err := fsys.commitContent(c, 100, noExtra); err != nil {
			t.Fatal(err)
		}
		c.discard()
	}
	rep, err := f.Verify(t.Context(), nil)
	if err != nil {
		t.Fatalf("Verify: %v %v", err, rep.Problems)
	}
}

func mustRead(t testing.TB, f *cocoonfs.FS, ino uint64) []byte {
	t.Helper()
	b, err := f.ReadFile(ino)
	if err != nil {
		t.Fatalf("ReadFile(%d): %v", ino, err)
	}
	return b
}

// TestContentFreeze: a frozen content keeps the old bytes after its
// committed file is removed.
func TestContentFreeze(t *testing.T) {
	old := pattern(300<<10, 3)
	f := newImage(t, 32<<20, map[uint64][]byte{20: old})
	c := newCommittedContent(f, 20, 0, int64(len(old)))
	if err := c.writeAt([]byte("changed"), 1000); err != nil {
		t.Fatal(err)
	}
	copy(old[1000:], "changed")
	if err := c.freeze(); err != nil {
		t.Fatal(err)
	}
	fsys := testFilesystem(f)
	if err := fsys.commit(func(tx *cocoonfs.Tx) error { return tx.Remove(20) }); err != nil {
		t.Fatal(err)
	}
	// Reuse the freed blocks.
	if err := fsys.commit(func(tx *cocoonfs.Tx) error { return tx.WriteFile(21, pattern(400<<10, 9), 0) }); err != nil {
		t.Fatal(err)
	}
	checkContent(t, c, old, "frozen")
	c.discard()
}

// TestContentRenameCopy: materializing for another inode re-encrypts; the
// committed result reads back under the new number.
func TestContentRenameCopy(t *testing.T) {
	for _, size := range []int{0, 1000, 300 << 10, 3 << 20} {
		data := pattern(size, uint64(size))
		f := newImage(t, 32<<20, map[uint64][]byte{30: data})
		fsys := testFilesystem(f)
		c := newCommittedContent(f, 30, 0, int64(size))
		err := fsys.commitContent(c, 31, func(tx *cocoonfs.Tx) error { return tx.Remove(30) })
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if got := mustRead(t, f, 31); !bytes.Equal(got, data) {
			t.Fatalf("size %d: renamed file differs", size)
		}
		if _, err := f.Stat(30); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("size %d: old inode still there: %v", size, err)
		}
		if c.ino != 31 || c.dirty {
			t.Fatalf("size %d: content ino %d dirty %v after the rename", size, c.ino, c.dirty)
		}
	}
}

// TestContentNoSpace: a commit that does not fit fails, the image keeps
// the old file and the content can still be discarded cleanly.
func TestContentNoSpace(t *testing.T) {
	f := newImage(t, 4<<20, map[uint64][]byte{40: []byte("old")})
	fsys := testFilesystem(f)
	c := newCommittedContent(f, 40, 0, 3)
	var err error
	for i := 0; i < 64 && err == nil; i++ {
		err = c.writeAt(pattern(128<<10, uint64(i)), c.size)
	}
	if err == nil {
		err = fsys.commitContent(c, 40, noExtra)
	}
	if !errors.Is(err, cocoonfs.ErrNoSpace) {
		t.Fatalf("writing 8 MiB to a 4 MiB image: %v, want ErrNoSpace", err)
	}
	c.discard()
	if got := mustRead(t, f, 40); string(got) != "old" {
		t.Fatalf("file is %q after a failed write", got)
	}
	if rep, err := f.Verify(t.Context(), nil); err != nil {
		t.Fatalf("Verify: %v %v", err, rep.Problems)
	}
}

// TestContentDirtyCap: scattered writes over a large file never keep more
// than maxDirty bytes of pages; the merged file is staged instead.
func TestContentDirtyCap(t *testing.T) {
	model := pattern(20<<20, 5)
	f := newImage(t, 96<<20, map[uint64][]byte{50: model})
	fsys := testFilesystem(f)
	c := newCommittedContent(f, 50, 0, int64(len(model)))
	r := rand.New(rand.NewPCG(5, 5))
	staged := false
	for i := range 3000 {
		off := r.Int64N(int64(len(model)) - 5000)
		p := pattern(1+r.IntN(5000), uint64(i))
		if err := c.writeAt(p, off); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], p)
		if c.dirtyBytes() > maxDirty {
			t.Fatalf("write %d: %d dirty bytes", i, c.dirtyBytes())
		}
		staged = staged || c.baseKind == baseStaged
	}
	if !staged {
		t.Fatal("the pages were never merged into a staged copy")
	}
	checkContent(t, c, model, "scattered")
	if err := fsys.commitContent(c, 50, noExtra); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, f, 50); !bytes.Equal(got, model) {
		t.Fatalf("committed file differs at %d", firstDiff(got, model))
	}
}
