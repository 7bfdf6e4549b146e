package fusefs

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs"
)

// benchSize is the large file of the sequential benchmarks:
// SEALFS_BENCH_MOUNT_SIZE bytes, default 64 MiB (bench/mount.sh runs the
// 256 MiB comparison with the commands).
func benchSize(b *testing.B) int {
	if s := os.Getenv("SEALFS_BENCH_MOUNT_SIZE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	return 64 << 20
}

// fileImage makes an image in a file of size bytes and opens it read-write.
func fileImage(b *testing.B, size int64) *cocoonfs.FS {
	b.Helper()
	path := filepath.Join(b.TempDir(), "disk.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	dev, err := blockdev.OpenFile(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dev.Close() })
	if _, err := cocoonfs.Mkfs(dev, testKey, &cocoonfs.MkfsOptions{Size: size, IOBlock: 4096, NoRandomizeUnallocated: true}); err != nil {
		b.Fatal(err)
	}
	f, err := cocoonfs.Open(dev, testKey, &cocoonfs.Options{ReadWrite: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// BenchmarkSeqWrite writes a large file through the mount (1 MiB writes;
// the close commits); BenchmarkTxWrite is the same through one library
// transaction, as `sealfs write` does.
func BenchmarkSeqWrite(b *testing.B) {
	size := benchSize(b)
	f := fileImage(b, int64(size)*3+64<<20)
	m := mountFS(b, f, Options{})
	buf := pattern(1<<20, 1)
	b.SetBytes(int64(size))
	for b.Loop() {
		fh, err := os.Create(m.path("100"))
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < size; off += len(buf) {
			if _, err := fh.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		if err := fh.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTxWrite(b *testing.B) {
	size := benchSize(b)
	f := fileImage(b, int64(size)*3+64<<20)
	buf := pattern(1<<20, 1)
	b.SetBytes(int64(size))
	for b.Loop() {
		tx, err := f.Begin()
		if err != nil {
			b.Fatal(err)
		}
		w, err := tx.Create(100, 0)
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < size; off += len(buf) {
			if _, err := w.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSeqRead reads a large file through the mount; BenchmarkFileRead
// streams it with File.WriteTo, as `sealfs read` does.
func BenchmarkSeqRead(b *testing.B) {
	size := benchSize(b)
	f := fileImage(b, int64(size)*2+64<<20)
	writeBig(b, f, size)
	m := mountFS(b, f, Options{})
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(size))
	for b.Loop() {
		fh, err := os.Open(m.path("100"))
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, onlyReader{fh}, buf)
		fh.Close()
		if err != nil || n != int64(size) {
			b.Fatalf("read %d bytes: %v", n, err)
		}
	}
}

func BenchmarkFileRead(b *testing.B) {
	size := benchSize(b)
	f := fileImage(b, int64(size)*2+64<<20)
	writeBig(b, f, size)
	b.SetBytes(int64(size))
	for b.Loop() {
		r, err := f.OpenFile(100)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := r.WriteTo(io.Discard); err != nil || n != int64(size) {
			b.Fatalf("read %d bytes: %v", n, err)
		}
	}
}

// onlyReader hides WriteTo so io.Copy uses the buffer (1 MiB reads).
type onlyReader struct{ io.Reader }

func writeBig(b *testing.B, f *cocoonfs.FS, size int) {
	b.Helper()
	tx, err := f.Begin()
	if err != nil {
		b.Fatal(err)
	}
	w, err := tx.Create(100, 0)
	if err != nil {
		b.Fatal(err)
	}
	buf := pattern(1<<20, 2)
	for off := 0; off < size; off += len(buf) {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	if err := tx.Commit(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSmallFiles creates, writes (4 KiB) and closes a file through
// the mount: one commit per file. Report files/s as 1e9/ns_per_op.
func BenchmarkSmallFiles(b *testing.B) {
	f := fileImage(b, 256<<20)
	m := mountFS(b, f, Options{})
	data := pattern(4096, 3)
	i := 0
	for b.Loop() {
		if err := os.WriteFile(m.path(fmt.Sprint(100000+i)), data, 0o600); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "files/s")
}

// BenchmarkTxSmallFile is one transaction writing a 4 KiB file: the floor
// of BenchmarkSmallFiles.
func BenchmarkTxSmallFile(b *testing.B) {
	f := fileImage(b, 256<<20)
	data := pattern(4096, 3)
	i := 0
	for b.Loop() {
		tx, err := f.Begin()
		if err != nil {
			b.Fatal(err)
		}
		if err := tx.WriteFile(uint64(100000+i), data, 0); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(context.Background()); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "files/s")
}
