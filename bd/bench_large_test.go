package bd

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
)

// largeBench is a sparse, file-backed Verity device formatted once per
// benchmark run: its size is SEALFS_BENCH_BD_SIZE bytes (default 8 GiB,
// whose tree is 128 MiB with 4 KiB blocks, far more than a default tree
// cache holds).
var largeBench struct {
	once       sync.Once
	dir        string
	data, tree string
	root       []byte
	err        error
}

func largeBenchDevice(b *testing.B) (data, tree string, root []byte) {
	b.Helper()
	largeBench.once.Do(func() {
		size := int64(8 << 30)
		if s := os.Getenv("SEALFS_BENCH_BD_SIZE"); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				largeBench.err = err
				return
			}
			size = n
		}
		dir, err := os.MkdirTemp("", "sealfs-bd-bench-")
		if err != nil {
			largeBench.err = err
			return
		}
		largeBench.dir = dir
		largeBench.data, largeBench.tree = filepath.Join(dir, "data"), filepath.Join(dir, "tree")
		d, err := blockdev.CreateFile(largeBench.data, size, nil)
		if err != nil {
			largeBench.err = err
			return
		}
		defer d.Close()
		ts, err := TreeSize(size, benchIO)
		if err != nil {
			largeBench.err = err
			return
		}
		tr, err := blockdev.CreateFile(largeBench.tree, ts, nil)
		if err != nil {
			largeBench.err = err
			return
		}
		defer tr.Close()
		v, err := FormatVerity(context.Background(), d, tr, testMACKey, nil)
		if err != nil {
			largeBench.err = err
			return
		}
		largeBench.root = v.Root()
	})
	if largeBench.err != nil {
		b.Fatal(largeBench.err)
	}
	return largeBench.data, largeBench.tree, largeBench.root
}

// TestMain removes the large benchmark device after the run.
func TestMain(m *testing.M) {
	code := m.Run()
	if largeBench.dir != "" {
		os.RemoveAll(largeBench.dir)
	}
	os.Exit(code)
}

// openLargeBench opens the large device and reports the heap it holds.
func openLargeBench(b *testing.B) *Verity {
	data, tree, root := largeBenchDevice(b)
	d, err := blockdev.OpenFile(data, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	tr, err := blockdev.OpenFile(tree, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tr.Close() })
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	v, err := OpenVerity(d, tr, testMACKey, root, nil)
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/(1<<20), "heap-MiB")
	return v
}

// BenchmarkLargeOpen is OpenVerity of the large device.
func BenchmarkLargeOpen(b *testing.B) {
	largeBenchDevice(b)
	for b.Loop() {
		openLargeBench(b)
	}
}

// BenchmarkLargeRandRead4K reads random 4 KiB blocks of the whole large
// device (a cold tree cache for most of them).
func BenchmarkLargeRandRead4K(b *testing.B) {
	v := openLargeBench(b)
	buf := make([]byte, benchIO)
	r := rand.New(rand.NewPCG(5, 6))
	blocks := v.Size() / benchIO
	b.SetBytes(benchIO)
	for b.Loop() {
		if _, err := v.ReadAt(buf, r.Int64N(blocks)*benchIO); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLargeRandWrite4K writes random 4 KiB blocks of the whole large
// device (each write also updates its leaf and path on the tree file).
func BenchmarkLargeRandWrite4K(b *testing.B) {
	v := openLargeBench(b)
	buf := pattern(benchIO, 62)
	r := rand.New(rand.NewPCG(7, 8))
	blocks := v.Size() / benchIO
	b.SetBytes(benchIO)
	for b.Loop() {
		if _, err := v.WriteAt(buf, r.Int64N(blocks)*benchIO); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLargeSeqRead4K reads the large device in order, 4 KiB at a time
// (consecutive blocks share their leaf group, so the cache serves most).
func BenchmarkLargeSeqRead4K(b *testing.B) {
	v := openLargeBench(b)
	buf := make([]byte, benchIO)
	size := v.Size()
	off := int64(0)
	b.SetBytes(benchIO)
	for b.Loop() {
		if _, err := v.ReadAt(buf, off); err != nil {
			b.Fatal(err)
		}
		if off += benchIO; off == size {
			off = 0
		}
	}
}
