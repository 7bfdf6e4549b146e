package bd

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
)

func TestTreeGeometry(t *testing.T) {
	for _, c := range []struct {
		levels      int
		budget      int64
		cut, groups int
	}{
		{0, 32, 0, 0},                       // one block: the tree is the leaf
		{4, 992, 0, 0},                      // 16 leaves, 31 nodes: fits exactly
		{4, 991, 1, 7},                      // one byte short: groups of 2 leaves
		{4, testTreeCache, 2, 2},            // the test devices of 9..16 blocks
		{6, testTreeCache, 2, 2},            // 33..64 blocks: the least memory
		{18, DefaultTreeCache, 0, 0},        // 1 GiB of 4 KiB blocks: kept whole
		{19, DefaultTreeCache, 2, 43690},    // 2 GiB: groups of 4 leaves
		{24, DefaultTreeCache, 7, 1032},     // 64 GiB: groups of 128 leaves
		{24, 1 << 20, 11, 4},                // 64 GiB in 1 MiB
		{33, DefaultTreeCache, 16, 2},       // 32 TiB: still within 16 MiB
		{40, DefaultTreeCache, 19, 2},       // 4 PiB: the least memory
		{24, DefaultTreeCache * 1024, 0, 0}, // 64 GiB in 16 GiB: kept whole
	} {
		cut, groups := treeGeometry(c.levels, c.budget)
		if cut != c.cut || groups != c.groups {
			t.Errorf("treeGeometry(%d, %d) = %d, %d; want %d, %d", c.levels, c.budget, cut, groups, c.cut, c.groups)
		}
		// What the geometry keeps stays within the budget unless the
		// budget is below the minimum (the upper tree and two groups).
		used := upperBytes(c.levels, cut) + int64(groups*groupNodes(cut))*NodeSize
		least := upperBytes(c.levels, cut) + int64(minGroupEntries*groupNodes(cut))*NodeSize
		if used > c.budget && used > least {
			t.Errorf("treeGeometry(%d, %d) keeps %d bytes", c.levels, c.budget, used)
		}
	}
}

// openCachedOnFaulty formats a Verity device of blocks blocks of 512 bytes
// over a Faulty tree device, with the test cache.
func openCachedOnFaulty(t *testing.T, blocks int) (v *Verity, data *blockdev.Memory, tree *blockdev.Faulty, model []byte) {
	t.Helper()
	const bs = 512
	model = pattern(blocks*bs, 80)
	data = blockdev.NewMemoryFrom(model, 512)
	tree = blockdev.NewFaulty(newTree(t, data.Size(), bs))
	o := &VerityOptions{BlockSize: bs, TreeCache: testTreeCache}
	f, err := FormatVerity(context.Background(), data, tree, testMACKey, o)
	if err != nil {
		t.Fatal(err)
	}
	v, err = OpenVerity(data, tree, testMACKey, f.Root(), o)
	if err != nil {
		t.Fatal(err)
	}
	if v.cut == 0 {
		t.Fatal("test setup: the device keeps its whole tree; want a cut")
	}
	return v, data, tree, model
}

// TestVerityCacheEviction reads and writes a device whose tree cache holds
// far fewer groups than hold data, in random order, and checks every block
// and that the cache stays within its size.
func TestVerityCacheEviction(t *testing.T) {
	const blocks, bs = 250, 512 // the last group is short
	v, _, _, model := openCachedOnFaulty(t, blocks)
	if g := v.dataGroups(); g < 4*int64(v.groups.max) {
		t.Fatalf("test setup: %d groups for a cache of %d", g, v.groups.max)
	}
	r := rand.New(rand.NewPCG(81, 82))
	for i := range 400 {
		b := r.IntN(blocks)
		n := 1 + r.IntN(min(40, blocks-b))
		if i%3 == 0 {
			p := pattern(n*bs, uint64(1000+i))
			if _, err := v.WriteAt(p, int64(b*bs)); err != nil {
				t.Fatalf("write %d blocks at %d: %v", n, b, err)
			}
			copy(model[b*bs:], p)
			continue
		}
		got := make([]byte, n*bs)
		if _, err := v.ReadAt(got, int64(b*bs)); err != nil || !bytes.Equal(got, model[b*bs:(b+n)*bs]) {
			t.Fatalf("read %d blocks at %d: %v (equal %v)", n, b, err, bytes.Equal(got, model[b*bs:(b+n)*bs]))
		}
		if l := v.groups.len(); l > v.groups.max {
			t.Fatalf("cache holds %d groups, its size is %d", l, v.groups.max)
		}
	}
	checkContents(t, v, model)
	if r, err := v.Check(context.Background(), nil); err != nil || r.BadNodes != 0 {
		t.Fatalf("Check = %+v, %v", r, err)
	}
}

