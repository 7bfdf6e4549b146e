package cocoonfs

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math/big"
	"slices"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// The commit of a transaction, after the plan: the new state's bitmap
// blocks, the digests of every data block that changed, the tree nodes
// above them, the mutable header, the staged copies of what is updated in
// place and the journal log whose head is the commit point. New file
// contents are on the medium already (written by FileWriters), with the
// digests of their whole data blocks; everything else the commit writes is
// metadata, held in memory.

// contentIndex finds the new contents of allocation blocks among sorted
// regions.
type contentIndex []region

func (x contentIndex) find(a, ab uint64) int {
	i, _ := slices.BinarySearchFunc(x, a, func(r region, a uint64) int {
		if r.start+uint64(len(r.data))/ab <= a {
			return -1
		}
		if r.start > a {
			return 1
		}
		return 0
	})
	if i < len(x) && x[i].start <= a && a < x[i].start+uint64(len(x[i].data))/ab {
		return i
	}
	return -1
}

// at returns the contents of allocation block a, or nil.
func (x contentIndex) at(a, ab uint64) []byte {
	i := x.find(a, ab)
	if i < 0 {
		return nil
	}
	off := (a - x[i].start) * ab
	return x[i].data[off : off+ab]
}

// commitState is what writeJournal works from: the committed state, the
// plan, and the new contents gathered from it.
type commitState struct {
	f, nf    *FS
	p        *txPlan
	ab       uint64
	log2     uint
	per      uint64
	regions  contentIndex      // new metadata and file edges, sorted
	inPlace  map[uint64][]byte // allocation block → new contents updated in place
	authData map[uint64][]byte // committed data blocks read (authenticated), by physical data block
}

// newContent returns block a's contents in the new state when the commit
// holds them, else nil.
func (cs *commitState) newContent(a uint64) []byte {
	if c, ok := cs.inPlace[a]; ok {
		return c
	}
	return cs.regions.at(a, cs.ab)
}

// digestContent returns the contents of block a as the new state's digest
// of its data block must cover them: new contents the commit holds, or
// committed contents, authenticated. A block allocated by this transaction
// whose contents are not held is a bug: its digest would cover bytes read
// back from the untrusted medium.
func (cs *commitState) digestContent(a uint64) ([]byte, error) {
	if c := cs.newContent(a); c != nil {
		return c, nil
	}
	if cs.p.b.al.taken.contains(a) {
		return nil, fmt.Errorf("BUG: new allocation block %d has no contents in the commit", a)
	}
	return cs.committedContent(a)
}

// committedContent returns block a's committed contents, authenticated when
// the committed state digests it, raw when it is free or never digested.
func (cs *commitState) committedContent(a uint64) ([]byte, error) {
	f := cs.f
	allocated, err := isAllocated(f.bitmap, a)
	if err != nil {
		return nil, err
	}
	if !allocated || inExtents(a, f.excluded) {
		return f.readRaw(a*cs.ab, cs.ab)
	}
	pdb := a >> cs.log2
	blk, ok := cs.authData[pdb]
	if !ok {
		start := pdb << cs.log2
		if blk, err = f.authRead(start, min(cs.per, f.imageAllocBlocks-start)); err != nil {
			return nil, err
		}
		cs.authData[pdb] = blk
	}
	off := (a - pdb<<cs.log2) * cs.ab
	return blk[off : off+cs.ab], nil
}

// stagingContent returns block a's contents for a staged copy of its IO
// block: like digestContent, except that file data this transaction wrote
// is read back as written (it is only copied, never digested from there).
func (cs *commitState) stagingContent(a uint64) ([]byte, error) {
	if c := cs.newContent(a); c != nil {
		return c, nil
	}
	if cs.p.b.al.taken.contains(a) {
		return cs.f.readRaw(a*cs.ab, cs.ab)
	}
	return cs.committedContent(a)
}

