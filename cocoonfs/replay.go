package cocoonfs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// replay applies the committed journal whose head (integrity protection
// removed) is head: copy the staged IO blocks to their targets, rebuild the
// authentication tree nodes over the changed data blocks from scratch,
// check the result against the new root digest, and invalidate the journal.
// It is idempotent: an interrupted replay is simply run again.
func (f *FS) replay(sh disk.StaticHeader, jh disk.JournalHead, head []byte) error {
	l := f.layout
	ab := l.AllocBlockSize()
	ioBytes := l.IOBlockSize()
	f.imageAllocBlocks = uint64(f.dev.Size()) / ab

	ch := f.journalChain()
	readRaw := ch.read
	ch.read = func(e disk.Extent) ([]byte, error) {
		if e == f.journalHead {
			return head, nil
		}
		if e.Start%(ioBytes/ab) != 0 || e.Len%(ioBytes/ab) != 0 {
			return nil, corruptf("journal log extent %d+%d not aligned to the IO block", e.Start, e.Len)
		}
		return readRaw(e)
	}
	var logTail []disk.Extent
	readLogged := ch.read
	ch.read = func(e disk.Extent) ([]byte, error) {
		if e != f.journalHead {
			logTail = append(logTail, e)
		}
		return readLogged(e)
	}
	payload, err := ch.decode(f.journalHead)
	if err != nil {
		return fmt.Errorf("journal log: %w", err)
	}
	jl, err := disk.DecodeJournalLog(payload, f.algs.dataHMAC.Size, f.algs.preauthHMAC.Size)
	if err != nil {
		return fmt.Errorf("cocoonfs: journal log: %w", err)
	}
	ioBlocks := uint64(f.dev.Size()) / ioBytes
	staged := map[uint64]uint64{} // target IO block → source IO block
	for _, w := range jl.ApplyWrites {
		if w.Target+w.Len > ioBlocks || w.Source+w.Len > ioBlocks || w.Target+w.Len < w.Target || w.Source+w.Len < w.Source {
			return corruptf("journal write %d+%d ← %d beyond the device", w.Target, w.Len, w.Source)
		}
		for i := uint64(0); i < w.Len; i++ {
			staged[w.Target+i] = w.Source + i
		}
	}
	for _, w := range jl.ApplyWrites {
		for i := uint64(0); i < w.Len; i++ {
			if src, ok := staged[w.Source+i]; ok && !(w.Source == w.Target) {
				_ = src
				return corruptf("journal write source IO block %d is also a target", w.Source+i)
			}
		}
	}
	var undisguise *disguise
	if jl.Disguise != nil {
		if undisguise, err = newDisguise(jl.Disguise); err != nil {
			return err
		}
	}
	ioAllocs := ioBytes / ab
	// stagedBlock reads the staging copy of target IO block t from source IO
	// block src, undisguised.
	stagedBlock := func(t, src uint64) ([]byte, error) {
		b, err := f.readRaw(src*ioBytes, ioBytes)
		if err == nil && undisguise != nil {
			undisguise.transform(false, b, t*ioAllocs, src*ioAllocs, ab)
		}
		return b, err
	}
	// view reads the image as it is once the writes are applied.
	view := func(off, n uint64) ([]byte, error) {
		out := make([]byte, 0, n)
		for n > 0 {
			blk := off / ioBytes
			in := off % ioBytes
			take := min(n, ioBytes-in)
			var b []byte
			var err error
			if s, ok := staged[blk]; ok {
				if b, err = stagedBlock(blk, s); err == nil {
					b = b[in : in+take]
				}
			} else {
				b, err = f.readRaw(off, take)
			}
			if err != nil {
				return nil, err
			}
			out = append(out, b...)
			off, n = off+take, n-take
		}
		return out, nil
	}

	bs := f.algs.cipher.BlockSize
	mhOff := disk.MutableHeaderOffset(sh)
	mhLen := disk.MutableHeaderPaddedLen(l, f.algs.rootHMAC.Size, bs, f.algs.preauthHMAC.Size)
	mb, err := view(mhOff, mhLen)
	if err != nil {
		return err
	}
	newHdr, err := disk.DecodeMutableHeader(mb, l, f.algs.rootHMAC.Size, bs, f.algs.preauthHMAC.Size)
	if err != nil {
		return fmt.Errorf("cocoonfs: journal: new mutable header: %w", err)
	}
	newHdr.AuxHeads = jh.AuxHeads // the journal's pointers take precedence
	f.header = newHdr
	if newHdr.ImageSizeAllocBlocks > f.imageAllocBlocks {
		return corruptf("journal: new image size %d exceeds the device", newHdr.ImageSizeAllocBlocks)
	}
	f.imageAllocBlocks = newHdr.ImageSizeAllocBlocks
	f.treeExtents, f.bitmapExtents = jl.AuthTreeExtents, jl.BitmapExtents
	f.bitmap = nil
	f.excluded = []disk.Extent{{Start: 0, Len: f.headerAllocs}, f.journalHead}
	if f.auxExtents, err = f.walkAuxExtents(); err != nil {
		return err
	}
	f.excluded = append(f.excluded, f.auxExtents...)
	if f.tree, err = newAuthTree(f, f.treeExtents, newHdr.RootHMAC); err != nil {
		return err
	}

	// The bitmap fragments the rebuild needs, authenticated by the journal.
	if !bytesEqual(f.bitmapDigestsHMAC(jl.BitmapDigests), jl.BitmapDigestsHMAC) {
		return authf("journal: the bitmap fragment digests do not authenticate")
	}
	dataLog2 := uint(l.AuthTreeDataBlockLog2)
	per := uint64(1) << dataLog2
	verifiedDB := map[uint64]bool{}
	for _, r := range jl.BitmapDigests {
		a := r.Block << dataLog2
		if !inExtents(a, f.bitmapExtents) {
			return corruptf("journal: bitmap digest for data block %d outside the bitmap file", r.Block)
		}
		blk, err := view(a*ab, per*ab)
		if err != nil {
			return err
		}
		d, _ := f.tree.domainIndex(a)
		word, err := f.digestBits(a, per)
		if err != nil {
			return err
		}
		if !bytesEqual(f.tree.dataDigest(blk, word, d), r.Digest) {
			return authf("journal: bitmap data block %d does not match its digest", r.Block)
		}
		verifiedDB[r.Block] = true
	}
	bmAllocs := l.BitmapBlockSize() / ab
	wordsPer := (l.BitmapBlockSize() - uint64(bs)) / 8
	c := f.keys.blockCipher(inoAllocBitmap, subdomainData)
	known := map[uint64]uint64{} // bitmap word index → word
	idx := uint64(0)
	for _, e := range f.bitmapExtents {
		for a := e.Start; a < e.Start+e.Len; a, idx = a+bmAllocs, idx+1 {
			ok := true
			for j := uint64(0); j < bmAllocs; j++ {
				ok = ok && verifiedDB[(a+j)>>dataLog2]
			}
			if !ok {
				continue
			}
			raw, err := view(a*ab, bmAllocs*ab)
			if err != nil {
				return err
			}
			pt, err := decryptBlock(c, raw)
			if err != nil {
				return err
			}
			for i := uint64(0); i < wordsPer; i++ {
				known[idx*wordsPer+i] = binary.LittleEndian.Uint64(pt[i*8:])
			}
		}
	}

	// Apply the writes, then rebuild the tree over the changed blocks.
	w := &writer{f: f}
	for _, wr := range jl.ApplyWrites {
		if wr.Target == wr.Source {
			continue
		}
		for i := uint64(0); i < wr.Len; i++ {
			data, err := stagedBlock(wr.Target+i, wr.Source+i)
			if err != nil {
				return err
			}
			w.at((wr.Target+i)*ioBytes, data)
		}
	}
	w.sync()
	if w.err != nil {
		return w.err
	}
	bitsOf := func(a, cnt uint64) (uint64, error) {
		var word uint64
		for i := uint64(0); i < cnt; i++ {
			wd, ok := known[(a+i)/64]
			if !ok {
				return 0, corruptf("journal: no authenticated bitmap fragment for allocation block %d", a+i)
			}
			if wd&(1<<((a+i)%64)) != 0 {
				word |= 1 << i
			}
		}
		for _, e := range f.excluded {
			for i := uint64(0); i < cnt; i++ {
				if a+i >= e.Start && a+i < e.Start+e.Len {
					word &^= 1 << i
				}
			}
		}
		return word, nil
	}
	nodes, err := f.replayTree(jl.AuthTreeUpdates, bitsOf)
	if err != nil {
		return err
	}
	root := nodes[0]
	if root == nil {
		if root, err = f.tree.readNodeRaw(0); err != nil {
			return err
		}
	}
	if !bytesEqual(f.tree.rootHMAC(root, newHdr.EncryptedCounter, f.imageContext()), newHdr.RootHMAC) {
		return authf("journal replay: the rebuilt authentication tree does not match the committed root digest")
	}
	for pos, n := range nodes {
		off, err := f.tree.nodeOffset(pos)
		if err != nil {
			return err
		}
		w.at(off, n)
	}
	w.sync()
	// Invalidate the journal: zeros in its first 128 bytes break the tier-0
	// integrity check, so the head can never validate again.
	w.at(f.journalHead.Start*ab, make([]byte, 128))
	w.sync()
	if w.err == nil {
		f.trimAfter(jl, logTail)
	}
	return w.err
}

