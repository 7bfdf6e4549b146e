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

// writeJournal finishes the plan (bitmap, tree, mutable header), writes all
// new contents, the staged copies and the journal log, and commits.
func (f *FS) writeJournal(p *txPlan) (*committed, error) {
	l := f.layout
	ab := l.AllocBlockSize()
	b, nf := p.b, p.nf
	dataLog2 := uint(l.AuthTreeDataBlockLog2)
	per := uint64(1) << dataLog2

	// New contents: b.writes (sorted regions) plus blocks updated in place.
	inPlaceData := map[uint64][]byte{}
	var inPlace []uint64 // allocation blocks updated in place
	for a, c := range p.inPlace {
		inPlaceData[a] = c
		inPlace = append(inPlace, a)
	}
	newContent := func(a uint64) []byte {
		if c, ok := inPlaceData[a]; ok {
			return c
		}
		return b.contentAt(a)
	}
	// Bitmap blocks whose words changed are encrypted anew.
	bmBlock := l.BitmapBlockSize()
	bmAllocs := bmBlock / ab
	wordsPer := (bmBlock - uint64(f.algs.cipher.BlockSize)) / 8
	c := f.keys.blockCipher(inoAllocBitmap, subdomainData)
	var bmBlocks []uint64 // physical start of every bitmap block, in file order
	for _, e := range f.bitmapExtents {
		for a := e.Start; a < e.Start+e.Len; a += bmAllocs {
			bmBlocks = append(bmBlocks, a)
		}
	}
	// Only words under this transaction's allocations and releases change.
	touchedBlocks := map[uint64]bool{}
	for _, set := range []*extentSet{&b.al.taken, &p.freeSet} {
		for _, e := range set.ext {
			for w := e.Start / 64; w <= (e.Start+e.Len-1)/64; w++ {
				touchedBlocks[w/wordsPer] = true
			}
		}
	}
	for _, i := range slices.Sorted(maps.Keys(touchedBlocks)) {
		if i >= uint64(len(bmBlocks)) {
			continue
		}
		start := bmBlocks[i]
		changed := false
		pt := make([]byte, 0, wordsPer*8)
		for w := i * wordsPer; w < (i+1)*wordsPer; w++ {
			oldW, err := f.bitmap.word(w)
			if err != nil {
				return nil, err
			}
			newW, err := nf.bitmap.word(w)
			if err != nil {
				return nil, err
			}
			changed = changed || oldW != newW
			pt = binary.LittleEndian.AppendUint64(pt, newW)
		}
		if !changed {
			continue
		}
		blk, err := encryptBlock(c, pt, int(bmBlock))
		if err != nil {
			return nil, err
		}
		for j := uint64(0); j < bmAllocs; j++ {
			inPlaceData[start+j] = blk[j*ab : (j+1)*ab]
			inPlace = append(inPlace, start+j)
		}
	}

	// Data blocks whose digest changes: new contents or a changed bit,
	// except in blocks that are never digested. Kept as a sorted slice: a
	// large file changes tens of thousands of them.
	var changed []uint64
	markRange := func(a, n uint64) {
		for x := a; x < a+n; x++ {
			if !inExtents(x, f.excluded) {
				if db := x >> dataLog2; len(changed) == 0 || changed[len(changed)-1] != db {
					changed = append(changed, db)
				}
			}
		}
	}
	for _, r := range b.writes {
		markRange(r.start, uint64(len(r.data))/ab)
	}
	for a := range inPlaceData {
		markRange(a, 1)
	}
	// Released blocks change their data blocks' bitmap words (new
	// allocations are in b.writes already).
	for _, e := range p.freeSet.ext {
		markRange(e.Start, e.Len)
	}
	slices.Sort(changed)
	changed = slices.Compact(changed)

	// New contents of any block: the overlay, else the committed contents,
	// authenticated through the committed tree when they are digested.
	authCache := map[uint64][]byte{}
	content := func(a uint64) ([]byte, error) {
		if c := newContent(a); c != nil {
			return c, nil
		}
		allocated, err := isAllocated(f.bitmap, a)
		if err != nil {
			return nil, err
		}
		if !allocated || inExtents(a, f.excluded) {
			return f.readRaw(a*ab, ab)
		}
		db := a >> dataLog2 << dataLog2
		blk, ok := authCache[db]
		if !ok {
			var err error
			if blk, err = f.authRead(db, min(per, f.imageAllocBlocks-db)); err != nil {
				return nil, err
			}
			authCache[db] = blk
		}
		off := (a - db) * ab
		return blk[off : off+ab], nil
	}
	dataBlock := func(p0 uint64) ([]byte, uint64, error) {
		a := p0 << dataLog2
		cnt := min(per, f.imageAllocBlocks-a)
		if whole := b.regionSpan(a, cnt); whole != nil && !slices.ContainsFunc(inPlace, func(x uint64) bool { return x >= a && x < a+cnt }) {
			return whole, cnt, nil // one new region covers it: no copy
		}
		blk := make([]byte, 0, cnt*ab)
		for i := uint64(0); i < cnt; i++ {
			c, err := content(a + i)
			if err != nil {
				return nil, 0, err
			}
			blk = append(blk, c...)
		}
		return blk, cnt, nil
	}
	changedD := make([]uint64, len(changed)) // index-domain numbers, also sorted
	digests := make([][]byte, len(changed))
	// Assemble the blocks (which may read and authenticate committed
	// contents) in order, then HMAC them on every core.
	blocks := make([][]byte, len(changed))
	words := make([]uint64, len(changed))
	for i, pdb := range changed {
		blk, cnt, err := dataBlock(pdb)
		if err != nil {
			return nil, err
		}
		a := pdb << dataLog2
		d, ok := f.tree.domainIndex(a)
		if !ok {
			return nil, fmt.Errorf("BUG: transaction changed authentication tree block %d", a)
		}
		word, err := nf.digestBits(a, cnt)
		if err != nil {
			return nil, err
		}
		changedD[i], blocks[i], words[i] = d, blk, word
	}
	parallel(len(changed), func(i int) { digests[i] = f.tree.dataDigest(blocks[i], words[i], changedD[i]) })

	// The tree: rebuild the affected leaves and their ancestors, reusing the
	// committed (verified) digests of everything else.
	affected := map[uint64]bool{}
	for _, d := range changedD {
		if li := d / f.tree.leafEntries; !affected[li] {
			affected[li] = true
			if _, err := f.tree.leafEntry(d); err != nil { // verifies the committed path
				return nil, err
			}
		}
	}
	nodes, err := f.tree.rebuild(affected,
		func(d uint64) ([]byte, error) {
			if i, ok := slices.BinarySearch(changedD, d); ok {
				return digests[i], nil
			}
			return f.tree.leafEntry(d)
		},
		func(_ uint64, _ int, _ uint64, parentPos, slot uint64) ([]byte, error) {
			f.tree.mu.Lock()
			parent := f.tree.verified[parentPos]
			f.tree.mu.Unlock()
			return parent[slot*uint64(f.tree.nodeDigestLen) : (slot+1)*uint64(f.tree.nodeDigestLen)], nil
		})
	if err != nil {
		return nil, err
	}

	// The new mutable header: next counter value, new entry leaf, root.
	nf.counter = new(big.Int).Add(f.counter, big.NewInt(1))
	nf.counter.And(nf.counter, new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 128), big.NewInt(1)))
	nf.header.EncryptedCounter = f.encryptCounter(nf.counter)
	nf.header.RootHMAC = f.tree.rootHMAC(nodes[0], nf.header.EncryptedCounter, nf.imageContext())
	var leaf []byte
	for a := nf.header.EntryLeaf.Start(); a < nf.header.EntryLeaf.Start()+l.IndexLeafSize()/ab; a++ {
		c, err := content(a)
		if err != nil {
			return nil, err
		}
		leaf = append(leaf, c...)
	}
	nf.header.EntryLeafPreauthHMAC = f.entryLeafPreauth(leaf)
	mh, err := disk.EncodeMutableHeader(nf.header, l)
	if err != nil {
		return nil, err
	}
	sh := disk.StaticHeader{Layout: l, Salt: f.salt}
	mhStart := disk.MutableHeaderOffset(sh) / ab
	for i := uint64(0); i < uint64(len(mh))/ab; i++ {
		inPlaceData[mhStart+i] = mh[i*ab : (i+1)*ab]
		inPlace = append(inPlace, mhStart+i)
	}

	// Stage every IO block updated in place, with the new contents of all
	// its allocation blocks.
	ioAllocs := l.IOBlockSize() / ab
	targets := map[uint64]bool{}
	for _, a := range inPlace {
		targets[a/ioAllocs] = true
	}
	var records []disk.WriteRecord
	var stagedData [][]byte
	res := &allocator{total: f.imageAllocBlocks, base: f.bitmap, taken: extentSet{ext: slices.Clone(b.al.taken.ext)}}
	for _, t := range slices.Sorted(maps.Keys(targets)) {
		buf := make([]byte, 0, ioAllocs*ab)
		for a := t * ioAllocs; a < (t+1)*ioAllocs; a++ {
			c, err := content(a)
			if err != nil {
				return nil, err
			}
			buf = append(buf, c...)
		}
		src, err := takeScratch(res, ioAllocs, ioAllocs)
		if err != nil {
			return nil, err
		}
		records = append(records, disk.WriteRecord{Target: t, Source: src / ioAllocs, Len: 1})
		stagedData = append(stagedData, buf)
	}

	// Disguised staging copies go to the medium; the plain ones are kept for
	// applying the commit.
	stagedOnDisk := stagedData
	var disguiseField *disk.StagingDisguise
	if f.disguiseStaging {
		g, d, err := f.freshDisguise()
		if err != nil {
			return nil, err
		}
		stagedOnDisk = make([][]byte, len(stagedData))
		for i, r := range records {
			stagedOnDisk[i] = slices.Clone(stagedData[i])
			g.transform(true, stagedOnDisk[i], r.Target*ioAllocs, r.Source*ioAllocs, ab)
		}
		disguiseField = d
	}

	// The journal log.
	jl := disk.JournalLog{
		Disguise:        disguiseField,
		AuthTreeExtents: f.treeExtents,
		BitmapExtents:   f.bitmapExtents,
		ApplyWrites:     mergeWrites(records),
	}
	for _, pdb := range changed {
		if n := len(jl.AuthTreeUpdates); n > 0 && jl.AuthTreeUpdates[n-1].Start+jl.AuthTreeUpdates[n-1].Len == pdb {
			jl.AuthTreeUpdates[n-1].Len++
		} else {
			jl.AuthTreeUpdates = append(jl.AuthTreeUpdates, disk.Range{Start: pdb, Len: 1})
		}
	}
	// Digests of the bitmap's data blocks that describe the affected leaves'
	// ranges, so a replay can authenticate the bitmap fragments it needs.
	for _, pdb := range f.bitmapDataBlocksFor(affected, bmBlocks, wordsPer) {
		blk, cnt, err := dataBlock(pdb)
		if err != nil {
			return nil, err
		}
		d, _ := f.tree.domainIndex(pdb << dataLog2)
		word, err := nf.digestBits(pdb<<dataLog2, cnt)
		if err != nil {
			return nil, err
		}
		jl.BitmapDigests = append(jl.BitmapDigests, disk.DigestRecord{Block: pdb, Digest: f.tree.dataDigest(blk, word, d)})
	}
	jl.BitmapDigestsHMAC = f.bitmapDigestsHMAC(jl.BitmapDigests)
	if f.trim {
		if jl.Trim, err = freedIOBlocks(p.freed, nf.bitmap, ioAllocs); err != nil {
			return nil, err
		}
	}
	payload := disk.AppendJournalLog(nil, jl)

	ch := f.journalChain()
	headLen := f.journalHead.Len * ab
	extents := []disk.Extent{f.journalHead}
	capacity := ch.capacity(int(headLen), true)
	for capacity < len(payload)+1 {
		n := min(uint64(disk.MaxExtentAllocBlocks)/ioAllocs*ioAllocs, (uint64(len(payload)+1-capacity)+2*ab+ab-1)/ab)
		n = (n + ioAllocs - 1) / ioAllocs * ioAllocs
		start, err := takeScratch(res, n, ioAllocs)
		if err != nil {
			return nil, err
		}
		extents = append(extents, disk.Extent{Start: start, Len: n})
		capacity += ch.capacity(int(n*ab), false)
	}
	bufs := make([][]byte, len(extents))
	for i, e := range extents {
		bufs[i] = make([]byte, e.Len*ab)
	}
	hl := disk.JournalPlaintextHeaderLen(l)
	copy(bufs[0], "CCFSJRNL")
	nf.header.AuxHeads[0].Append(bufs[0][hl-16 : hl-16])
	nf.header.AuxHeads[1].Append(bufs[0][hl-8 : hl-8])
	if err := ch.encode(payload, extents, bufs); err != nil {
		return nil, err
	}
	if err := disk.EncodeJournalLogHeadPlaintext(bufs[0], l, nf.header.AuxHeads); err != nil {
		return nil, err
	}

	// Write: new contents, staged copies, log tail; barrier; log head.
	w := &writer{f: f}
	for _, r := range b.writes {
		w.at(r.start*ab, r.data)
	}
	for i, r := range records {
		w.at(r.Source*ioAllocs*ab, stagedOnDisk[i])
	}
	for i := 1; i < len(extents); i++ {
		w.at(extents[i].Start*ab, bufs[i])
	}
	w.sync()
	if w.err != nil {
		return nil, w.err // nothing committed: the image is unchanged
	}
	w.failSafe(f.journalHead.Start*ab, bufs[0])
	if w.err != nil {
		// The head may or may not have become valid: only reopening (and
		// replaying, if it did) tells.
		return nil, &uncertainCommitError{w.err}
	}
	done := &committed{nodes: nodes, jl: jl, tail: extents[1:]}
	for i, r := range records {
		done.targets = append(done.targets, r.Target*ioAllocs*ab)
		done.data = append(done.data, stagedData[i])
	}
	return done, nil
}

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
	start, _, ok, err := res.freeRun(0, n, n, align)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("cocoonfs: no room for the journal (%d allocation blocks): %w", n, ErrNoSpace)
	}
	res.taken.add(disk.Extent{Start: start, Len: n})
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
func (f *FS) bitmapDataBlocksFor(leaves map[uint64]bool, bmBlocks []uint64, wordsPer uint64) []uint64 {
	l := f.layout
	dataLog2 := uint(l.AuthTreeDataBlockLog2)
	bmAllocs := l.BitmapBlockSize() / l.AllocBlockSize()
	need := map[uint64]bool{}
	for li := range leaves {
		for d := li * f.tree.leafEntries; d < (li+1)*f.tree.leafEntries && d < f.tree.dataBlocks; d++ {
			a := f.physicalDataBlock(d)
			for x := a; x < a+1<<dataLog2 && x < f.imageAllocBlocks; x += 64 {
				blk := (x / 64) / wordsPer
				if blk < uint64(len(bmBlocks)) {
					for j := uint64(0); j < bmAllocs; j++ {
						need[(bmBlocks[blk]+j)>>dataLog2] = true
					}
				}
			}
			last := a + 1<<dataLog2 - 1
			if blk := (last / 64) / wordsPer; blk < uint64(len(bmBlocks)) {
				for j := uint64(0); j < bmAllocs; j++ {
					need[(bmBlocks[blk]+j)>>dataLog2] = true
				}
			}
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

// parallel runs fn(0..n-1) on every core; small jobs run inline.
func parallel(n int, fn func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n/64)
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
