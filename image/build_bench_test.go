package image

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkBuild builds a 64 MiB tree of 256 files (random data, so every
// chunk is new) into a fresh layout per iteration; SetBytes makes the
// result MB/s of input. Compare with `restic backup` via bench/image.sh.
func BenchmarkBuild(b *testing.B) {
	src := filepath.Join(b.TempDir(), "src")
	rng := rand.New(rand.NewPCG(7, 7))
	total := 0
	for i := range 256 {
		d := filepath.Join(src, fmt.Sprintf("d%02d", i%16))
		os.MkdirAll(d, 0o755)
		buf := make([]byte, 256<<10)
		for j := range buf {
			buf[j] = byte(rng.Uint32())
		}
		total += len(buf)
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%03d", i)), buf, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	for _, compress := range []bool{false, true} {
		b.Run(fmt.Sprintf("compress=%v", compress), func(b *testing.B) {
			b.SetBytes(int64(total))
			for i := 0; i < b.N; i++ {
				oci := filepath.Join(b.TempDir(), fmt.Sprint(i))
				if _, err := Build(context.Background(), src, oci, "t", BuildOptions{Compress: compress}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