// TestVerityTreeAlteredAfterOpen alters a leaf on the tree device after the
// tree was verified at open: the blocks of that leaf's group are refused
// (never the altered leaf trusted), the others read fine, a write into the
// group is refused before anything is written, and a write that covers the
// whole group replaces it.
func TestVerityTreeAlteredAfterOpen(t *testing.T) {
	const blocks, bs = 64, 512
	v, data, tree, model := openCachedOnFaulty(t, blocks)
	const victim = 21
	G := v.groupLeaves()
	lo, hi := victim&^(G-1), victim&^(G-1)+G // the victim's group
	if err := tree.FlipBit(treeHeaderSize+victim*NodeSize+3, 1); err != nil {
		t.Fatal(err)
	}
	for b := int64(0); b < blocks; b++ {
		got, err := readBlock(v, b)
		switch {
		case b >= lo && b < hi:
			if !isAuth(err) || !bytes.Equal(got, make([]byte, bs)) {
				t.Errorf("block %d of the altered group: %v; want ErrAuthentication and a zeroed buffer", b, err)
			}
		case err != nil || !bytes.Equal(got, model[b*bs:(b+1)*bs]):
			t.Errorf("block %d: %v", b, err)
		}
	}
	before := bytes.Clone(data.Bytes())
	if _, err := v.WriteAt(pattern(bs, 83), int64(hi-1)*bs); !isAuth(err) {
		t.Errorf("write into the altered group = %v; want ErrAuthentication", err)
	}
	if !bytes.Equal(data.Bytes(), before) {
		t.Errorf("a refused write changed the data device")
	}
	r, err := v.Check(context.Background(), nil)
	if !isAuth(err) || int64(len(r.BadBlocks)) != G || r.BadBlocks[0] != lo {
		t.Errorf("Check = %+v, %v; want blocks %d..%d bad", r, err, lo, hi-1)
	}
	// A write of the whole group needs none of its old leaves.
	p := pattern(int(G)*bs, 84)
	if _, err := v.WriteAt(p, lo*bs); err != nil {
		t.Fatalf("write of the whole altered group: %v", err)
	}
	copy(model[lo*bs:], p)
	checkContents(t, v, model)
	if err := v.Sync(); err != nil {
		t.Fatal(err)
	}
	d, err := OpenVerity(data, tree, testMACKey, v.Root(), &VerityOptions{BlockSize: bs, TreeCache: testTreeCache})
	if err != nil {
		t.Fatalf("reopen after the rewrite: %v", err)
	}
	checkContents(t, d, model)
}

// TestVerityFailedTreeWrite fails a tree write: the device refuses later
// writes, and reads stay verified against the in-memory tree even for the
// groups whose new leaves never reached the tree device, however many
// other groups pass through the cache.
func TestVerityFailedTreeWrite(t *testing.T) {
	const blocks, bs = 64, 512
	v, _, tree, model := openCachedOnFaulty(t, blocks)
	tree.CutAfter(tree.Writes())
	p := pattern(3*bs, 85)
	if _, err := v.WriteAt(p, 30*bs); err == nil {
		t.Fatal("write with a failing tree device succeeded")
	}
	copy(model[30*bs:], p) // the data device took it
	if _, err := v.WriteAt(p, 0); err == nil {
		t.Error("write after a failed tree write succeeded")
	}
	for range 3 {
		checkContents(t, v, model)
	}
}

// TestVerityFormatTreeCache formats and opens the golden devices with
// several cache sizes: the tree file and root are the same bytes.
func TestVerityFormatTreeCache(t *testing.T) {
	for _, g := range verityGolden {
		for _, cache := range []int64{64, 200, testTreeCache, 4096, 1 << 20} {
			t.Run(name(g.blocks, "x", g.bs, "/cache=", cache), func(t *testing.T) {
				checkGolden(t, g.blocks, g.bs, g.seed, cache, g.treeSHA256, g.root, g.writtenSHA256, g.writtenRoot)
			})
		}
	}
}
