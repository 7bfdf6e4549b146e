package cocoonfs

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// checkIndexInvariants walks the inode index and checks the B+-tree rules:
// every node but the root at or above its minimum fill, an internal root
// with at least two children, all leaves at the same depth, keys in order
// within the separators, and the leaf chain linking the leaves in order.
func checkIndexInvariants(f *FS) (entries int, err error) {
	x := f.index
	l := f.layout
	bs := uint64(f.algs.cipher.BlockSize)
	leafB := int((l.IndexLeafSize() - bs) / bs * bs)
	intB := int((l.IndexInternalSize() - bs) / bs * bs)
	root, err := x.root()
	if err != nil {
		return 0, err
	}
	var leaves []uint64
	var nexts []disk.BlockPtr
	leafDepth := -1
	var rec func(n indexNode, start uint64, depth int, isRoot bool) error
	rec = func(n indexNode, start uint64, depth int, isRoot bool) error {
		if n.leaf != nil {
			if leafDepth < 0 {
				leafDepth = depth
			} else if depth != leafDepth {
				return fmt.Errorf("leaf at depth %d, others at %d", depth, leafDepth)
			}
			if !isRoot && len(n.leaf.Entries) < disk.MinLeafEntries(leafB) {
				return fmt.Errorf("leaf at %d holds %d entries, minimum %d", start, len(n.leaf.Entries), disk.MinLeafEntries(leafB))
			}
			entries += len(n.leaf.Entries)
			leaves = append(leaves, start)
			nexts = append(nexts, n.leaf.Next)
			return nil
		}
		in := n.internal
		if isRoot && len(in.Children) < 2 {
			return fmt.Errorf("internal root with %d children", len(in.Children))
		}
		if !isRoot && len(in.Keys) < disk.MinInternalKeys(intB) {
			return fmt.Errorf("internal node at %d holds %d keys, minimum %d", start, len(in.Keys), disk.MinInternalKeys(intB))
		}
		for _, c := range in.Children {
			cn, err := x.readNode(c.Start(), in.Level-1)
			if err != nil {
				return err
			}
			if err := rec(cn, c.Start(), depth+1, false); err != nil {
				return err
			}
		}
		return nil
	}
	if err := rec(root, x.rootStart, 0, true); err != nil {
		return 0, err
	}
	if leaves[0] != x.entryLeafStart {
		return 0, fmt.Errorf("leftmost leaf at %d is not the entry leaf at %d", leaves[0], x.entryLeafStart)
	}
	for i := range leaves {
		want := disk.NilBlockPtr
		if i+1 < len(leaves) {
			want, _ = disk.NewBlockPtr(leaves[i+1])
		}
		if nexts[i] != want {
			return 0, fmt.Errorf("leaf %d links to %#x, want %#x", i, uint64(nexts[i]), uint64(want))
		}
	}
	// Ordering and separators are checked by walk.
	return entries, x.walk(func(disk.LeafEntry) error { return nil }, nil)
}

// TestIndexStress grows the index to thousands of inodes and shrinks it
// again with random inserts and deletes, checking the invariants after
// every transaction.
func TestIndexStress(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	dev := mkfsMem(t, 8<<20, nil)
	f := openRW(t, dev)
	live := map[uint64]bool{}
	peak := 0
	target := 2500
	rounds := 40
	if longTests {
		target, rounds = 6000, 120
	}
	for round := 0; round < rounds; round++ {
		tx, _ := f.Begin()
		grow := round < rounds/2
		for k := 0; k < target/(rounds/4); k++ {
			ino := FirstUserInode + uint64(r.IntN(1<<40))
			if grow || len(live) == 0 || r.IntN(4) == 0 {
				if err := tx.WriteFile(ino, nil, 0); err != nil {
					t.Fatal(err)
				}
				live[ino] = true
				continue
			}
			for victim := range live { // map order is random
				if err := tx.Remove(victim); err != nil {
					t.Fatal(err)
				}
				delete(live, victim)
				break
			}
		}
		if err := tx.Commit(t.Context()); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		n, err := checkIndexInvariants(f)
		if err != nil {
			t.Fatalf("round %d (%d inodes): %v", round, len(live), err)
		}
		peak = max(peak, len(live))
		if n != len(live)+3 {
			t.Fatalf("round %d: index holds %d entries, want %d", round, n, len(live)+3)
		}
	}
	if rep, err := f.Verify(t.Context(), nil); err != nil {
		t.Fatalf("Verify: %v %v", err, rep.Problems)
	}
	t.Logf("%d transactions, peak %d inodes, ending with %d; invariants held after each", rounds, peak, len(live))
}

// TestIndexNodeCache looks every inode up through a node cache far smaller
// than the index, so nodes are evicted and read again, and checks that a
// commit's new index does not answer from the old one's nodes.
func TestIndexNodeCache(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	f := openRW(t, mkfsMem(t, 8<<20, nil))
	var inos []uint64
	tx, _ := f.Begin()
	for range 1500 {
		ino := FirstUserInode + uint64(r.IntN(1<<40))
		if err := tx.WriteFile(ino, nil, 0); err != nil {
			t.Fatal(err)
		}
		inos = append(inos, ino)
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	f.index.maxNodes = 3
	for range 2 {
		for _, i := range r.Perm(len(inos)) {
			if _, ok, err := f.index.lookup(inos[i]); err != nil || !ok {
				t.Fatalf("lookup(%d) = %v, %v", inos[i], ok, err)
			}
			if n := len(f.index.nodes); n > 3 {
				t.Fatalf("%d nodes cached, the cap is 3", n)
			}
		}
	}
	tx, _ = f.Begin()
	for _, ino := range inos[:500] {
		if err := tx.Remove(ino); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	for k, ino := range inos {
		if _, ok, err := f.index.lookup(ino); err != nil || ok != (k >= 500) {
			t.Fatalf("after removing the first 500: lookup(%d) = %v, %v", ino, ok, err)
		}
	}
}
