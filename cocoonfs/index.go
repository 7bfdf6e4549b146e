package cocoonfs

import (
	"fmt"
	"slices"
	"sync"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// inodeIndex is the inode B+-tree (spec "Inode index"). Nodes are encrypted
// blocks; every node read is authenticated through the tree first.
//
// An inodeIndex describes one committed state (a commit reloads the image
// and makes a new one), so the nodes it has authenticated and decoded stay
// valid for its lifetime: it keeps up to indexCacheBytes of them, which
// spares a listing of many files an authenticated read of the root and a
// leaf per file.
type inodeIndex struct {
	f              *FS
	rootStart      uint64
	rootAllocs     uint64
	entryLeafStart uint64
	entryLeaf      disk.LeafNode

	mu       sync.Mutex
	rootNode *indexNode
	nodes    map[nodeKey]indexNode // capped at maxNodes; never modified once in
	maxNodes int
}

// nodeKey names a node by where it is and the level its parent expects:
// a hostile image may point at one block from two levels.
type nodeKey struct {
	start uint64
	level uint32
}

// indexCacheBytes is the budget for decoded index nodes, counted by their
// size on the medium.
const indexCacheBytes = 1 << 20

func newInodeIndex(f *FS, rootPtr disk.ExtentPtr, entryLeafStart uint64, entryLeaf disk.LeafNode) (*inodeIndex, error) {
	if rootPtr.IsNil() {
		return nil, corruptf("inode index root (inode 3) has no extent")
	}
	start, n, indirect := rootPtr.Decode()
	if indirect {
		return nil, corruptf("inode index root (inode 3) must be a direct extent")
	}
	maxNodes := max(8, int(indexCacheBytes/f.layout.IndexInternalSize()))
	return &inodeIndex{f: f, rootStart: start, rootAllocs: n, entryLeafStart: entryLeafStart, entryLeaf: entryLeaf,
		nodes: make(map[nodeKey]indexNode), maxNodes: maxNodes}, nil
}

func (x *inodeIndex) cached(k nodeKey) (indexNode, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	n, ok := x.nodes[k]
	return n, ok
}

func (x *inodeIndex) remember(k nodeKey, n indexNode) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.nodes) >= x.maxNodes {
		for old := range x.nodes { // map order is random: evict any
			delete(x.nodes, old)
			break
		}
	}
	x.nodes[k] = n
}

// decodeLeaf decrypts and decodes a leaf node's raw bytes.
func (f *FS) decodeLeaf(raw []byte) (disk.LeafNode, error) {
	pt, err := decryptBlock(f.keys.blockCipher(inoIndexRoot, subdomainData), raw)
	if err != nil {
		return disk.LeafNode{}, err
	}
	n, err := disk.DecodeLeafNode(pt)
	if err != nil {
		return disk.LeafNode{}, fmt.Errorf("cocoonfs: %w", err)
	}
	return n, nil
}

// indexNode is one decoded node: exactly one of leaf and internal is set.
type indexNode struct {
	leaf     *disk.LeafNode
	internal *disk.InternalNode
}

// readNode reads the node at start, expecting a leaf when level == 1.
func (x *inodeIndex) readNode(start uint64, level uint32) (indexNode, error) {
	if start == x.entryLeafStart && level == 1 {
		return indexNode{leaf: &x.entryLeaf}, nil
	}
	k := nodeKey{start, level}
	if n, ok := x.cached(k); ok {
		return n, nil
	}
	n, err := x.loadNode(start, level)
	if err != nil {
		return indexNode{}, err
	}
	x.remember(k, n)
	return n, nil
}

// loadNode reads, authenticates and decodes the node at start.
func (x *inodeIndex) loadNode(start uint64, level uint32) (indexNode, error) {
	f := x.f
	ab := f.layout.AllocBlockSize()
	size := f.layout.IndexInternalSize()
	if level == 1 {
		size = f.layout.IndexLeafSize()
	}
	raw, err := f.authRead(start, size/ab)
	if err != nil {
		return indexNode{}, fmt.Errorf("inode index node at allocation block %d: %w", start, err)
	}
	pt, err := decryptBlock(f.keys.blockCipher(inoIndexRoot, subdomainData), raw)
	if err != nil {
		return indexNode{}, err
	}
	if level == 1 {
		n, err := disk.DecodeLeafNode(pt)
		if err != nil {
			return indexNode{}, fmt.Errorf("cocoonfs: inode index leaf at allocation block %d: %w", start, err)
		}
		return indexNode{leaf: &n}, nil
	}
	n, err := disk.DecodeInternalNode(pt)
	if err != nil {
		return indexNode{}, fmt.Errorf("cocoonfs: inode index node at allocation block %d: %w", start, err)
	}
	if n.Level != level {
		return indexNode{}, corruptf("inode index node at allocation block %d has level %d, its parent expects %d", start, n.Level, level)
	}
	return indexNode{internal: &n}, nil
}

