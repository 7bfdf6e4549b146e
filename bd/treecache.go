package bd

import (
	"container/list"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"sync"
)

// DefaultTreeCache is the memory a Verity tree may use when
// VerityOptions.TreeCache is 0: 16 MiB, which keeps the whole tree of a
// device of up to 1 GiB in 4 KiB blocks (128 MiB in 512-byte blocks).
const DefaultTreeCache = 16 << 20

// minGroupEntries is the fewest leaf groups the cache holds, whatever the
// budget: enough for a few concurrent readers.
const minGroupEntries = 2

// How Verity keeps the tree in bounded memory.
//
// The levels cut..levels (the "upper" tree) are kept whole in memory,
// computed at open from every leaf on the tree device and checked against
// the trusted root; levels below cut are not kept. Every 2^cut consecutive
// leaves form a group whose subtree ends in one upper node at level cut. A
// group is read from the tree device (its leaves only: stored interior
// nodes are never trusted) when a block in it is read or written, hashed
// up to level cut and compared with the verified upper node; only then are
// its leaves used, and the group (leaves and the interior nodes computed
// from them) is cached. The cache holds the most recently used groups up to
// the budget. When the whole tree fits the budget, cut is 0: the upper
// tree is the whole tree and no group is ever read again after open.
//
// Writes go through to the tree device exactly as before (data first, then
// the changed leaves and each level above them, bottom up, within the
// WriteAt call), so cached groups are never dirty and eviction costs
// nothing. Only after a failed tree write does a group hold state that is
// not on the tree device: such groups are pinned (never evicted), so reads
// keep being verified against the in-memory tree.

// upperBytes is the size of levels cut..levels of a tree with `levels`
// levels.
func upperBytes(levels, cut int) int64 {
	return (int64(2)<<(levels-cut) - 1) * NodeSize
}

// groupNodes is the number of nodes a cached group holds: its 2^cut leaves
// and the interior nodes of levels 1..cut-1 above them.
func groupNodes(cut int) int { return 2<<cut - 2 }

// treeGeometry picks the cut level and the number of cached groups for a
// tree of `levels` levels and a memory budget in bytes. The whole tree is
// kept (cut 0) when it fits; otherwise the upper tree gets at most half the
// budget and the groups the rest. When even that leaves no room for
// minGroupEntries groups (a budget below about 1 KiB per 2^18 data blocks,
// e.g. beyond 32 TiB of 4 KiB blocks with the default), the cut that needs
// the least memory is taken instead: memory then grows with the square
// root of the device.
func treeGeometry(levels int, budget int64) (cut, entries int) {
	if upperBytes(levels, 0) <= budget {
		return 0, 0
	}
	need := func(c int) int64 { return upperBytes(levels, c) + minGroupEntries*int64(groupNodes(c))*NodeSize }
	cut = 1
	for cut < levels && upperBytes(levels, cut) > budget/2 {
		cut++
	}
	if need(cut) > budget {
		for c := 1; c <= levels; c++ {
			if need(c) < need(cut) {
				cut = c
			}
		}
	}
	per := int64(groupNodes(cut)) * NodeSize
	n := max(minGroupEntries, (budget-upperBytes(levels, cut))/per)
	n = min(n, int64(1)<<(levels-cut)) // never more than there are groups
	return cut, int(max(n, minGroupEntries))
}

// nodeMAC computes the tree's HMACs without allocating.
type nodeMAC struct {
	h   hash.Hash
	pre [1 + 2*NodeSize]byte
}

func newNodeMAC(key []byte) *nodeMAC { return &nodeMAC{h: hmac.New(sha256.New, key)} }

// leaf writes HMAC(K, 0x00 || u64le(i) || block) to out.
func (m *nodeMAC) leaf(i int64, block, out []byte) {
	m.pre[0] = tagLeaf
	binary.LittleEndian.PutUint64(m.pre[1:9], uint64(i))
	m.h.Reset()
	m.h.Write(m.pre[:9])
	m.h.Write(block)
	m.h.Sum(out[:0])
}