// dataBlock assembles physical data block pdb of the new state and returns
// it with its digest word.
func (cs *commitState) dataBlock(pdb uint64) ([]byte, uint64, error) {
	a := pdb << cs.log2
	cnt := min(cs.per, cs.f.imageAllocBlocks-a)
	word, err := cs.nf.digestBits(a, cnt)
	if err != nil {
		return nil, 0, err
	}
	if word == 0 {
		return nil, 0, nil // nothing digested: the digest covers the word and index only
	}
	blk := make([]byte, cnt*cs.ab)
	for i := uint64(0); i < cnt; i++ {
		if word&(1<<i) == 0 {
			continue // not digested: its contents do not matter
		}
		c, err := cs.digestContent(a + i)
		if err != nil {
			return nil, 0, err
		}
		copy(blk[i*cs.ab:], c)
	}
	return blk, word, nil
}

// writeJournal finishes the plan (bitmap, tree, mutable header), writes the
// new metadata, the staged copies and the journal log, and commits.
func (f *FS) writeJournal(p *txPlan) (*committed, error) {
	l := f.layout
	ab := l.AllocBlockSize()
	b, nf := p.b, p.nf
	cs := &commitState{f: f, nf: nf, p: p, ab: ab, log2: uint(l.AuthTreeDataBlockLog2), inPlace: map[uint64][]byte{}, authData: map[uint64][]byte{}}
	cs.per = uint64(1) << cs.log2
	maps.Copy(cs.inPlace, p.inPlace)
	cs.regions = append(cs.regions, b.writes...)
	for _, tf := range p.files {
		cs.regions = append(cs.regions, tf.edges...)
	}
	slices.SortFunc(cs.regions, func(x, y region) int { return cmpU64(x.start, y.start) })

	bm, ok := f.bitmap.(*committedBitmap)
	if !ok {
		return nil, fmt.Errorf("BUG: committing on a state without a committed bitmap")
	}
	if err := cs.stageBitmap(bm); err != nil {
		return nil, err
	}

	// Data blocks whose digests change, in two kinds: whole data blocks of
	// new files (digested when written) and the rest (new metadata, file
	// edges, blocks updated in place or released), digested now.
	precomputed := cs.fileRuns()
	other := cs.otherChanged()
	digests := make([][]byte, len(other))
	if err := cs.digestOther(other, digests); err != nil {
		return nil, err
	}

	// The tree above them, and the journal's record of them.
	up := f.tree.newUpdater(f.tree.committedNodes)
	var updates []disk.Range
	affected := map[uint64]bool{}
	feed := func(pdb uint64, digest []byte) error {
		d, ok := f.tree.domainIndex(pdb << cs.log2)
		if !ok {
			return fmt.Errorf("BUG: transaction changed authentication tree block %d", pdb<<cs.log2)
		}
		affected[d/f.tree.leafEntries] = true
		if n := len(updates); n > 0 && updates[n-1].Start+updates[n-1].Len == pdb {
			updates[n-1].Len++
		} else {
			updates = append(updates, disk.Range{Start: pdb, Len: 1})
		}
		return up.set(d, digest)
	}
	if err := mergeDigests(precomputed, other, digests, f.algs.dataHMAC.Size, feed); err != nil {
		return nil, err
	}
	nodes := up.finish()
	root := nodes[0]
	if root == nil {
		root = f.tree.root
	}

	// The new mutable header: next counter value, new entry leaf, root.
	nf.counter = new(big.Int).Add(f.counter, big.NewInt(1))
	nf.counter.And(nf.counter, new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 128), big.NewInt(1)))
	nf.header.EncryptedCounter = f.encryptCounter(nf.counter)
	nf.header.RootHMAC = f.tree.rootHMAC(root, nf.header.EncryptedCounter, nf.imageContext())
	var leaf []byte
	for a := nf.header.EntryLeaf.Start(); a < nf.header.EntryLeaf.Start()+l.IndexLeafSize()/ab; a++ {
		c, err := cs.digestContent(a)
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
	mhStart := disk.MutableHeaderOffset(disk.StaticHeader{Layout: l, Salt: f.salt}) / ab
	for i := uint64(0); i < uint64(len(mh))/ab; i++ {
		cs.inPlace[mhStart+i] = mh[i*ab : (i+1)*ab]
	}

	// Stage every IO block updated in place, with the new contents of all
	// its allocation blocks, in blocks free in both states.
	ioAllocs := l.IOBlockSize() / ab
	targets := map[uint64]bool{}
	for a := range cs.inPlace {
		targets[a/ioAllocs] = true
	}
	var records []disk.WriteRecord
	var stagedData [][]byte
	res := &allocator{total: f.imageAllocBlocks, base: f.bitmap, taken: extentSet{ext: slices.Clone(b.al.taken.ext)}, avoid: b.al.avoid, cursor: f.scratchCursor}
	for _, t := range slices.Sorted(maps.Keys(targets)) {
		buf := make([]byte, 0, ioAllocs*ab)
		for a := t * ioAllocs; a < (t+1)*ioAllocs; a++ {
			c, err := cs.stagingContent(a)
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
		AuthTreeUpdates: updates,
	}
	// Digests of the bitmap's data blocks that describe the affected leaves'
	// ranges, so a replay can authenticate the bitmap fragments it needs.
	for _, pdb := range f.bitmapDataBlocksFor(bm, affected) {
		blk, word, err := cs.dataBlock(pdb)
		if err != nil {
			return nil, err
		}
		d, _ := f.tree.domainIndex(pdb << cs.log2)
		jl.BitmapDigests = append(jl.BitmapDigests, disk.DigestRecord{Block: pdb, Digest: f.tree.dataDigest(blk, word, d)})
	}
	jl.BitmapDigestsHMAC = f.bitmapDigestsHMAC(jl.BitmapDigests)
	if f.trim {
		if jl.Trim, err = freedIOBlocks(p.freed, nf.bitmap, ioAllocs); err != nil {
			return nil, err
		}
	}
	payload := disk.AppendJournalLog(nil, jl)
	c, err := f.writeJournalLog(payload, jl, nodes, b.writes, records, stagedData, stagedOnDisk, res, nf)
	if err == nil {
		f.scratchCursor = res.cursor
	}
	return c, err
}

// stageBitmap encrypts anew the bitmap blocks whose words change: only words
// under the transaction's allocations and releases can.
func (cs *commitState) stageBitmap(bm *committedBitmap) error {
	f, nf := cs.f, cs.nf
	l := f.layout
	bmBlock := l.BitmapBlockSize()
	bmAllocs := bmBlock / cs.ab
	c := f.keys.blockCipher(inoAllocBitmap, subdomainData)
	touched := map[uint64]bool{}
	for _, set := range []*extentSet{&cs.p.b.al.taken, &cs.p.freeSet} {
		for _, e := range set.ext {
			for k := e.Start / 64 / bm.wordsPer; k <= (e.Start+e.Len-1)/64/bm.wordsPer; k++ {
				touched[k] = true
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(touched)) {
		if k >= bm.blocks {
			continue
		}
		changed := false
		pt := make([]byte, 0, bm.wordsPer*8)
		for w := k * bm.wordsPer; w < (k+1)*bm.wordsPer; w++ {
			oldW, err := f.bitmap.word(w)
			if err != nil {
				return err
			}
			newW, err := nf.bitmap.word(w)
			if err != nil {
				return err
			}
			changed = changed || oldW != newW
			pt = binary.LittleEndian.AppendUint64(pt, newW)
		}
		if !changed {
			continue
		}
		blk, err := encryptBlock(c, pt, int(bmBlock))
		if err != nil {
			return err
		}
		start := bm.blockStart(k)
		for j := uint64(0); j < bmAllocs; j++ {
			cs.inPlace[start+j] = blk[j*cs.ab : (j+1)*cs.ab]
		}
	}
	return nil
}

// fileRuns collects the new files' precomputed digests, sorted.
func (cs *commitState) fileRuns() []digestRun {
	var runs []digestRun
	for _, tf := range cs.p.files {
		runs = append(runs, tf.runs...)
	}
	slices.SortFunc(runs, func(x, y digestRun) int { return cmpU64(x.pdb, y.pdb) })
	return runs
}

// otherChanged lists, sorted, the physical data blocks whose digests the
// commit computes: those holding new metadata, file edges, blocks updated
// in place, and released blocks (their bitmap bits change). Blocks never
// digested are left out.
func (cs *commitState) otherChanged() []uint64 {
	f := cs.f
	set := map[uint64]bool{}
	markRange := func(a, n uint64) {
		for x := a; x < a+n; x++ {
			if !inExtents(x, f.excluded) {
				set[x>>cs.log2] = true
			}
		}
	}
	for _, r := range cs.regions {
		markRange(r.start, uint64(len(r.data))/cs.ab)
	}
	for a := range cs.inPlace {
		markRange(a, 1)
	}
	for _, e := range cs.p.freeSet.ext {
		for pdb := e.Start >> cs.log2; pdb <= (e.Start+e.Len-1)>>cs.log2; pdb++ {
			a := pdb << cs.log2
			if !extentsCover(f.excluded, a, min(cs.per, f.imageAllocBlocks-a)) {
				set[pdb] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// digestOther assembles the data blocks (which may read and authenticate
// committed contents) in batches, in order, and HMACs each batch on every
// core.
func (cs *commitState) digestOther(pdbs []uint64, out [][]byte) error {
	const batch = 4096
	blocks := make([][]byte, 0, batch)
	words := make([]uint64, 0, batch)
	ds := make([]uint64, 0, batch)
	for i := 0; i < len(pdbs); i += batch {
		blocks, words, ds = blocks[:0], words[:0], ds[:0]
		for _, pdb := range pdbs[i:min(i+batch, len(pdbs))] {
			blk, word, err := cs.dataBlock(pdb)
			if err != nil {
				return err
			}
			d, ok := cs.f.tree.domainIndex(pdb << cs.log2)
			if !ok {
				return fmt.Errorf("BUG: transaction changed authentication tree block %d", pdb<<cs.log2)
			}
			blocks, words, ds = append(blocks, blk), append(words, word), append(ds, d)
		}
		parallel(len(blocks), func(j int) { out[i+j] = cs.f.tree.dataDigest(blocks[j], words[j], ds[j]) })
		clear(cs.authData) // batches move forward: keep the cache small
	}
	return nil
}

// mergeDigests feeds the precomputed runs and the other digests to feed in
// increasing data block order. The two never share a data block: a run's
// blocks lie wholly inside one new file's extents.
func mergeDigests(runs []digestRun, other []uint64, digests [][]byte, dlen int, feed func(pdb uint64, digest []byte) error) error {
	i := 0
	emitOther := func(limit uint64) error {
		for ; i < len(other) && other[i] < limit; i++ {
			if err := feed(other[i], digests[i]); err != nil {
				return err
			}
		}
		return nil
	}
	for _, r := range runs {
		n := uint64(len(r.digests) / dlen)
		if err := emitOther(r.pdb); err != nil {
			return err
		}
		if i < len(other) && other[i] < r.pdb+n {
			return fmt.Errorf("BUG: data block %d both in a new file's whole blocks and elsewhere", other[i])
		}
		for k := uint64(0); k < n; k++ {
			if err := feed(r.pdb+k, r.digests[k*uint64(dlen):(k+1)*uint64(dlen)]); err != nil {
				return err
			}
		}
	}
	return emitOther(^uint64(0))
}

// writeJournalLog encodes the journal log into its head and tail extents,
// writes the new metadata, the staged copies and the tail, and then, behind
// a barrier, the head: the commit point.
func (f *FS) writeJournalLog(payload []byte, jl disk.JournalLog, nodes map[uint64][]byte, writes []region, records []disk.WriteRecord, stagedData, stagedOnDisk [][]byte, res *allocator, nf *FS) (*committed, error) {
	l := f.layout
	ab := l.AllocBlockSize()
	ioAllocs := l.IOBlockSize() / ab
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

	// Write: new metadata, staged copies, log tail; barrier (which also
	// makes the file contents written before the commit durable); log head.
	w := &writer{f: f}
	for _, r := range writes {
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
