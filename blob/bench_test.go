package blob

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"

	"github.com/sealfs/sealfs/merkle"
)

// BenchmarkInstall installs 16 MiB blobs (Create, 1 MiB writes, Close with
// fsync) with 1 and 2 concurrent writers; MB/s counts the bytes of all
// writers. Compare writers=2 with writers=1 for the scaling ratio.
func BenchmarkInstall(b *testing.B) {
	const size = 16 << 20
	for _, writers := range []int{1, 2} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s := benchStore(b)
			data := make([][]byte, writers)
			names := make([]merkle.Digest, writers)
			for i := range data {
				data[i] = randBytes(uint64(700+i), size)
				names[i] = merkle.FuchsiaRoot(data[i])
			}
			b.SetBytes(int64(size * writers))
			b.ResetTimer()
			for range b.N {
				var wg sync.WaitGroup
				for i := range writers {
					spawn(&wg, func() {
						w, err := s.Create(names[i], size)
						if err != nil {
							b.Error(err)
							return
						}
						for p := data[i]; len(p) > 0; p = p[1<<20:] {
							w.Write(p[:1<<20])
						}
						if err := w.Close(); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				for _, n := range names {
					s.Remove(n)
				}
				b.StartTimer()
			}
		})
	}
}

// benchStore makes a store under $SEALFS_BENCH_DIR if set (to compare
// file systems, e.g. /dev/shm against a disk), else in a test directory.
func benchStore(b *testing.B) *Store {
	dir := os.Getenv("SEALFS_BENCH_DIR")
	if dir == "" {
		return newStore(b)
	}
	d, err := os.MkdirTemp(dir, "sealfs-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(d) })
	s, err := Open(d, &Options{Create: true})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkRead reads a 16 MiB blob sequentially (verifying every block)
// with 128 KiB reads, and with 4 KiB random-offset reads (one block each
// hit, thanks to the cache for neighbours).
func BenchmarkRead(b *testing.B) {
	const size = 16 << 20
	s := newStore(b)
	data := randBytes(800, size)
	name := install(b, s, data)
	blob, err := s.Open(name)
	if err != nil {
		b.Fatal(err)
	}
	defer blob.Close()
	b.Run("sequential-128KiB", func(b *testing.B) {
		buf := make([]byte, 128<<10)
		b.SetBytes(size)
		for range b.N {
			blob.Seek(0, io.SeekStart)
			if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{blob}, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("random-4KiB", func(b *testing.B) {
		buf := make([]byte, 4096)
		b.SetBytes(4096)
		for i := range b.N {
			off := int64(i*7919*4096) % (size - 4096)
			if _, err := blob.ReadAt(buf, off); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sha256-baseline", func(b *testing.B) {
		// The same bytes through the Merkle builder alone, for reference.
		b.SetBytes(size)
		for range b.N {
			mb := merkle.NewFuchsiaBuilder()
			io.Copy(mb, bytes.NewReader(data))
			mb.Finish()
		}
	})
}
