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
// at a time; readers see the committed state until Commit returns.
type Tx struct {
	f     *FS
	files map[uint64]*txFile // a nil value removes the inode
	aux   *AuxMetadata       // new aux metadata, if set
	done  bool
}

type txFile struct {
	ct    []byte // the contents, already encrypted: the transaction's own copy
	size  int
	flags uint32
}

// Begin starts a transaction, waiting for a running one to finish.
func (f *FS) Begin() (*Tx, error) {
	if !f.rw {
		return nil, ErrReadOnlyFS
	}
	f.writer.Lock()
	f.mu.RLock()
	failed := f.failed
	f.mu.RUnlock()
	if failed != nil {
		f.writer.Unlock()
		return nil, failed
	}
	return &Tx{f: f, files: map[uint64]*txFile{}}, nil
}

func checkUserInode(ino uint64) error {
	if ino < FirstUserInode {
		return fmt.Errorf("cocoonfs: inode %d is reserved for the filesystem (user inodes start at %d): %w", ino, FirstUserInode, fs.ErrInvalid)
	}
	return nil
}

// WriteFile creates or replaces inode ino with data (copied) and flags;
// only the low 8 flag bits are for applications, the rest must be zero.
func (tx *Tx) WriteFile(ino uint64, data []byte, flags uint32) error {
	if tx.done {
		return ErrTxDone
	}
	if err := checkUserInode(ino); err != nil {
		return err
	}
	if flags&^0xff != 0 {
		return fmt.Errorf("cocoonfs: inode %d: flags %#x use reserved bits (only 0xff are for applications): %w", ino, flags, fs.ErrInvalid)
	}
	// Encrypting now makes the transaction's private copy of data in one
	// pass, outside the commit's exclusive lock. The key is the inode's own,
	// independent of where the commit puts the file.
	ct, err := tx.f.encryptFile(ino, data)
	if err != nil {
		return err
	}
	tx.files[ino] = &txFile{ct: ct, size: len(data), flags: flags}
	return nil
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
		delete(tx.files, ino) // created in this transaction: just cancel it
		return nil
	default:
		return fmt.Errorf("cocoonfs: inode %d: %w", ino, fs.ErrNotExist)
	}
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

// Rollback abandons the transaction; nothing was written.
func (tx *Tx) Rollback() {
	if !tx.done {
		tx.done = true
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
	return f.commit(tx.files, tx.aux)
}

// txPlan is everything a commit changes, computed before anything is written.
type txPlan struct {
	b       *builder          // allocations and new contents (nf is its shadow FS)
	nf      *FS               // the new state's header and bitmap
	freed   []disk.Extent     // blocks the new state releases
	freeSet extentSet         // the same, as a set
	inPlace map[uint64][]byte // allocation block → new contents of index nodes updated in place
}

// commit computes the plan, writes the journal (the commit point), applies
// it and reloads the committed state.
func (f *FS) commit(files map[uint64]*txFile, aux *AuxMetadata) error {
	p, err := f.plan(files, aux)
	if err != nil {
		return err
	}
	c, err := f.writeJournal(p)
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
func (f *FS) plan(files map[uint64]*txFile, aux *AuxMetadata) (*txPlan, error) {
	nf := f.shadow()
	b := &builder{f: nf, al: &allocator{total: f.imageAllocBlocks, base: f.bitmap}}
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
			ptr, err := b.writeCiphertext(ino, tf.ct, tf.size)
			if err != nil {
				return nil, err
			}
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
