package blockdev

import (
	"path/filepath"
	"testing"
)

// The benchmarks measure the per-call overhead of the seam with 4 KiB IO,
// the unit formats use most; they cycle through 256 blocks so the File
// numbers reflect the page cache rather than one hot page.
const benchIO, benchBlocks = 4096, 256

func benchDevices(b *testing.B) []struct {
	name string
	dev  Device
} {
	path := filepath.Join(b.TempDir(), "bench.img")
	f, err := CreateFile(path, benchIO*benchBlocks, &FileOptions{BlockSize: benchIO})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return []struct {
		name string
		dev  Device
	}{
		{"Memory", NewMemory(benchIO*benchBlocks, benchIO)},
		{"File", f},
	}
}

func BenchmarkReadAt4K(b *testing.B) {
	for _, d := range benchDevices(b) {
		b.Run(d.name, func(b *testing.B) {
			buf := make([]byte, benchIO)
			b.SetBytes(benchIO)
			for i := 0; b.Loop(); i++ {
				if _, err := d.dev.ReadAt(buf, int64(i%benchBlocks)*benchIO); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkWriteAt4K(b *testing.B) {
	for _, d := range benchDevices(b) {
		b.Run(d.name, func(b *testing.B) {
			buf := pattern(benchIO, 1)
			b.SetBytes(benchIO)
			for i := 0; b.Loop(); i++ {
				if _, err := d.dev.WriteAt(buf, int64(i%benchBlocks)*benchIO); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
