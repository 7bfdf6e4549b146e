package cocoonfs

import (
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"hash"
	"maps"
	"math/big"
	"runtime"
	"slices"
	"sync"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// The journal (spec "Journal"): a transaction is committed by writing its
// log, whose head extent at a fixed location is written last by the
// fail-safe protocol. The log says which staged IO blocks to copy where and
// which data blocks' digests changed; applying it copies the staged blocks
// and rebuilds the affected authentication tree nodes from scratch.

// uncertainCommitError: writing the journal head failed part way, so the
// transaction may be committed on the medium.
type uncertainCommitError struct{ err error }

func (e *uncertainCommitError) Error() string {
	return "cocoonfs: the commit was interrupted while writing the journal head; reopen the image to learn whether it took effect: " + e.err.Error()
}
func (e *uncertainCommitError) Unwrap() error { return e.err }

// committed is what applying a just-written journal writes: the staged IO
// blocks' contents at their targets and the rebuilt tree nodes. Replay
// would compute the same from the medium; a commit already has them.
type committed struct {
	nodes   map[uint64][]byte
	targets []uint64 // byte offsets
	data    [][]byte
	jl      disk.JournalLog // for the trims after the journal is invalidated
	tail    []disk.Extent   // the log's tail extents
}

// apply writes a committed transaction in place and invalidates its
// journal, the same end state replay reaches.
func (f *FS) apply(c *committed) error {
	w := &writer{f: f}
	for i, off := range c.targets {
		w.at(off, c.data[i])
	}
	for pos, n := range c.nodes {
		off, err := f.tree.nodeOffset(pos)
		if err != nil {
			return err
		}
		w.at(off, n)
	}
	w.sync()
	w.at(f.journalHead.Start*f.layout.AllocBlockSize(), make([]byte, 128))
	w.sync()
	if w.err == nil {
		f.trimAfter(c.jl, c.tail)
	}
	return w.err
}

// freedIOBlocks lists, as IO block ranges, the IO blocks that freed extents
// touch and that are entirely free in the new state.
func freedIOBlocks(freed []disk.Extent, bm bitmapView, ioAllocs uint64) ([]disk.Range, error) {
	blocks := map[uint64]bool{}
	for _, e := range freed {
		for a := e.Start / ioAllocs; a <= (e.Start+e.Len-1)/ioAllocs; a++ {
			blocks[a] = true
		}
	}
	var out []disk.Range
	for _, b := range slices.Sorted(maps.Keys(blocks)) {
		free := true
		for a := b * ioAllocs; a < (b+1)*ioAllocs && free; a++ {
			used, err := isAllocated(bm, a)
			if err != nil {
				return nil, err
			}
			free = !used
		}
		if !free {
			continue
		}
		if n := len(out); n > 0 && out[n-1].Start+out[n-1].Len == b {
			out[n-1].Len++
		} else {
			out = append(out, disk.Range{Start: b, Len: 1})
		}
	}
	return out, nil
}

// trimAfter issues the trims a journal with a trim script asks for once it
// is invalidated: the listed ranges, the staging copies and the log's tail
// extents. Trimming is advisory: errors are ignored, the state is final.
func (f *FS) trimAfter(jl disk.JournalLog, tail []disk.Extent) {
	t, ok := f.dev.(blockdev.Trimmer)
	if !ok || jl.Trim == nil {
		return
	}
	io := f.layout.IOBlockSize()
	ab := f.layout.AllocBlockSize()
	for _, r := range jl.Trim {
		_ = t.Trim(int64(r.Start*io), int64(r.Len*io))
	}
	for _, w := range jl.ApplyWrites {
		if w.Source != w.Target {
			_ = t.Trim(int64(w.Source*io), int64(w.Len*io))
		}
	}
	for _, e := range tail {
		_ = t.Trim(int64(e.Start*ab), int64(e.Len*ab))
	}
}

// mergeWrites joins records whose targets and sources both continue.
func mergeWrites(r []disk.WriteRecord) []disk.WriteRecord {
	var out []disk.WriteRecord
	for _, x := range r {
		if n := len(out); n > 0 && out[n-1].Target+out[n-1].Len == x.Target && out[n-1].Source+out[n-1].Len == x.Source {
			out[n-1].Len += x.Len
			continue
		}
		out = append(out, x)
	}
	return out
}

// takeScratch reserves n blocks, aligned, that are free in both the
// committed and the new state (res holds both as taken): staging copies and
// the log tail must not be anyone's data.
func takeScratch(res *allocator, n, align uint64) (uint64, error) {
	// Next fit: a commit takes many in a row, and what lies before the
	// cursor was taken or too small.
	start, _, ok, err := res.freeRun(res.cursor, n, n, align)
	if err == nil && !ok && res.cursor > 0 {
		start, _, ok, err = res.freeRun(0, n, n, align)
	}
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("cocoonfs: no room for the journal (%d allocation blocks): %w", n, ErrNoSpace)
	}
	res.taken.add(disk.Extent{Start: start, Len: n})
	res.cursor = start + n
	return start, nil
}

// writer sequences device writes and keeps the first error.
type writer struct {
	f   *FS
	err error
}

