package cocoonfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// ErrReadOnlyFS: a transaction was begun on an image opened without
// Options.ReadWrite.
var ErrReadOnlyFS = errors.New("cocoonfs: image opened read-only")

// ErrTxDone: the transaction was already committed or rolled back.
var ErrTxDone = errors.New("cocoonfs: transaction already finished")

// Tx is one all-or-nothing set of changes. Begin one with (*FS).Begin, add
// writes and removals, then Commit or Rollback. Only one transaction runs
// at a time; readers see the committed state until Commit returns. File
// contents go to free blocks as they are written (see Create); the
// transaction itself holds only their locations and digests. A Tx is not
// safe for concurrent use.
type Tx struct {
	f       *FS
	files   map[uint64]*txFile     // written files; a nil value removes the inode
	writers map[uint64]*FileWriter // files being written
	aux     *AuxMetadata           // new aux metadata, if set
	al      *allocator             // blocks this transaction has taken
	// dataCursor is where the next file data search starts (next fit, so
	// a file's segments tend to follow each other).
	dataCursor uint64
	done       bool
}

// Begin starts a transaction, waiting for a running one to finish.
func (f *FS) Begin() (*Tx, error) {
	if !f.rw {
		return nil, ErrReadOnlyFS
	}
	f.writer.Lock()
	f.mu.RLock()
	failed := f.failed
	al := &allocator{total: f.imageAllocBlocks, base: f.bitmap}
	f.mu.RUnlock()
	if failed != nil {
		f.writer.Unlock()
		return nil, failed
	}
	tx := &Tx{f: f, files: map[uint64]*txFile{}, writers: map[uint64]*FileWriter{}, al: al, dataCursor: f.txCursor}
	f.allocMu.Lock()
	f.running = tx
	f.allocMu.Unlock()
	return tx, nil
}

func checkUserInode(ino uint64) error {
	if ino < FirstUserInode {
		return fmt.Errorf("cocoonfs: inode %d is reserved for the filesystem (user inodes start at %d): %w", ino, FirstUserInode, fs.ErrInvalid)
	}
	return nil
}

// drop forgets what the transaction wrote to ino and frees its blocks.
func (tx *Tx) drop(ino uint64) {
	if tf := tx.files[ino]; tf != nil {
		for _, e := range tf.extents {
			tx.f.releaseData(tx, e)
		}
	}
	delete(tx.files, ino)
}

// Remove deletes inode ino; a missing inode is fs.ErrNotExist.
func (tx *Tx) Remove(ino uint64) error {
	if tx.done {
		return ErrTxDone
	}
	if err := checkUserInode(ino); err != nil {
		return err
	}
	pending, wasWritten := tx.files[ino]
	wasWritten = wasWritten && pending != nil
	if w := tx.writers[ino]; w != nil {
		w.abort(fmt.Errorf("cocoonfs: inode %d removed while being written", ino))
		wasWritten = true
	}
	tx.f.mu.RLock()
	_, committed, err := tx.f.index.lookup(ino)
	tx.f.mu.RUnlock()
	if err != nil {
		return err
	}
	switch {
	case committed:
		// Removal wins over an earlier write in this transaction.
	case wasWritten:
		tx.drop(ino) // created in this transaction: just cancel it
		return nil
	default:
		return fmt.Errorf("cocoonfs: inode %d: %w", ino, fs.ErrNotExist)
	}
	tx.drop(ino)
	tx.files[ino] = nil
	return nil
}

// SetAuxMetadata replaces the auxiliary metadata (entries and extra
// reserve) as part of the transaction. The commit writes new update groups
// sized for the contents plus the reserve and frees the old ones, so this
// also restores room that offline updates used up.
func (tx *Tx) SetAuxMetadata(m *AuxMetadata) error {
	if tx.done {
		return ErrTxDone
	}
	c := &AuxMetadata{Entries: slices.Clone(m.Entries), Reserve: m.Reserve, Group: -1}
	slices.SortStableFunc(c.Entries, func(a, b AuxEntry) int { return bytes.Compare(a.UUID[:], b.UUID[:]) })
	if _, err := encodeAux(c); err != nil {
		return err
	}
	tx.aux = c
	return nil
}

// UpdateAuxMetadata changes the aux metadata in one transaction: update
// edits the current records, read once the transaction has begun so that
// no other change slips in between, and the result is returned as
// committed.
func (f *FS) UpdateAuxMetadata(ctx context.Context, update func(*AuxMetadata) error) (*AuxMetadata, error) {
	tx, err := f.Begin()
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	m, err := f.AuxMetadata()
	if err != nil {
		return nil, err
	}
	if err := update(m); err != nil {
		return nil, err
	}
	if err := tx.SetAuxMetadata(m); err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, err
	}
	return f.AuxMetadata()
}

// Rollback abandons the transaction. Whatever its writers put in free
// blocks stays free space; the image is unchanged.
func (tx *Tx) Rollback() {
	if !tx.done {
		for _, w := range tx.writers {
			w.abort(ErrTxDone)
		}
		tx.done = true
		tx.f.allocMu.Lock()
		tx.f.running = nil
		tx.f.allocMu.Unlock()
		tx.f.writer.Unlock()
	}
}

