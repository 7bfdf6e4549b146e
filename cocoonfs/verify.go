package cocoonfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// VerifyReport is what Verify found.
type VerifyReport struct {
	DataBlocks      uint64   `json:"data_blocks"`      // data blocks authenticated
	AllocatedBlocks uint64   `json:"allocated_blocks"` // allocation blocks marked in the bitmap
	Inodes          int      `json:"inodes"`           // user inodes read back
	Bytes           int64    `json:"bytes"`            // plaintext bytes of user files
	Problems        []string `json:"problems,omitempty"`

	// repeats counts further occurrences of each problem, so that one bad
	// tree node is reported once rather than once per data block under it.
	repeats map[string]int
}

// maxProblems bounds the report on a badly damaged image.
const maxProblems = 100

func (r *VerifyReport) add(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if r.repeats == nil {
		r.repeats = make(map[string]int)
	}
	if _, dup := r.repeats[msg]; dup {
		r.repeats[msg]++
		return
	}
	if len(r.Problems) < maxProblems {
		r.repeats[msg] = 0
		r.Problems = append(r.Problems, msg)
	}
}

// finish folds the repeat counts into the problem messages.
func (r *VerifyReport) finish() {
	for i, p := range r.Problems {
		if n := r.repeats[p]; n > 0 {
			r.Problems[i] = fmt.Sprintf("%s (and %d more times)", p, n)
		}
	}
}

// verifyError reports a failed Verify; it unwraps to ErrAuthentication or
// ErrCorrupt without repeating the sentinel's text.
type verifyError struct {
	n     int
	first string
	kind  error
}

func (e *verifyError) Error() string {
	return fmt.Sprintf("cocoonfs: verify found %d problem(s), the first: %s", e.n, e.first)
}
func (e *verifyError) Unwrap() error { return e.kind }

// Verify authenticates every data block of the image against the tree,
// checks that the tree's unused entries are zero, cross-checks the
// allocation bitmap against every extent the filesystem references (headers,
// journal log head, tree, bitmap, aux metadata, index nodes, files and their
// extents lists), and decrypts every file. progress, if not nil, is called
// with the data blocks done so far and the total.
//
// A damaged image yields a report listing the problems and an error wrapping
// ErrAuthentication (if any block failed authentication) or ErrCorrupt.
func (f *FS) Verify(ctx context.Context, progress func(done, total uint64)) (*VerifyReport, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.failed != nil {
		return &VerifyReport{}, f.failed
	}
	r := &VerifyReport{}
	authFailed := false
	l := f.layout
	ab := l.AllocBlockSize()
	per := uint64(1) << l.AuthTreeDataBlockLog2
	const batch = 1 << 20
	perBatch := max(batch/(per*ab), 1) * per
	zeros := make([]byte, perBatch*ab)
	for a := uint64(0); a < f.imageAllocBlocks; {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		if _, ok := f.tree.domainIndex(a); !ok {
			a += per
			continue
		}
		end := min(a+perBatch, f.imageAllocBlocks)
		// Stop the batch at the next tree extent.
		for _, e := range f.tree.byStart {
			if e.Start > a && e.Start < end {
				end = e.Start
			}
		}
		// A batch with nothing allocated (free space) digests only the
		// bitmap words and indices: its contents need not be read.
		buf := zeros[:(end-a)*ab]
		for b := a; b < end; b += per {
			if w, err := f.digestBits(b, min(per, end-b)); err != nil || w != 0 {
				var rerr error
				if buf, rerr = f.readRaw(a*ab, (end-a)*ab); rerr != nil {
					return r, rerr
				}
				break
			}
		}
		blocks := int((end - a + per - 1) / per)
		errs := make([]error, blocks)
		parallel(blocks, func(i int) {
			b := a + uint64(i)*per
			cnt := min(per, end-b)
			errs[i] = f.checkDataBlock(b, buf[(b-a)*ab:(b-a+cnt)*ab])
		})
		for _, err := range errs {
			if err != nil {
				if errors.Is(err, ErrAuthentication) {
					authFailed = true
				}
				r.add("%v", err)
			}
			r.DataBlocks++
		}
		a = end
		if progress != nil {
			progress(r.DataBlocks, f.tree.dataBlocks)
		}
	}
	f.verifyTreeTail(r)
	f.verifyAllocations(r)
	if n, err := countAllocated(f.bitmap, f.imageAllocBlocks); err != nil {
		r.add("allocation bitmap: %v", err)
	} else {
		r.AllocatedBlocks = n
	}
	// Read every file even on a damaged image: the report then says which
	// inodes the damage reaches.
	f.verifyFiles(ctx, r)
	r.finish()
	switch {
	case len(r.Problems) == 0:
		return r, nil
	case authFailed:
		return r, &verifyError{len(r.Problems), r.Problems[0], ErrAuthentication}
	default:
		return r, &verifyError{len(r.Problems), r.Problems[0], ErrCorrupt}
	}
}

