package bd

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// The nextfs micro-benchmark: 4 KiB reads over a 16 MiB region, in order
// and at random, per variant, over an in-memory medium (so the numbers are
// the variants' own cost). Compare MB/s with Std's for the ratio.
const benchRegion, benchIO = 16 << 20, 4096

func benchVariants(b *testing.B) []struct {
	name string
	in   *instance
} {
	init := pattern(benchRegion, 60)
	var out []struct {
		name string
		in   *instance
	}
	for _, v := range variants() {
		if strings.HasSuffix(v.name, "Cached") {
			continue // BenchmarkLarge* measure the tree cache on a device that needs it
		}
		out = append(out, struct {
			name string
			in   *instance
		}{v.name, v.open(b, init, benchIO)})
	}
	return out
}

func BenchmarkSeqRead4K(b *testing.B) {
	for _, v := range benchVariants(b) {
		b.Run(v.name, func(b *testing.B) {
			buf := make([]byte, benchIO)
			b.SetBytes(benchIO)
			off := int64(0)
			for b.Loop() {
				if _, err := v.in.dev.ReadAt(buf, off); err != nil {
					b.Fatal(err)
				}
				if off += benchIO; off == benchRegion {
					off = 0
				}
			}
		})
	}
}

func BenchmarkRandRead4K(b *testing.B) {
	for _, v := range benchVariants(b) {
		b.Run(v.name, func(b *testing.B) {
			buf := make([]byte, benchIO)
			r := rand.New(rand.NewPCG(1, 2))
			b.SetBytes(benchIO)
			for b.Loop() {
				off := int64(r.IntN(benchRegion/benchIO)) * benchIO
				if _, err := v.in.dev.ReadAt(buf, off); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkWrite4K(b *testing.B) {
	for _, v := range benchVariants(b) {
		if v.name == "DmVerity" {
			continue
		}
		b.Run(v.name, func(b *testing.B) {
			buf := pattern(benchIO, 61)
			r := rand.New(rand.NewPCG(3, 4))
			b.SetBytes(benchIO)
			for b.Loop() {
				off := int64(r.IntN(benchRegion/benchIO)) * benchIO
				if _, err := v.in.dev.WriteAt(buf, off); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