// Commit applies the transaction atomically: after a crash at any point the
// image opens in the old state or in the new one. A failure before the
// commit point (ErrNoSpace, say) leaves the image unchanged and valid.
func (tx *Tx) Commit(ctx context.Context) error {
	if tx.done {
		return ErrTxDone
	}
	defer tx.Rollback()
	for ino := range tx.writers {
		return fmt.Errorf("cocoonfs: commit while inode %d is still being written (Close its writer first)", ino)
	}
	if len(tx.files) == 0 && tx.aux == nil {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f := tx.f
	f.mu.Lock()
	defer f.mu.Unlock()
	defer func() { f.gen++ }()
	return f.commit(tx)
}

// txPlan is everything a commit changes, computed before anything is written.
type txPlan struct {
	b       *builder          // metadata allocations and contents (nf is its shadow FS)
	nf      *FS               // the new state's header and bitmap
	files   []*txFile         // new files, already on the medium
	freed   []disk.Extent     // blocks the new state releases
	freeSet extentSet         // the same, as a set
	inPlace map[uint64][]byte // allocation block → new contents of index nodes updated in place
	// filesDelta is how many files the new state has more than the old.
	filesDelta int
}

// commit computes the plan, writes the journal (the commit point), applies
// it and reloads the committed state.
func (f *FS) commit(tx *Tx) error {
	// Blocks staged writers hold are free in both states but taken: the
	// commit's own allocations and scratch space must leave them alone.
	f.allocMu.Lock()
	staged := extentSet{ext: slices.Clone(f.staged.ext)}
	f.allocMu.Unlock()
	tx.al.avoid = &staged
	p, err := f.plan(tx)
	if err != nil {
		return err
	}
	c, err := f.writeJournal(p)
	if err == nil {
		f.txCursor = tx.dataCursor
		f.noteCommit(p)
	}
	var uncertain *uncertainCommitError
	if errors.As(err, &uncertain) {
		f.failed = err
	}
	if err != nil {
		return err
	}
	// Past the commit point: a failure from here on leaves a pending
	// journal that the next read-write open replays.
	if err := f.apply(c); err != nil {
		f.failed = fmt.Errorf("cocoonfs: transaction committed but not yet applied (the next read-write open completes it): %w", err)
		return f.failed
	}
	if err := f.applyAndReload(); err != nil {
		f.failed = fmt.Errorf("cocoonfs: transaction committed, but reloading the image failed (reopen it): %w", err)
		return f.failed
	}
	return nil
}

// plan builds the new state: new file contents, extents lists and index
// nodes created by splits go to blocks free in the committed state; changed
// index nodes, the bitmap and the mutable header are updated in place
// through staged copies.
func (f *FS) plan(tx *Tx) (*txPlan, error) {
	files, aux := tx.files, tx.aux
	nf := f.shadow()
	b := &builder{f: nf, al: tx.al}
	p := &txPlan{b: b, nf: nf}

	mt, err := f.newMtree(b)
	if err != nil {
		return nil, err
	}
	for _, ino := range slices.Sorted(maps.Keys(files)) {
		old, exists, err := f.index.lookup(ino)
		if err != nil {
			return nil, err
		}
		switch {
		case exists && files[ino] == nil:
			p.filesDelta--
		case !exists && files[ino] != nil:
			p.filesDelta++
		}
		if exists {
			data, chainExt, err := f.entryExtents(old)
			if err != nil {
				return nil, err
			}
			p.freed = append(p.freed, data...)
			p.freed = append(p.freed, chainExt...)
		}
		tf := files[ino]
		switch {
		case tf != nil:
			ptr, err := b.extentsPtr(ino, tf.extents)
			if err != nil {
				return nil, err
			}
			p.files = append(p.files, tf)
			if err := mt.put(disk.LeafEntry{Inode: ino, Ptr: ptr, Flags: tf.flags}); err != nil {
				return nil, err
			}
		case exists:
			if err := mt.remove(ino); err != nil {
				return nil, err
			}
		}
	}
	p.inPlace = map[uint64][]byte{}
	entryLeaf, err := mt.finish(p.inPlace)
	if err != nil {
		return nil, err
	}
	if nf.header.EntryLeaf, err = disk.NewBlockPtr(entryLeaf); err != nil {
		return nil, err
	}
	p.freed = append(p.freed, mt.freed...)
	if aux != nil {
		// New update groups in free blocks; the old ones are freed. Aux
		// blocks are never digested, so the tree does not see either.
		l := f.layout
		nf.excluded = []disk.Extent{{Start: 0, Len: f.headerAllocs}, f.journalHead}
		nf.auxExtents = nil
		b.opts = &MkfsOptions{info: &mkfsInfoBuild{layout: l, entries: toDiskEntries(aux.Entries), reserve: aux.Reserve}}
		if err := b.buildAux(max(l.IOBlockSize(), l.AuthTreeDataBlockSize()) / l.AllocBlockSize()); err != nil {
			return nil, err
		}
		p.freed = append(p.freed, f.auxExtents...)
	}
	// Free only now, so that nothing this transaction allocated reuses a
	// block the committed state still depends on.
	for _, e := range p.freed {
		p.freeSet.add(e)
	}
	nf.bitmap = &newBitmap{base: f.bitmap, alloc: &b.al.taken, free: &p.freeSet, total: f.imageAllocBlocks}
	slices.SortFunc(b.writes, func(x, y region) int { return cmpU64(x.start, y.start) })
	return p, nil
}

// shadow is a copy of the committed state for building the next one; it
// shares the keys, algorithms, device and the committed tree.
func (f *FS) shadow() *FS {
	return &FS{
		dev: f.dev, layout: f.layout, salt: f.salt, algs: f.algs, keys: f.keys,
		header: f.header, imageAllocBlocks: f.imageAllocBlocks,
		excluded: f.excluded, auxExtents: f.auxExtents, journalHead: f.journalHead, headerAllocs: f.headerAllocs,
		treeExtents: f.treeExtents, bitmapExtents: f.bitmapExtents, tree: f.tree, counter: f.counter,
	}
}