// root reads the root node. A single-node tree's root is the entry leaf;
// otherwise the root is internal and its level says how deep the tree is.
func (x *inodeIndex) root() (indexNode, error) {
	if x.rootStart == x.entryLeafStart {
		return indexNode{leaf: &x.entryLeaf}, nil
	}
	x.mu.Lock()
	cached := x.rootNode
	x.mu.Unlock()
	if cached != nil {
		return *cached, nil
	}
	n, err := x.loadRoot()
	if err != nil {
		return indexNode{}, err
	}
	x.mu.Lock()
	x.rootNode = &n
	x.mu.Unlock()
	return n, nil
}

func (x *inodeIndex) loadRoot() (indexNode, error) {
	f := x.f
	ab := f.layout.AllocBlockSize()
	if x.rootAllocs != f.layout.IndexInternalSize()/ab {
		return indexNode{}, corruptf("inode index root extent of %d allocation blocks is not an internal node", x.rootAllocs)
	}
	raw, err := f.authRead(x.rootStart, x.rootAllocs)
	if err != nil {
		return indexNode{}, fmt.Errorf("inode index root: %w", err)
	}
	pt, err := decryptBlock(f.keys.blockCipher(inoIndexRoot, subdomainData), raw)
	if err != nil {
		return indexNode{}, err
	}
	n, err := disk.DecodeInternalNode(pt)
	if err != nil {
		return indexNode{}, fmt.Errorf("cocoonfs: inode index root: %w", err)
	}
	return indexNode{internal: &n}, nil
}

// lookup finds ino's leaf entry.
func (x *inodeIndex) lookup(ino uint64) (disk.LeafEntry, bool, error) {
	n, err := x.root()
	if err != nil {
		return disk.LeafEntry{}, false, err
	}
	for depth := 0; n.internal != nil; depth++ {
		if depth > 64 {
			return disk.LeafEntry{}, false, corruptf("inode index deeper than 64 levels")
		}
		in := n.internal
		// Entries under Children[i+1] are >= Keys[i].
		i, _ := slices.BinarySearchFunc(in.Keys, ino, func(k, t uint64) int {
			if k <= t {
				return -1
			}
			return 1
		})
		child := in.Children[i]
		if child.IsNil() {
			return disk.LeafEntry{}, false, corruptf("inode index node references a NIL child")
		}
		if n, err = x.readNode(child.Start(), in.Level-1); err != nil {
			return disk.LeafEntry{}, false, err
		}
	}
	i, found := slices.BinarySearchFunc(n.leaf.Entries, ino, func(e disk.LeafEntry, t uint64) int { return cmpU64(e.Inode, t) })
	if !found {
		return disk.LeafEntry{}, false, nil
	}
	return n.leaf.Entries[i], true, nil
}

// walk visits every leaf entry in inode order, and every node's location
// (for Verify's accounting). It checks the tree's ordering and leaf chain.
func (x *inodeIndex) walk(visitEntry func(disk.LeafEntry) error, visitNode func(start, allocs uint64)) error {
	f := x.f
	ab := f.layout.AllocBlockSize()
	n, err := x.root()
	if err != nil {
		return err
	}
	var (
		prevLeafNext *disk.BlockPtr
		lastIno      uint64
		haveIno      bool
	)
	var rec func(n indexNode, start uint64, lo, hi uint64, hasHi bool, depth int) error
	rec = func(n indexNode, start uint64, lo, hi uint64, hasHi bool, depth int) error {
		if depth > 64 {
			return corruptf("inode index deeper than 64 levels")
		}
		if n.leaf != nil {
			if visitNode != nil {
				visitNode(start, f.layout.IndexLeafSize()/ab)
			}
			if prevLeafNext != nil && (prevLeafNext.IsNil() || prevLeafNext.Start() != start) {
				return corruptf("inode index leaf chain does not link to the leaf at allocation block %d", start)
			}
			for _, e := range n.leaf.Entries {
				if e.Inode < lo || hasHi && e.Inode >= hi || haveIno && e.Inode <= lastIno {
					return corruptf("inode index entry %d out of order", e.Inode)
				}
				lastIno, haveIno = e.Inode, true
				if err := visitEntry(e); err != nil {
					return err
				}
			}
			next := n.leaf.Next
			prevLeafNext = &next
			return nil
		}
		in := n.internal
		if visitNode != nil {
			visitNode(start, f.layout.IndexInternalSize()/ab)
		}
		for i, c := range in.Children {
			clo, chi, chasHi := lo, hi, hasHi
			if i > 0 {
				clo = in.Keys[i-1]
			}
			if i < len(in.Keys) {
				chi, chasHi = in.Keys[i], true
			}
			if c.IsNil() {
				return corruptf("inode index node references a NIL child")
			}
			cn, err := x.readNode(c.Start(), in.Level-1)
			if err != nil {
				return err
			}
			if err := rec(cn, c.Start(), clo, chi, chasHi, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := rec(n, x.rootStart, 0, 0, false, 0); err != nil {
		return err
	}
	if prevLeafNext != nil && !prevLeafNext.IsNil() {
		return corruptf("last inode index leaf links to another leaf")
	}
	return nil
}
