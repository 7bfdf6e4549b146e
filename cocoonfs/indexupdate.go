package cocoonfs

import (
	"fmt"
	"slices"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// Incremental updates of the inode index B+-tree for a transaction:
// inserts split full nodes, deletes borrow from or merge with a sibling at
// the spec's minimum fill levels. Nodes that change are rewritten in place
// (through the journal's staged copies) so the leaf chain and the entry
// leaf's location stay put; nodes created by splits get fresh blocks, nodes
// emptied by merges are freed. Merges always keep the left node, so the
// leftmost leaf (the entry leaf) is never freed.

// mnode is an index node being modified.
type mnode struct {
	start   uint64 // allocation block; fixed for a node that exists on the medium
	fresh   bool   // allocated by this transaction
	level   uint32 // 1 for leaves
	entries []disk.LeafEntry
	next    *mnode        // leaf chain, once known
	nextPtr disk.BlockPtr // leaf chain as read
	keys    []uint64
	kids    []*mnode // loaded children
	kidPtrs []disk.BlockPtr
	dirty   bool
}

type mtree struct {
	f        *FS
	b        *builder
	root     *mnode
	maxLeaf  int
	minLeaf  int
	maxKeys  int
	minKeys  int
	freed    []disk.Extent
	leafSize uint64
	intSize  uint64
}

func (f *FS) newMtree(b *builder) (*mtree, error) {
	l := f.layout
	bs := uint64(f.algs.cipher.BlockSize)
	t := &mtree{f: f, b: b, leafSize: l.IndexLeafSize(), intSize: l.IndexInternalSize()}
	leafB := int((t.leafSize - bs) / bs * bs)
	intB := int((t.intSize - bs) / bs * bs)
	t.maxLeaf, t.minLeaf = disk.MaxLeafEntries(leafB), disk.MinLeafEntries(leafB)
	t.maxKeys, t.minKeys = disk.MaxInternalKeys(intB), disk.MinInternalKeys(intB)
	rn, err := f.index.root()
	if err != nil {
		return nil, err
	}
	t.root = t.wrap(rn, f.index.rootStart)
	return t, nil
}

func (t *mtree) wrap(n indexNode, start uint64) *mnode {
	if n.leaf != nil {
		return &mnode{start: start, level: 1, entries: slices.Clone(n.leaf.Entries), nextPtr: n.leaf.Next}
	}
	return &mnode{start: start, level: n.internal.Level, keys: slices.Clone(n.internal.Keys),
		kidPtrs: slices.Clone(n.internal.Children), kids: make([]*mnode, len(n.internal.Children))}
}

func (t *mtree) kid(n *mnode, i int) (*mnode, error) {
	if n.kids[i] == nil {
		c, err := t.f.index.readNode(n.kidPtrs[i].Start(), n.level-1)
		if err != nil {
			return nil, err
		}
		n.kids[i] = t.wrap(c, n.kidPtrs[i].Start())
	}
	return n.kids[i], nil
}

// childIndex is the child of internal node n that holds ino.
func childIndex(n *mnode, ino uint64) int {
	i, _ := slices.BinarySearchFunc(n.keys, ino, func(k, x uint64) int {
		if k <= x {
			return -1
		}
		return 1
	})
	return i
}

func (t *mtree) newNode(level uint32) (*mnode, error) {
	size := t.intSize
	if level == 1 {
		size = t.leafSize
	}
	e, err := t.b.alloc(size/t.f.layout.AllocBlockSize(), 1)
	if err != nil {
		return nil, err
	}
	return &mnode{start: e.Start, fresh: true, level: level, dirty: true}, nil
}

func (t *mtree) free(n *mnode) {
	size := t.intSize
	if n.level == 1 {
		size = t.leafSize
	}
	t.freed = append(t.freed, disk.Extent{Start: n.start, Len: size / t.f.layout.AllocBlockSize()})
	n.dirty = false
}

// put inserts or replaces an entry.
func (t *mtree) put(e disk.LeafEntry) error {
	right, sep, err := t.insert(t.root, e)
	if err != nil || right == nil {
		return err
	}
	root, err := t.newNode(t.root.level + 1)
	if err != nil {
		return err
	}
	root.keys = []uint64{sep}
	root.kids = []*mnode{t.root, right}
	root.kidPtrs = make([]disk.BlockPtr, 2)
	t.root = root
	return nil
}

// insert adds e under n; a split returns the new right node and its
// separator key.
func (t *mtree) insert(n *mnode, e disk.LeafEntry) (*mnode, uint64, error) {
	if n.level == 1 {
		i, found := slices.BinarySearchFunc(n.entries, e.Inode, func(x disk.LeafEntry, ino uint64) int { return cmpU64(x.Inode, ino) })
		n.dirty = true
		if found {
			n.entries[i] = e
			return nil, 0, nil
		}
		n.entries = slices.Insert(n.entries, i, e)
		if len(n.entries) <= t.maxLeaf {
			return nil, 0, nil
		}
		right, err := t.newNode(1)
		if err != nil {
			return nil, 0, err
		}
		mid := (len(n.entries) + 1) / 2
		right.entries = slices.Clone(n.entries[mid:])
		n.entries = n.entries[:mid:mid]
		t.linkAfter(n, right)
		return right, right.entries[0].Inode, nil
	}
	i := childIndex(n, e.Inode)
	c, err := t.kid(n, i)
	if err != nil {
		return nil, 0, err
	}
	right, sep, err := t.insert(c, e)
	if err != nil || right == nil {
		return nil, 0, err
	}
	n.dirty = true
	n.keys = slices.Insert(n.keys, i, sep)
	n.kids = slices.Insert(n.kids, i+1, right)
	n.kidPtrs = slices.Insert(n.kidPtrs, i+1, 0)
	if len(n.keys) <= t.maxKeys {
		return nil, 0, nil
	}
	r, err := t.newNode(n.level)
	if err != nil {
		return nil, 0, err
	}
	mid := len(n.keys) / 2
	up := n.keys[mid]
	r.keys = slices.Clone(n.keys[mid+1:])
	r.kids = slices.Clone(n.kids[mid+1:])
	r.kidPtrs = slices.Clone(n.kidPtrs[mid+1:])
	n.keys, n.kids, n.kidPtrs = n.keys[:mid:mid], n.kids[:mid+1:mid+1], n.kidPtrs[:mid+1:mid+1]
	return r, up, nil
}

// linkAfter puts right into the leaf chain after n.
func (t *mtree) linkAfter(n, right *mnode) {
	right.next, right.nextPtr = n.next, n.nextPtr
	n.next = right
}

// remove deletes ino, which must exist.
func (t *mtree) remove(ino uint64) error {
	if _, err := t.del(t.root, ino); err != nil {
		return err
	}
	for t.root.level > 1 && len(t.root.keys) == 0 {
		old := t.root
		c, err := t.kid(old, 0)
		if err != nil {
			return err
		}
		t.free(old)
		t.root = c
	}
	return nil
}

// del removes ino under n and reports whether n fell below its minimum.
func (t *mtree) del(n *mnode, ino uint64) (bool, error) {
	if n.level == 1 {
		i, found := slices.BinarySearchFunc(n.entries, ino, func(x disk.LeafEntry, ino uint64) int { return cmpU64(x.Inode, ino) })
		if !found {
			return false, fmt.Errorf("BUG: removing inode %d that the index does not hold", ino)
		}
		n.entries = slices.Delete(n.entries, i, i+1)
		n.dirty = true
		return len(n.entries) < t.minLeaf, nil
	}
	i := childIndex(n, ino)
	c, err := t.kid(n, i)
	if err != nil {
		return false, err
	}
	under, err := t.del(c, ino)
	if err != nil || !under {
		return false, err
	}
	if err := t.rebalance(n, i); err != nil {
		return false, err
	}
	return len(n.keys) < t.minKeys, nil
}

// rebalance fixes child i of n, which fell below its minimum: borrow from a
// sibling that can spare an entry, else merge with one (into the left).
func (t *mtree) rebalance(n *mnode, i int) error {
	c := n.kids[i]
	var left, right *mnode
	var err error
	if i > 0 {
		if left, err = t.kid(n, i-1); err != nil {
			return err
		}
	}
	if i+1 < len(n.kids) {
		if right, err = t.kid(n, i+1); err != nil {
			return err
		}
	}
	n.dirty, c.dirty = true, true
	if c.level == 1 {
		switch {
		case left != nil && len(left.entries) > t.minLeaf:
			last := left.entries[len(left.entries)-1]
			left.entries = left.entries[:len(left.entries)-1]
			c.entries = slices.Insert(c.entries, 0, last)
			n.keys[i-1] = c.entries[0].Inode
			left.dirty = true
		case right != nil && len(right.entries) > t.minLeaf:
			c.entries = append(c.entries, right.entries[0])
			right.entries = slices.Delete(right.entries, 0, 1)
			n.keys[i] = right.entries[0].Inode
			right.dirty = true
		case left != nil:
			left.entries = append(left.entries, c.entries...)
			left.next, left.nextPtr = c.next, c.nextPtr
			left.dirty = true
			t.free(c)
			n.keys = slices.Delete(n.keys, i-1, i)
			n.kids, n.kidPtrs = slices.Delete(n.kids, i, i+1), slices.Delete(n.kidPtrs, i, i+1)
		default:
			c.entries = append(c.entries, right.entries...)
			c.next, c.nextPtr = right.next, right.nextPtr
			t.free(right)
			n.keys = slices.Delete(n.keys, i, i+1)
			n.kids, n.kidPtrs = slices.Delete(n.kids, i+1, i+2), slices.Delete(n.kidPtrs, i+1, i+2)
		}
		return nil
	}
	switch {
	case left != nil && len(left.keys) > t.minKeys:
		c.keys = slices.Insert(c.keys, 0, n.keys[i-1])
		c.kids = slices.Insert(c.kids, 0, left.kids[len(left.kids)-1])
		c.kidPtrs = slices.Insert(c.kidPtrs, 0, left.kidPtrs[len(left.kidPtrs)-1])
		n.keys[i-1] = left.keys[len(left.keys)-1]
		left.keys = left.keys[:len(left.keys)-1]
		left.kids, left.kidPtrs = left.kids[:len(left.kids)-1], left.kidPtrs[:len(left.kidPtrs)-1]
		left.dirty = true
	case right != nil && len(right.keys) > t.minKeys:
		c.keys = append(c.keys, n.keys[i])
		c.kids = append(c.kids, right.kids[0])
		c.kidPtrs = append(c.kidPtrs, right.kidPtrs[0])
		n.keys[i] = right.keys[0]
		right.keys = slices.Delete(right.keys, 0, 1)
		right.kids, right.kidPtrs = slices.Delete(right.kids, 0, 1), slices.Delete(right.kidPtrs, 0, 1)
		right.dirty = true
	case left != nil:
		left.keys = append(append(left.keys, n.keys[i-1]), c.keys...)
		left.kids = append(left.kids, c.kids...)
		left.kidPtrs = append(left.kidPtrs, c.kidPtrs...)
		left.dirty = true
		t.free(c)
		n.keys = slices.Delete(n.keys, i-1, i)
		n.kids, n.kidPtrs = slices.Delete(n.kids, i, i+1), slices.Delete(n.kidPtrs, i, i+1)
	default:
		c.keys = append(append(c.keys, n.keys[i]), right.keys...)
		c.kids = append(c.kids, right.kids...)
		c.kidPtrs = append(c.kidPtrs, right.kidPtrs...)
		t.free(right)
		n.keys = slices.Delete(n.keys, i, i+1)
		n.kids, n.kidPtrs = slices.Delete(n.kids, i+1, i+2), slices.Delete(n.kidPtrs, i+1, i+2)
	}
	return nil
}

// leftmostLeaf is the entry leaf.
func (t *mtree) leftmostLeaf() (*mnode, error) {
	n := t.root
	for n.level > 1 {
		var err error
		if n, err = t.kid(n, 0); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// finish points inode 3 at the root, then encodes every changed node: fresh
// ones become new regions, the rest in-place updates (by allocation block).
func (t *mtree) finish(inPlace map[uint64][]byte) (entryLeaf uint64, err error) {
	leaf, err := t.leftmostLeaf()
	if err != nil {
		return 0, err
	}
	size := t.intSize
	if t.root.level == 1 {
		size = t.leafSize
	}
	rootPtr, err := disk.NewExtentPtr(t.root.start, size/t.f.layout.AllocBlockSize(), false)
	if err != nil {
		return 0, err
	}
	for i := range leaf.entries {
		if leaf.entries[i].Inode == inoIndexRoot && leaf.entries[i].Ptr != rootPtr {
			leaf.entries[i].Ptr = rootPtr
			leaf.dirty = true
		}
	}
	ab := t.f.layout.AllocBlockSize()
	var write func(n *mnode) (disk.BlockPtr, error)
	write = func(n *mnode) (disk.BlockPtr, error) {
		if n.level > 1 {
			for i, k := range n.kids {
				if k == nil {
					continue
				}
				p, err := write(k)
				if err != nil {
					return 0, err
				}
				if n.kidPtrs[i] != p {
					n.kidPtrs[i], n.dirty = p, true
				}
			}
		}
		if n.level == 1 && n.next != nil {
			p, err := disk.NewBlockPtr(n.next.start)
			if err != nil {
				return 0, err
			}
			if n.nextPtr != p {
				n.nextPtr, n.dirty = p, true
			}
		}
		self, err := disk.NewBlockPtr(n.start)
		if err != nil || !n.dirty {
			return self, err
		}
		var blk []byte
		size := t.intSize
		if n.level == 1 {
			size = t.leafSize
			blk, err = t.f.encryptIndexNode(&disk.LeafNode{Next: n.nextPtr, Entries: n.entries}, nil)
		} else {
			blk, err = t.f.encryptIndexNode(nil, &disk.InternalNode{Level: n.level, Children: n.kidPtrs, Keys: n.keys})
		}
		if err != nil {
			return 0, err
		}
		if n.fresh {
			t.b.put(n.start, blk)
		} else {
			for i := uint64(0); i < size/ab; i++ {
				inPlace[n.start+i] = blk[i*ab : (i+1)*ab]
			}
		}
		return self, nil
	}
	if _, err := write(t.root); err != nil {
		return 0, err
	}
	return leaf.start, nil
}
