package cocoonfs

import (
	"fmt"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
)

func benchImage(b *testing.B, size int64) *FS {
	b.Helper()
	dev := blockdev.NewMemory(size, 512)
	if _, err := Mkfs(dev, txKey, &MkfsOptions{NoRandomizeUnallocated: true}); err != nil {
		b.Fatal(err)
	}
	f, err := Open(dev, txKey, &Options{ReadWrite: true})
	if err != nil {
		b.Fatal(err)
	}
	return f
}

// BenchmarkTxSmallFiles writes 200 files of 4 KiB, one per transaction and
// all in one transaction; MB/s counts file bytes, tx/s transactions.
func BenchmarkTxSmallFiles(b *testing.B) {
	data := make([]byte, 4096)
	for _, perTx := range []int{1, 200} {
		b.Run(fmt.Sprintf("%d-per-tx", perTx), func(b *testing.B) {
			b.SetBytes(200 * 4096)
			txs := 0
			for b.Loop() {
				b.StopTimer()
				f := benchImage(b, 8<<20)
				b.StartTimer()
				for i := 0; i < 200; i += perTx {
					tx, _ := f.Begin()
					for j := i; j < i+perTx; j++ {
						tx.WriteFile(uint64(100+j), data, 0)
					}
					if err := tx.Commit(b.Context()); err != nil {
						b.Fatal(err)
					}
					txs++
				}
			}
			b.ReportMetric(float64(txs)/b.Elapsed().Seconds(), "tx/s")
		})
	}
}

// BenchmarkTxLargeFile writes one 16 MiB file in one transaction.
func BenchmarkTxLargeFile(b *testing.B) {
	data := make([]byte, 16<<20)
	for i := range data {
		data[i] = byte(i)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		b.StopTimer()
		f := benchImage(b, 24<<20)
		b.StartTimer()
		tx, _ := f.Begin()
		tx.WriteFile(42, data, 0)
		if err := tx.Commit(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkListSizes opens an image of 200 files of 4 KiB and stats each,
// as `sealfs ls` does: the index nodes are read once, then each file costs
// its last data block.
func BenchmarkListSizes(b *testing.B) {
	f := benchImage(b, 8<<20)
	tx, _ := f.Begin()
	for i := range 200 {
		if err := tx.WriteFile(uint64(100+i), make([]byte, 4096), 0); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(b.Context()); err != nil {
		b.Fatal(err)
	}
	dev := f.dev
	f.Close()
	for b.Loop() {
		g, err := Open(dev, txKey, nil)
		if err != nil {
			b.Fatal(err)
		}
		for ino, err := range g.Inodes() {
			if err != nil {
				b.Fatal(err)
			}
			if _, err := g.Stat(ino.Ino); err != nil {
				b.Fatal(err)
			}
		}
		g.Close()
	}
}