// verifyTreeTail checks that leaf entries past the image's end are zero, as
// the format requires for blocks beyond the image.
func (f *FS) verifyTreeTail(r *VerifyReport) {
	t := f.tree
	last := t.dataBlocks - 1
	raw, err := t.leafNode(last / t.leafEntries)
	if err != nil {
		r.add("authentication tree: %v", err)
		return
	}
	for slot := last%t.leafEntries + 1; slot < t.leafEntries; slot++ {
		for _, b := range raw[slot*uint64(t.leafDigestLen) : (slot+1)*uint64(t.leafDigestLen)] {
			if b != 0 {
				r.add("authentication tree: leaf entry for data block %d beyond the image end is not zero", last-last%t.leafEntries+slot)
				break
			}
		}
	}
}

// verifyAllocations collects every referenced extent, checks that no two
// overlap, and compares them with the bitmap word by word. It holds the
// extents, not a per-block map, so it runs in memory proportional to the
// number of files and index nodes.
func (f *FS) verifyAllocations(r *VerifyReport) {
	type owned struct {
		e    disk.Extent
		what string
	}
	var refs []owned
	mark := func(e disk.Extent, what string) {
		if e.Start >= f.imageAllocBlocks || e.Len == 0 {
			return
		}
		e.Len = min(e.Len, f.imageAllocBlocks-e.Start)
		refs = append(refs, owned{e, what})
	}
	mark(disk.Extent{Start: 0, Len: f.headerAllocs}, "the image header")
	mark(f.journalHead, "the journal log head")
	for _, e := range f.treeExtents {
		mark(e, "the authentication tree")
	}
	for _, e := range f.bitmapExtents {
		mark(e, "the allocation bitmap")
	}
	for _, e := range f.auxExtents {
		mark(e, "aux metadata")
	}
	for _, e := range f.bootChains {
		mark(e, "an extents list of the tree or bitmap")
	}
	err := f.index.walk(func(e disk.LeafEntry) error {
		if e.Inode <= inoIndexRoot {
			return nil // marked above, or by the node walk for the index root
		}
		data, chainExt, err := f.entryExtents(e)
		if err != nil {
			r.add("inode %d: %v", e.Inode, err)
			return nil
		}
		what := fmt.Sprintf("inode %d", e.Inode)
		for _, x := range chainExt {
			mark(x, what+" extents list")
		}
		for _, x := range data {
			mark(x, what)
		}
		return nil
	}, func(start, allocs uint64) {
		mark(disk.Extent{Start: start, Len: allocs}, "the inode index")
	})
	if err != nil {
		r.add("inode index: %v", err)
	}
	slices.SortStableFunc(refs, func(a, b owned) int { return cmpU64(a.e.Start, b.e.Start) })
	// Overlaps: each extent against the furthest-reaching one before it.
	var reach uint64
	var reacher string
	for i, x := range refs {
		if i > 0 && x.e.Start < reach {
			r.add("allocation block %d used by both %s and %s", x.e.Start, reacher, x.what)
		}
		if end := x.e.Start + x.e.Len; end > reach {
			reach, reacher = end, x.what
		}
	}
	// Bitmap against references, one word at a time; refs is sorted, so a
	// moving index finds the extents that reach each word.
	first := 0
	for i := uint64(0); i*64 < f.imageAllocBlocks; i++ {
		lo, hi := i*64, min(i*64+64, f.imageAllocBlocks)
		for first < len(refs) && refs[first].e.Start+refs[first].e.Len <= lo {
			first++
		}
		var used uint64
		owners := map[uint64]string{}
		for k := first; k < len(refs) && refs[k].e.Start < hi; k++ {
			a, b := max(refs[k].e.Start, lo), min(refs[k].e.Start+refs[k].e.Len, hi)
			if a >= b {
				continue
			}
			m := lowBits(b-a) << (a - lo)
			if m&^used != 0 {
				for x := a; x < b; x++ {
					if _, ok := owners[x]; !ok {
						owners[x] = refs[k].what
					}
				}
			}
			used |= m
		}
		alloc, err := f.bitmap.word(i)
		if err != nil {
			r.add("allocation bitmap: %v", err)
			return
		}
		if d := used &^ alloc; d != 0 {
			for x := lo; x < hi; x++ {
				if d&(1<<(x-lo)) != 0 {
					r.add("allocation block %d is used by %s but free in the allocation bitmap", x, owners[x])
				}
			}
		}
		if d := alloc &^ used; d != 0 {
			for x := lo; x < hi; x++ {
				if d&(1<<(x-lo)) != 0 {
					r.add("allocation block %d is allocated but nothing references it (leaked)", x)
				}
			}
		}
	}
}

func (f *FS) verifyFiles(ctx context.Context, r *VerifyReport) {
	list, err := f.inodes()
	if err != nil {
		r.add("inode index: %v", err)
	}
	for _, ino := range list {
		if ctx.Err() != nil {
			return
		}
		s, err := f.resolveFile(ino.Ino)
		if err != nil {
			r.add("%v", err) // names the inode already
			continue
		}
		n, err := f.streamFile(ino.Ino, &s, io.Discard)
		if err != nil {
			r.add("inode %d: %v", ino.Ino, err)
			continue
		}
		r.Inodes++
		r.Bytes += n
	}
}