// interior writes HMAC(K, 0x01 || left || right) to out.
func (m *nodeMAC) interior(left, right, out []byte) {
	m.pre[0] = tagInterior
	copy(m.pre[1:], left[:NodeSize])
	copy(m.pre[1+NodeSize:], right[:NodeSize])
	m.h.Reset()
	m.h.Write(m.pre[:])
	m.h.Sum(out[:0])
}

// hashLevel computes the level above below (which holds an even number of
// nodes) into above.
func (m *nodeMAC) hashLevel(below, above []byte) {
	for j := 0; j < len(above); j += NodeSize {
		m.interior(below[2*j:], below[2*j+NodeSize:], above[j:j+NodeSize])
	}
}

// zeroChain returns the node of an all-padding subtree at every level:
// z[0] is the zero leaf, z[l] = interior(z[l-1], z[l-1]).
func zeroChain(m *nodeMAC, levels int) [][]byte {
	z := make([][]byte, levels+1)
	z[0] = make([]byte, NodeSize)
	for l := 1; l <= levels; l++ {
		z[l] = make([]byte, NodeSize)
		m.interior(z[l-1], z[l-1], z[l])
	}
	return z
}

// parallel calls fn(w, lo, hi) on disjoint ranges covering [0, n), one per
// worker w < maxWorkers (fewer when a worker would get less than minPer
// items), and waits for them.
func parallel(n, minPer, maxWorkers int, fn func(w, lo, hi int)) {
	workers := min(maxWorkers, max(1, n/max(1, minPer)))
	if workers <= 1 {
		fn(0, 0, n)
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := n*w/workers, n*(w+1)/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(w, lo, hi)
		}()
	}
	wg.Wait()
}

// group is one cached group: the verified leaves of 2^cut consecutive data
// blocks (zero past the last block) and the interior nodes above them up
// to level cut-1, level after level (levels 0, 1, …, cut-1).
type group struct {
	idx    int64
	nodes  []byte
	elem   *list.Element
	pinned bool // holds state the tree device may lack: never evicted
}

// groupCache holds the most recently used groups. Lookups and insertions
// are safe for concurrent use; the groups themselves are only changed by
// a writer that excludes every reader (Verity.mu).
type groupCache struct {
	mu    sync.Mutex
	max   int
	byIdx map[int64]*group
	lru   list.List // of *group, most recent first
}

func (c *groupCache) init(max int) {
	c.max = max
	c.byIdx = make(map[int64]*group, max)
	c.lru.Init()
}

// get returns the cached group idx, or nil.
func (c *groupCache) get(idx int64) *group {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.byIdx[idx]
	if g != nil {
		c.lru.MoveToFront(g.elem)
	}
	return g
}

// add caches g unless the group is cached already, and returns the cached
// one. Least recently used groups that are not pinned make room.
func (c *groupCache) add(g *group) *group {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.byIdx[g.idx]; old != nil {
		c.lru.MoveToFront(old.elem)
		return old
	}
	g.elem = c.lru.PushFront(g)
	c.byIdx[g.idx] = g
	for e := c.lru.Back(); len(c.byIdx) > c.max && e != nil; {
		prev := e.Prev()
		if v := e.Value.(*group); !v.pinned {
			c.lru.Remove(e)
			delete(c.byIdx, v.idx)
		}
		e = prev
	}
	return g
}

// pin caches g (replacing a cached copy of the same group) and keeps it
// until the device is dropped.
func (c *groupCache) pin(g *group) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.byIdx[g.idx]; old != nil && old != g {
		c.lru.Remove(old.elem)
		delete(c.byIdx, old.idx)
	}
	g.pinned = true
	if c.byIdx[g.idx] == nil {
		g.elem = c.lru.PushFront(g)
		c.byIdx[g.idx] = g
	}
}

// len returns the number of cached groups.
func (c *groupCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byIdx)
}