func bytesEqual(a, b []byte) bool { return bytes.Equal(a, b) }

// replayTree recomputes the digests of the data blocks a journal lists as
// they are on the medium now, in order and in batches, and the tree nodes
// above them (from the nodes as stored; the caller checks the root).
func (f *FS) replayTree(ranges []disk.Range, bitsOf func(a, cnt uint64) (uint64, error)) (map[uint64][]byte, error) {
	l := f.layout
	ab := l.AllocBlockSize()
	log2 := uint(l.AuthTreeDataBlockLog2)
	per := uint64(1) << log2
	// Sorted and merged, whatever order the log lists them in.
	rs := slices.Clone(ranges)
	slices.SortFunc(rs, func(x, y disk.Range) int { return cmpU64(x.Start, y.Start) })
	var merged []disk.Range
	for _, r := range rs {
		if r.Len == 0 || r.Start+r.Len < r.Start || (r.Start+r.Len)<<log2>>log2 != r.Start+r.Len {
			return nil, corruptf("journal: tree update range %d+%d is invalid", r.Start, r.Len)
		}
		if n := len(merged); n > 0 && r.Start <= merged[n-1].Start+merged[n-1].Len {
			merged[n-1].Len = max(merged[n-1].Len, r.Start+r.Len-merged[n-1].Start)
			continue
		}
		merged = append(merged, r)
	}
	up := f.tree.newUpdater(f.tree.mediumNodes)
	batch := max(uint64(readChunk)/(per*ab), 1)
	for _, r := range merged {
		for pdb := r.Start; pdb < r.Start+r.Len; {
			n := min(r.Start+r.Len-pdb, batch)
			a := pdb << log2
			if a >= f.imageAllocBlocks {
				return nil, corruptf("journal: tree update for data block %d beyond the image", pdb)
			}
			end := min((pdb+n)<<log2, f.imageAllocBlocks)
			buf, err := f.readRaw(a*ab, (end-a)*ab)
			if err != nil {
				return nil, err
			}
			count := int((end - a + per - 1) / per)
			ds := make([]uint64, count)
			words := make([]uint64, count)
			digests := make([][]byte, count)
			for k := range count {
				x := a + uint64(k)*per
				d, ok := f.tree.domainIndex(x)
				if !ok || d >= f.tree.dataBlocks {
					return nil, corruptf("journal: tree update for data block %d outside the authenticated range", x>>log2)
				}
				if ds[k] = d; k > 0 && d != ds[k-1]+1 {
					// The range crossed a tree extent: not a valid update.
					return nil, corruptf("journal: tree update range crosses the authentication tree at block %d", x)
				}
				if words[k], err = bitsOf(x, min(per, f.imageAllocBlocks-x)); err != nil {
					return nil, err
				}
			}
			parallel(count, func(k int) {
				lo := uint64(k) * per * ab
				hi := min(lo+per*ab, uint64(len(buf)))
				digests[k] = f.tree.dataDigest(buf[lo:hi], words[k], ds[k])
			})
			for k := range count {
				if err := up.set(ds[k], digests[k]); err != nil {
					return nil, err
				}
			}
			pdb += n
		}
	}
	return up.finish(), nil
}

// applyAndReload replays the journal just committed and reloads the
// in-memory state from the medium.
func (f *FS) applyAndReload() error {
	sh, err := readStaticHeader(f.dev)
	if err != nil {
		return err
	}
	return f.bootstrap(sh)
}
