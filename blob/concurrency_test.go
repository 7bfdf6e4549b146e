package blob

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sealfs/sealfs/merkle"
)

// TestConcurrentInstallsDifferent installs different blobs in parallel.
func TestConcurrentInstallsDifferent(t *testing.T) {
	s := newStore(t)
	const n = 16
	var wg sync.WaitGroup
	for i := range n {
		spawn(&wg, func() {
			data := randBytes(uint64(100+i), 5*blockSize+i*1000)
			name := merkle.FuchsiaRoot(data)
			w, err := s.Create(name, int64(len(data)))
			if err != nil {
				t.Error(err)
				return
			}
			for p := data; len(p) > 0; p = p[min(len(p), 3000):] {
				if _, err := w.Write(p[:min(len(p), 3000)]); err != nil {
					t.Error(err)
					return
				}
			}
			if err := w.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	names, err := s.List()
	if err != nil || len(names) != n {
		t.Fatalf("List: %d blobs, %v", len(names), err)
	}
	if _, err := s.VerifyAll(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	checkNoTemp(t, s)
}

// TestConcurrentInstallsSame races writers of one blob, through Create and
// through Put, from two Stores on the same directory: exactly one install
// succeeds, every other reports fs.ErrExist, and the blob is intact.
func TestConcurrentInstallsSame(t *testing.T) {
	s := newStore(t)
	s2, err := Open(s.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(200, 30*blockSize+1)
	name := merkle.FuchsiaRoot(data)
	for round := range 5 {
		var ok, exist atomic.Int32
		var wg sync.WaitGroup
		for i := range 8 {
			st := []*Store{s, s2}[i%2]
			spawn(&wg, func() {
				var err error
				if i%4 < 2 {
					var got merkle.Digest
					got, err = st.Put(bytes.NewReader(data))
					if err == nil && got != name {
						t.Errorf("Put named it %s", got)
					}
				} else {
					var w *Writer
					w, err = st.Create(name, int64(len(data)))
					if err == nil {
						w.Write(data)
						err = w.Close()
					}
				}
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, fs.ErrExist):
					exist.Add(1)
				default:
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if ok.Load() != 1 || exist.Load() != 7 {
			t.Fatalf("round %d: %d installs succeeded, %d fs.ErrExist; want 1 and 7", round, ok.Load(), exist.Load())
		}
		if err := s.Verify(name); err != nil {
			t.Fatal(err)
		}
		checkNoTemp(t, s)
		if err := s.Remove(name); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReadersDuringWrites reads installed blobs (one Blob shared by many
// goroutines, through ReadAt, and private Blobs through Read) while other
// goroutines install and remove blobs and take List, Stat and Usage.
func TestReadersDuringWrites(t *testing.T) {
	s := newStore(t)
	stable := randBytes(300, 50*blockSize+77)
	stableName := install(t, s, stable)
	shared, err := s.Open(stableName)
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := range 3 { // writers
		spawn(&wg, func() {
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				data := randBytes(uint64(400+i*1000+j%5), 8*blockSize+j)
				name, err := s.Put(bytes.NewReader(data))
				if err != nil && !errors.Is(err, fs.ErrExist) {
					t.Error(err)
					return
				}
				if j%2 == 1 {
					if err := s.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	spawn(&wg, func() { // bookkeeping
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.List(); err != nil {
				t.Error(err)
			}
			if _, err := s.Usage(); err != nil {
				t.Error(err)
			}
			if _, err := s.Stat(stableName); err != nil {
				t.Error(err)
			}
		}
	})
	var readers sync.WaitGroup
	for i := range 6 {
		spawn(&readers, func() {
			for k := range 30 {
				if i%2 == 0 {
					off := int64((i*7919 + k*4099) % len(stable))
					p := make([]byte, 3*blockSize)
					n, err := shared.ReadAt(p, off)
					if err != nil && err != io.EOF {
						t.Error(err)
						return
					}
					if !bytes.Equal(p[:n], stable[off:off+int64(n)]) {
						t.Error("shared ReadAt: wrong bytes")
						return
					}
					continue
				}
				b, err := s.Open(stableName)
				if err != nil {
					t.Error(err)
					return
				}
				got, err := io.ReadAll(b)
				b.Close()
				if err != nil || !bytes.Equal(got, stable) {
					t.Errorf("Read: %v", err)
					return
				}
			}
		})
	}
	readers.Wait()
	close(stop)
	wg.Wait()
	if _, err := s.VerifyAll(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
}

// TestBlobReadSeekConcurrent: Read and Seek from several goroutines on one
// Blob are serialized (the race detector checks the offset).
func TestBlobReadSeekConcurrent(t *testing.T) {
	s := newStore(t)
	data := randBytes(500, 20*blockSize)
	b, err := s.Open(install(t, s, data))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var wg sync.WaitGroup
	for i := range 4 {
		spawn(&wg, func() {
			p := make([]byte, 1000)
			for range 50 {
				if i == 0 {
					b.Seek(0, io.SeekStart)
				}
				if _, err := b.Read(p); err != nil && err != io.EOF {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// spawn is sync.WaitGroup.Go for go1.24.
func spawn(wg *sync.WaitGroup, f func()) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		f()
	}()
}
