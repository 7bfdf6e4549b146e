package cocoonfs

import (
	"slices"
	"testing"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// TestExtentsListChains: extents lists of every length round-trip through
// chained extents, taking more than one chained extent when one (64
// allocation blocks at most) cannot hold them.
func TestExtentsListChains(t *testing.T) {
	dev := mkfsMem(t, 4<<20, nil)
	f := openRW(t, dev)
	for _, n := range []int{2, 100, 1500, 3000, 9000} {
		tx, err := f.Begin()
		if err != nil {
			t.Fatal(err)
		}
		b := &builder{f: f.shadow(), al: tx.al}
		exts := make([]disk.Extent, n)
		for i := range exts {
			exts[i] = disk.Extent{Start: uint64(i)*5 + 1000, Len: uint64(i%3 + 1)}
		}
		ptr, err := b.extentsPtr(77, exts)
		if err != nil {
			t.Fatalf("%d extents: %v", n, err)
		}
		start, k, indirect := ptr.Decode()
		if !indirect {
			t.Fatalf("%d extents: a direct pointer", n)
		}
		written := contentIndex(slices.Clone(b.writes))
		slices.SortFunc(written, func(x, y region) int { return cmpU64(x.start, y.start) })
		ab := f.layout.AllocBlockSize()
		chained := 0
		ch := f.newChain(77, subdomainExtentsList, 0, func(e disk.Extent) ([]byte, error) {
			chained++
			var out []byte
			for a := e.Start; a < e.Start+e.Len; a++ {
				out = append(out, written.at(a, ab)...)
			}
			return out, nil
		})
		list, err := ch.decode(disk.Extent{Start: start, Len: k})
		if err != nil {
			t.Fatalf("%d extents: decode: %v", n, err)
		}
		got, _, err := disk.DecodeExtentsList(list)
		if err != nil || !slices.Equal(got, exts) {
			t.Fatalf("%d extents: decoded %d (%v)", n, len(got), err)
		}
		if n >= 9000 && chained < 2 {
			t.Errorf("%d extents fit one chained extent?", n)
		}
		t.Logf("%d extents: %d chained extents", n, chained)
		tx.Rollback()
	}
}
