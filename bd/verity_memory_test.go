package bd

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/sealfs/sealfs/internal/testutil"

	"github.com/sealfs/sealfs/blockdev"
)

// TestVerityBoundedMemory formats and opens a large sparse device whose
// tree is far bigger than the memory bound, reads and writes blocks across
// it and syncs, and checks that all of that allocated less than the bound.
// The regular run uses a 512 MiB device of 512-byte blocks (a 64 MiB tree)
// with a 2 MiB tree cache (128 MiB and 1 MiB under the race detector); SEALFS_LONG=1 adds the 64 GiB device of 4 KiB
// blocks (a 1 GiB tree) with the default cache, which formatting must hash
// in full (the format binds every leaf to its block number, so no two
// blocks share a leaf even when all are zero): about a minute.
func TestVerityBoundedMemory(t *testing.T) {
	cases := []struct {
		name  string
		size  int64
		bs    int
		cache int64
		bound uint64
	}{
		{"512MiB-bs512", 512 << 20, 512, 2 << 20, 12 << 20},
	}
	if raceEnabled {
		cases[0] = struct {
			name  string
			size  int64
			bs    int
			cache int64
			bound uint64
		}{"128MiB-bs512", 128 << 20, 512, 1 << 20, 6 << 20}
	}
	if os.Getenv("SEALFS_LONG") != "" {
		cases = append(cases, struct {
			name  string
			size  int64
			bs    int
			cache int64
			bound uint64
		}{"64GiB-bs4096", 64 << 30, 4096, 0, 64 << 20})
	} else {
		t.Log("SEALFS_LONG=1 also runs a 64 GiB device")
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			data, err := blockdev.CreateFile(filepath.Join(dir, "data"), c.size, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer data.Close()
			ts := must(TreeSize(c.size, c.bs))
			tree, err := blockdev.CreateFile(filepath.Join(dir, "tree"), ts, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tree.Close()
			o := &VerityOptions{BlockSize: c.bs, TreeCache: c.cache}
			blocks := c.size / int64(c.bs)
			// Blocks spread over the device: ends, group edges, the middle.
			touched := []int64{0, 1, 127, 128, blocks / 3, blocks / 2, blocks/2 + 1, blocks - 2, blocks - 1}
			var root []byte
			allocated, peak := testutil.MemoryOf(func() {
				f, err := FormatVerity(context.Background(), data, tree, testMACKey, o)
				if err != nil {
					t.Fatal(err)
				}
				v, err := OpenVerity(data, tree, testMACKey, f.Root(), o)
				if err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, c.bs)
				for i, b := range touched {
					if _, err := v.ReadAt(buf, b*int64(c.bs)); err != nil || !bytes.Equal(buf, make([]byte, c.bs)) {
						t.Fatalf("read of zero block %d: %v", b, err)
					}
					if _, err := v.WriteAt(pattern(c.bs, uint64(300+i)), b*int64(c.bs)); err != nil {
						t.Fatalf("write of block %d: %v", b, err)
					}
				}
				if err := v.Sync(); err != nil {
					t.Fatal(err)
				}
				root = v.Root()
			})
			t.Logf("tree %d MiB; allocated %.1f MiB in all, heap grew by at most %.1f MiB (bound %d MiB)",
				ts>>20, float64(allocated)/(1<<20), float64(peak)/(1<<20), c.bound>>20)
			if allocated > c.bound || peak > c.bound {
				t.Errorf("allocated %d bytes, heap grew by %d; want both under %d", allocated, peak, c.bound)
			}
			if uint64(ts) < 2*c.bound {
				t.Fatalf("test setup: the tree (%d bytes) is not far bigger than the bound", ts)
			}
			// What was written is there after a reopen with the new root.
			v, err := OpenVerity(data, tree, testMACKey, root, o)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, c.bs)
			for i, b := range touched {
				if _, err := v.ReadAt(buf, b*int64(c.bs)); err != nil || !bytes.Equal(buf, pattern(c.bs, uint64(300+i))) {
					t.Errorf("block %d after reopen: %v", b, err)
				}
			}
		})
	}
}
