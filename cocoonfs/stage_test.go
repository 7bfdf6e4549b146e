package cocoonfs

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"
)

func patterned(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed ^ byte(i>>9)
	}
	return b
}

// TestStageAlongsideCommits writes large files through staged writers while
// other transactions commit, reads them back before adoption, adopts them
// and checks every file and the image.
func TestStageAlongsideCommits(t *testing.T) {
	dev := mkfsMem(t, 32<<20, &MkfsOptions{NoRandomizeUnallocated: true})
	f := openRW(t, dev)
	want := map[uint64][]byte{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	// Two staged writers and a stream of small transactions, at once.
	staged := make([]*FileWriter, 2)
	for i := range staged {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ino := uint64(100 + i)
			data := patterned(3<<20+i*4099, byte(i))
			w, err := f.Stage(ino, 0)
			if err != nil {
				errs <- err
				return
			}
			for off := 0; off < len(data); off += 70000 {
				if _, err := w.Write(data[off:min(off+70000, len(data))]); err != nil {
					errs <- err
					return
				}
			}
			if err := w.Close(); err != nil {
				errs <- err
				return
			}
			staged[i] = w
			mu.Lock()
			want[ino] = data
			mu.Unlock()
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := 0; k < 20; k++ {
			ino := uint64(20 + k%5)
			data := patterned(1000+k*3000, byte(k))
			tx, err := f.Begin()
			if err != nil {
				errs <- err
				return
			}
			if err := tx.WriteFile(ino, data, 0); err != nil {
				errs <- err
				return
			}
			if err := tx.Commit(t.Context()); err != nil {
				errs <- err
				return
			}
			mu.Lock()
			want[ino] = data
			mu.Unlock()
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Read back before adoption: the bytes written, at any offset.
	for i, w := range staged {
		data := want[uint64(100+i)]
		for _, off := range []int{0, 1, 4095, 1 << 20, len(data) - 3} {
			p := make([]byte, 5000)
			n, err := w.ReadAt(p, int64(off))
			if (err != nil && err != io.EOF) || !bytes.Equal(p[:n], data[off:off+n]) {
				t.Fatalf("staged %d: ReadAt(%d) = %d, %v", i, off, n, err)
			}
		}
	}
	tx, _ := f.Begin()
	for _, w := range staged {
		if err := tx.Adopt(w); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkState(t, f, want)
}

// TestStageAbortAndMisuse: an aborted staged file frees its blocks (the
// image verifies with nothing leaked and the space is reused); adopting an
// open, aborted or foreign writer is refused; read-back of a tampered block
// fails authentication.
func TestStageAbortAndMisuse(t *testing.T) {
	dev := mkfsMem(t, 4<<20, &MkfsOptions{NoRandomizeUnallocated: true})
	f := openRW(t, dev)
	w, err := f.Stage(50, 0)
	if err != nil {
		t.Fatal(err)
	}
	data := patterned(3<<20, 9)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	tx, _ := f.Begin()
	if err := tx.Adopt(w); err == nil {
		t.Fatal("adopted an open writer")
	}
	tx.Rollback()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Tamper with a digested block: read-back must fail, not lie.
	e := w.file.extents[0]
	ab := f.layout.AllocBlockSize()
	flip := make([]byte, 1)
	off := int64((e.Start + 8) * ab)
	dev.ReadAt(flip, off)
	flip[0] ^= 1
	dev.WriteAt(flip, off)
	if _, err := w.ReadAt(make([]byte, 4096), 0); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("read-back of a tampered block: %v, want ErrAuthentication", err)
	}
	w.Abort()
	tx, _ = f.Begin()
	if err := tx.Adopt(w); err == nil {
		t.Fatal("adopted an aborted writer")
	}
	// The aborted file's 3 MiB are free again: another 3 MiB file fits.
	if err := tx.WriteFile(51, data, 0); err != nil {
		t.Fatalf("the space of an aborted staged file was not freed: %v", err)
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkState(t, f, map[uint64][]byte{51: data})
	g := openRW(t, mkfsMem(t, 1<<20, nil))
	w2, _ := g.Stage(60, 0)
	w2.Write([]byte("x"))
	w2.Close()
	tx, _ = f.Begin()
	if err := tx.Adopt(w2); err == nil {
		t.Fatal("adopted another image's writer")
	}
	tx.Rollback()
}

// TestSmallFilesSideBySide: small files written in a row share IO-block-
// aligned neighbours, not a writer segment (1 MiB) each.
func TestSmallFilesSideBySide(t *testing.T) {
	dev := mkfsMem(t, 8<<20, &MkfsOptions{NoRandomizeUnallocated: true})
	f := openRW(t, dev)
	tx, _ := f.Begin()
	for i := uint64(0); i < 50; i++ {
		if err := tx.WriteFile(100+i, patterned(100, byte(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	io := f.layout.IOBlockSize() / f.layout.AllocBlockSize()
	var prev uint64
	for i := uint64(0); i < 50; i++ {
		e, _, err := f.index.lookup(100 + i)
		if err != nil {
			t.Fatal(err)
		}
		start, _, _ := e.Ptr.Decode()
		if i > 0 && (start <= prev || start-prev > 2*io) {
			t.Fatalf("inode %d starts at block %d, %d blocks after the previous file", 100+i, start, start-prev)
		}
		prev = start
	}
}