func (w *writer) at(off uint64, p []byte) {
	if w.err != nil {
		return
	}
	if _, err := w.f.dev.WriteAt(p, int64(off)); err != nil {
		w.err = fmt.Errorf("cocoonfs: write %d bytes at %d: %w", len(p), off, err)
	}
}

func (w *writer) sync() {
	if w.err != nil {
		return
	}
	if err := w.f.dev.Sync(); err != nil {
		w.err = fmt.Errorf("cocoonfs: sync: %w", err)
	}
}

// failSafe writes an integrity-protected extent by the fail-safe protocol:
// invalidate its first device block, barrier, the tail, barrier, the head.
func (w *writer) failSafe(off uint64, p []byte) {
	head := min(len(p), max(w.f.dev.BlockSize(), 128))
	w.at(off, make([]byte, head))
	w.sync()
	if head < len(p) {
		w.at(off+uint64(head), p[head:])
		w.sync()
	}
	w.at(off, p[:head])
	w.sync()
}

// journalChain describes the journal log's chained extents: encrypted and
// inline-authenticated with the (virtual) journal inode's keys, the layout
// as associated data.
func (f *FS) journalChain() *chain {
	ch := f.newChain(inoJournalLog, subdomainData, disk.JournalPlaintextHeaderLen(f.layout), f.readRawExtent)
	ch.mac = func() hash.Hash { return f.keys.hmac(f.algs.preauthHMAC, inoJournalLog, subdomainData, purposePreauth) }
	ch.aad = append(f.layout.Append(nil), 0, 1)
	return ch
}

// bitmapDigestsHMAC authenticates the bitmap fragment digests of a journal.
func (f *FS) bitmapDigestsHMAC(recs []disk.DigestRecord) []byte {
	m := f.keys.hmac(f.algs.preauthHMAC, inoAllocBitmap, subdomainData, purposePreauth)
	m.Write(f.layout.Append(nil))
	m.Write(disk.AppendExtentsList(nil, f.bitmapExtents))
	m.Write(disk.AppendBitmapDigestRecords(nil, recs))
	m.Write([]byte{0, 3, 0, 7})
	return m.Sum(nil)
}

// bitmapDataBlocksFor lists (sorted) the physical data blocks of the bitmap
// file holding the bits of every allocation block under the given leaves.
func (f *FS) bitmapDataBlocksFor(bm *committedBitmap, leaves map[uint64]bool) []uint64 {
	l := f.layout
	dataLog2 := uint(l.AuthTreeDataBlockLog2)
	bmAllocs := l.BitmapBlockSize() / l.AllocBlockSize()
	perWord := bm.wordsPer * 64 // allocation blocks one bitmap block describes
	need := map[uint64]bool{}
	addBlockOf := func(a uint64) {
		if k := a / perWord; k < bm.blocks {
			start := bm.blockStart(k)
			for j := uint64(0); j < bmAllocs; j++ {
				need[(start+j)>>dataLog2] = true
			}
		}
	}
	for li := range leaves {
		lo := li * f.tree.leafEntries
		hi := min((li+1)*f.tree.leafEntries, f.tree.dataBlocks)
		if lo >= hi {
			continue
		}
		// The leaf's data blocks span physical blocks first..last (tree
		// extents between them included: their bits are read too, harmlessly).
		first := f.physicalDataBlock(lo)
		last := f.physicalDataBlock(hi-1) + 1<<dataLog2 - 1
		for a := first / perWord * perWord; a <= last; a += perWord {
			addBlockOf(a)
		}
	}
	return slices.Sorted(maps.Keys(need))
}

// encryptCounter encrypts the update counter (little endian, zero padded,
// CBC with an all-zero IV).
func (f *FS) encryptCounter(v *big.Int) []byte {
	c := f.keys.blockCipher(inoUpdateCounter, subdomainData)
	pt := make([]byte, disk.EncryptedCounterLen(c.BlockSize()))
	be := v.FillBytes(make([]byte, 16))
	for i := range be {
		pt[i] = be[15-i]
	}
	out := make([]byte, len(pt))
	cipher.NewCBCEncrypter(c, make([]byte, c.BlockSize())).CryptBlocks(out, pt)
	return out
}

// entryLeafPreauth is the pre-authentication HMAC of the entry leaf.
func (f *FS) entryLeafPreauth(ciphertext []byte) []byte {
	l := f.layout
	m := f.keys.hmac(f.algs.preauthHMAC, inoIndexRoot, subdomainData, purposePreauth)
	m.Write(ciphertext)
	m.Write(binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, l.Cipher), l.CipherKeyBits))
	m.Write([]byte{0, authSubjectIndexNode})
	return m.Sum(nil)
}

// parallel runs fn(0..n-1) on every core; small jobs (under 64 items a
// core) run inline.
func parallel(n int, fn func(i int)) {
	if n < 128 {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	parallelN(n, fn)
}

// parallelN runs fn(0..n-1), each on its own goroutine when there is more
// than one and more than one core.
func parallelN(n int, fn func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers < 2 {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				fn(i)
			}
		}()
	}
	wg.Wait()
}
