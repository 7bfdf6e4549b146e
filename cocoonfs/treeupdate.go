package cocoonfs

import "fmt"

// treeUpdater recomputes the authentication tree nodes above a stream of
// changed data block digests given in increasing index order. It keeps one
// node per level (the path to the current leaf): a node is finished, its
// digest stored in its parent, when the stream moves past it. Memory is the
// changed nodes it returns, never the tree.
//
// Nodes start as their current contents, from load: during a commit the
// committed nodes verified from the root, during a replay the nodes on the
// medium as they are (the rebuilt root is checked against the committed
// root digest afterwards). Unchanged entries are kept as they are.
type treeUpdater struct {
	t *authTree
	// load returns the current contents of the node at pos (level, first
	// leaf firstLeaf) whose digest its parent holds as want (nil for the
	// root). The returned slice is not modified.
	load func(pos uint64, level int, firstLeaf uint64, want []byte) ([]byte, error)

	path  []*pathNode // path[level]; nil above the levels loaded so far
	nodes map[uint64][]byte
	last  uint64 // last data block set, to enforce the order
	any   bool
}

type pathNode struct {
	pos       uint64
	firstLeaf uint64
	node      []byte // a private, modified copy
}

func (t *authTree) newUpdater(load func(pos uint64, level int, firstLeaf uint64, want []byte) ([]byte, error)) *treeUpdater {
	return &treeUpdater{t: t, load: load, path: make([]*pathNode, t.height), nodes: map[uint64][]byte{}}
}

// leafSpan is the number of leaves under a node at level.
func (t *authTree) leafSpan(level int) uint64 {
	s := uint64(1)
	for i := 0; i < level; i++ {
		s *= t.internalEntries
	}
	return s
}

func (u *treeUpdater) open(pos uint64, level int, firstLeaf uint64, want []byte) error {
	cur, err := u.load(pos, level, firstLeaf, want)
	if err != nil {
		return err
	}
	if uint64(len(cur)) != u.t.nodeSize {
		return fmt.Errorf("BUG: authentication tree node %d of %d bytes", pos, len(cur))
	}
	u.path[level] = &pathNode{pos: pos, firstLeaf: firstLeaf, node: append([]byte(nil), cur...)}
	return nil
}

// close finishes the node at level: its digest goes into its parent.
func (u *treeUpdater) close(level int) {
	t := u.t
	n := u.path[level]
	u.nodes[n.pos] = n.node
	u.path[level] = nil
	if level+1 < t.height {
		p := u.path[level+1]
		c := (n.firstLeaf - p.firstLeaf) / t.leafSpan(level)
		copy(p.node[c*uint64(t.nodeDigestLen):], t.nodeDigest(n.node, level, n.firstLeaf*t.leafEntries))
	}
}

// set records the new digest of index-domain data block d.
func (u *treeUpdater) set(d uint64, digest []byte) error {
	t := u.t
	if d >= t.dataBlocks {
		return corruptf("data block %d outside the authenticated range", d)
	}
	if u.any && d <= u.last {
		return fmt.Errorf("BUG: tree update out of order: data block %d after %d", d, u.last)
	}
	if len(digest) != t.leafDigestLen {
		return fmt.Errorf("BUG: %d-byte digest for a %d-byte leaf entry", len(digest), t.leafDigestLen)
	}
	u.last, u.any = d, true
	leaf := d / t.leafEntries
	top := t.height - 1
	if u.path[top] == nil {
		if err := u.open(0, top, 0, nil); err != nil {
			return err
		}
	}
	// From the root down, keep the nodes on the path to leaf and replace
	// the others, finishing the ones left behind bottom up.
	for level := top; level > 0; level-- {
		p := u.path[level]
		span := t.leafSpan(level - 1)
		c := (leaf - p.firstLeaf) / span
		childFirst := p.firstLeaf + c*span
		if cur := u.path[level-1]; cur != nil && cur.firstLeaf == childFirst {
			continue
		}
		for l := 0; l < level; l++ {
			if u.path[l] != nil {
				u.close(l)
			}
		}
		childPos := p.pos + 1 + c*t.fullSubtree(level-1)
		want := p.node[c*uint64(t.nodeDigestLen) : (c+1)*uint64(t.nodeDigestLen)]
		if err := u.open(childPos, level-1, childFirst, want); err != nil {
			return err
		}
	}
	slot := d % t.leafEntries
	copy(u.path[0].node[slot*uint64(t.leafDigestLen):], digest)
	return nil
}

// finish closes the remaining path and returns every changed node by DFS
// position; the root is at position 0. Without any change it returns none.
func (u *treeUpdater) finish() map[uint64][]byte {
	for level := 0; level < u.t.height; level++ {
		if u.path[level] != nil {
			u.close(level)
		}
	}
	return u.nodes
}

// committedNodes loads nodes for a commit: verified from the root.
func (t *authTree) committedNodes(pos uint64, level int, firstLeaf uint64, want []byte) ([]byte, error) {
	if pos == 0 {
		if t.root == nil {
			return nil, fmt.Errorf("BUG: authentication tree root not verified before use")
		}
		return t.root, nil
	}
	return t.node(pos, want, level, firstLeaf*t.leafEntries)
}

// mediumNodes loads nodes for a replay: as stored, unverified.
func (t *authTree) mediumNodes(pos uint64, _ int, _ uint64, _ []byte) ([]byte, error) {
	return t.readNodeRaw(pos)
}
