package nbd

import (
	"context"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/sealfs/sealfs/bd"
	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/internal/testutil"
)

// The NBD benchmarks serve a 16 MiB region (the nextfs micro-benchmark) of
// each bd variant over an image file and read it through the protocol:
// whole-export copies with nbdcopy (default and 4 KiB requests) and
// one-at-a-time 4 KiB sequential and random reads with the Go test client.
// bench/nbd.sh turns the results into MB/s and ratios to Std.
const benchSize = 16 << 20

func benchVariants(b *testing.B) []struct {
	name string
	dev  blockdev.Device
} {
	dir := b.TempDir()
	open := func(name string, size int64) *blockdev.File {
		f, err := blockdev.CreateFile(filepath.Join(dir, name), size, &blockdev.FileOptions{BlockSize: 4096})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.WriteAt(pattern(int(size), 1), 0); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		return f
	}
	key := pattern(64, 2)
	mac := pattern(32, 3)
	std, err := bd.NewStd(open("std.img", benchSize), nil)
	if err != nil {
		b.Fatal(err)
	}
	crypt, err := bd.NewCrypt(open("crypt.img", benchSize), key, nil)
	if err != nil {
		b.Fatal(err)
	}
	ts, err := bd.TreeSize(benchSize, 4096)
	if err != nil {
		b.Fatal(err)
	}
	vc, err := bd.FormatVeriCrypt(context.Background(), open("vc.img", benchSize), open("vc.tree", ts), key, mac, nil)
	if err != nil {
		b.Fatal(err)
	}
	return []struct {
		name string
		dev  blockdev.Device
	}{{"Std", std}, {"Crypt", crypt}, {"VeriCrypt", vc}}
}

func BenchmarkNbdcopy(b *testing.B) {
	testutil.RequireTool(b, "nbdcopy")
	for _, v := range benchVariants(b) {
		addr, _ := startServer(b, &Server{Exports: []*Export{{Name: "d", Device: v.dev}}})
		for _, rs := range []int{0, 4096} {
			name := v.name
			if rs != 0 {
				name += "/req4K"
			}
			b.Run(name, func(b *testing.B) {
				b.SetBytes(benchSize)
				for b.Loop() {
					args := []string{"nbd://" + addr + "/d", "null:"}
					if rs != 0 {
						args = append([]string{"--request-size=" + strconv.Itoa(rs)}, args...)
					}
					if out, err := exec.Command("nbdcopy", args...).CombinedOutput(); err != nil {
						b.Fatalf("nbdcopy: %v\n%s", err, out)
					}
				}
			})
		}
	}
}

func BenchmarkNBDRead4K(b *testing.B) {
	for _, v := range benchVariants(b) {
		addr, _ := startServer(b, &Server{Exports: []*Export{{Name: "d", Device: v.dev}}})
		for _, mode := range []string{"Seq", "Rand"} {
			b.Run(v.name+"/"+mode, func(b *testing.B) {
				tc := dial(b, addr)
				tc.open("d")
				rng := rand.New(rand.NewPCG(1, 1))
				b.SetBytes(4096)
				i := 0
				for b.Loop() {
					blk := i % (benchSize / 4096)
					if mode == "Rand" {
						blk = rng.IntN(benchSize / 4096)
					}
					if errno, _ := tc.do(cmdRead, 0, uint64(blk)*4096, 4096, nil); errno != 0 {
						b.Fatalf("errno %d", errno)
					}
					i++
				}
			})
		}
	}
}
