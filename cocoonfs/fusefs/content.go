package fusefs

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/sealfs/sealfs/cocoonfs"
)

// How a file's uncommitted contents are held (see the package doc,
// "Writing"):
//
//   - streaming: an open staged writer holds bytes [0, size); appends go
//     straight to it, in bounded memory, whatever the file's size;
//   - overlay: a base — the committed file, or a closed staged writer this
//     content owns — below baseLen, dirty pages over it, zeros elsewhere.
//
// A file starts in overlay mode over its committed contents (or over
// nothing). Appends collect in pages until streamAfter bytes are dirty,
// then the file so far is copied into a staged writer that keeps streaming.
// Other writes collect in pages until maxDirty bytes are dirty, then the
// merged file is written to a staged writer that becomes the new base. So
// memory per file stays below maxDirty plus a writer's segment buffers, and
// nothing but ciphertext in the image's free space ever leaves the process.
const (
	pageSize = 4096
	// streamAfter is how many appended bytes a file keeps in memory before
	// it moves to a staged writer; smaller files are staged when committed.
	streamAfter = 256 << 10
	// maxDirty bounds the dirty pages of one file.
	maxDirty = 8 << 20
	// copyChunk is the buffer that merges base and pages into a writer.
	copyChunk = 1 << 20
)

// errLost is the sticky error of a content whose uncommitted changes were
// lost: a commit took its staged writer and failed.
var errLost = errors.New("uncommitted changes lost when a commit failed")

// content is what one file holds while it is open or changed: shared by
// all of its handles. It is not safe for concurrent use, except readAt,
// which may run concurrently with other readAt calls when !streaming().
type content struct {
	fsys  *cocoonfs.FS
	ino   uint64 // the inode number whose key staged writers use
	flags uint32

	size int64

	baseKind baseKind
	baseLen  int64                // base bytes that are part of the file (a truncate cuts the rest)
	staged   *cocoonfs.FileWriter // baseStaged: a closed staged writer this content owns
	stagedMu sync.Mutex           // serializes reads of staged (FileWriter is not safe for concurrent use)
	fileMu   sync.Mutex           // guards file
	file     *cocoonfs.File       // baseCommitted: the committed file, opened on first read

	stream *cocoonfs.FileWriter // open staged writer holding [0, size), or nil
	pages  map[int64][]byte     // page number → the page's bytes (zeros past size)

	dirty bool  // differs from what the image holds under ino
	err   error // sticky: see errLost
}

type baseKind uint8

const (
	baseNone baseKind = iota
	baseCommitted
	baseStaged
)

// newCommittedContent is the committed file ino of size bytes, unchanged.
func newCommittedContent(fsys *cocoonfs.FS, ino uint64, flags uint32, size int64) *content {
	return &content{fsys: fsys, ino: ino, flags: flags, size: size, baseKind: baseCommitted, baseLen: size}
}

// newEmptyContent is a file that the image does not hold yet: empty, and
// dirty, so that its first commit creates it.
func newEmptyContent(fsys *cocoonfs.FS, ino uint64) *content {
	return &content{fsys: fsys, ino: ino, dirty: true}
}

func (c *content) streaming() bool { return c.stream != nil }

func (c *content) dirtyBytes() int64 { return int64(len(c.pages)) * pageSize }

// baseFile returns the committed file, opening it on first use.
func (c *content) baseFile() (*cocoonfs.File, error) {
	c.fileMu.Lock()
	defer c.fileMu.Unlock()
	if c.file == nil {
		f, err := c.fsys.OpenFile(c.ino)
		if err != nil {
			return nil, err
		}
		c.file = f
	}
	return c.file, nil
}

// readBase fills p with the file's bytes at off from the base, zeros past
// baseLen; off+len(p) <= size.
func (c *content) readBase(p []byte, off int64) error {
	n := 0
	if off < c.baseLen {
		n = int(min(int64(len(p)), c.baseLen-off))
		var got int
		var err error
		switch c.baseKind {
		case baseCommitted:
			var f *cocoonfs.File
			if f, err = c.baseFile(); err == nil {
				got, err = f.ReadAt(p[:n], off)
			}
		case baseStaged:
			c.stagedMu.Lock()
			got, err = c.staged.ReadAt(p[:n], off)
			c.stagedMu.Unlock()
		default:
			return fmt.Errorf("BUG: inode %d: %d base bytes without a base", c.ino, c.baseLen)
		}
		if got == n && errors.Is(err, io.EOF) {
			err = nil
		}
		if err == nil && got < n {
			err = fmt.Errorf("inode %d: base ended after %d of %d bytes at %d: %w", c.ino, got, n, off, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return err
		}
	}
	clear(p[n:])
	return nil
}

// readAt reads the file's bytes at off; like io.ReaderAt, a read that
// reaches the end returns io.EOF. The content must not be streaming
// (closeStream first).
func (c *content) readAt(p []byte, off int64) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.stream != nil {
		return 0, fmt.Errorf("BUG: inode %d: read while streaming", c.ino)
	}
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d", off)
	}
	if off >= c.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), c.size-off))
	if len(c.pages) == 0 {
		if err := c.readBase(p[:n], off); err != nil {
			return 0, err
		}
	} else {
		// Runs of pages without a dirty copy are read from the base in one
		// call each.
		runStart := -1
		for done := 0; done < n; {
			pos := off + int64(done)
			pg := pos / pageSize
			k := int(min(int64(n-done), (pg+1)*pageSize-pos))
			if page, ok := c.pages[pg]; ok {
				if runStart >= 0 {
					if err := c.readBase(p[runStart:done], off+int64(runStart)); err != nil {
						return 0, err
					}
					runStart = -1
				}
				copy(p[done:done+k], page[pos-pg*pageSize:])
			} else if runStart < 0 {
				runStart = done
			}
			done += k
		}
		if runStart >= 0 {
			if err := c.readBase(p[runStart:n], off+int64(runStart)); err != nil {
				return 0, err
			}
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// writeAt writes p at off, growing the file if needed (a gap reads as
// zeros).
func (c *content) writeAt(p []byte, off int64) error {
	if c.err != nil {
		return c.err
	}
	if off < 0 {
		return fmt.Errorf("negative offset %d", off)
	}
	if len(p) == 0 {
		return nil
	}
	appending := off == c.size
	if c.stream != nil {
		if appending {
			if _, err := c.stream.Write(p); err != nil {
				return c.lose(err)
			}
			c.size += int64(len(p))
			c.dirty = true
			return nil
		}
		if err := c.closeStream(); err != nil {
			return err
		}
	}
	grows := c.dirtyBytes() + int64(len(p)) + 2*pageSize
	switch {
	case appending && grows > streamAfter:
		// Keep streaming from here on: a file written from its start, or
		// appended to, goes to the image as it comes.
		if err := c.consolidate(true); err != nil {
			return err
		}
		if _, err := c.stream.Write(p); err != nil {
			return c.lose(err)
		}
		c.size += int64(len(p))
		c.dirty = true
		return nil
	case grows > maxDirty && len(c.pages) > 0:
		if err := c.consolidate(false); err != nil {
			return err
		}
	}
	return c.writePages(p, off)
}

// writePages copies p into the dirty pages at off.
func (c *content) writePages(p []byte, off int64) error {
	if c.pages == nil {
		c.pages = map[int64][]byte{}
	}
	for done := 0; done < len(p); {
		pos := off + int64(done)
		pg := pos / pageSize
		start := pg * pageSize
		k := int(min(int64(len(p)-done), start+pageSize-pos))
		page, ok := c.pages[pg]
		if !ok {
			page = make([]byte, pageSize)
			// Keep the bytes of the page this write does not cover.
			if whole := pos == start && k == pageSize; !whole && start < c.size {
				if err := c.readBase(page[:min(pageSize, c.size-start)], start); err != nil {
					return err
				}
			}
		}
		copy(page[pos-start:], p[done:done+k])
		c.pages[pg] = page
		done += k
	}
	c.size = max(c.size, off+int64(len(p)))
	c.dirty = true
	return nil
}

// truncate sets the file's size; bytes past the old size read as zeros.
func (c *content) truncate(size int64) error {
	if c.err != nil {
		return c.err
	}
	if size < 0 {
		return fmt.Errorf("negative size %d", size)
	}
	if size == c.size {
		return nil
	}
	if size == 0 {
		c.discard()
		c.size, c.dirty = 0, true
		return nil
	}
	if c.stream != nil {
		if err := c.closeStream(); err != nil {
			return err
		}
	}
	if size < c.size {
		for pg, page := range c.pages {
			switch start := pg * pageSize; {
			case start >= size:
				delete(c.pages, pg)
			case start+pageSize > size:
				clear(page[size-start:])
			}
		}
		c.baseLen = min(c.baseLen, size)
	}
	c.size, c.dirty = size, true
	return nil
}

// closeStream ends the streaming writer; it becomes the base.
func (c *content) closeStream() error {
	w := c.stream
	c.stream = nil
	if err := w.Close(); err != nil {
		w.Abort()
		return c.lose(err)
	}
	c.setStagedBase(w)
	return nil
}

// setStagedBase makes w (closed, holding the whole file) the base and drops
// the pages.
func (c *content) setStagedBase(w *cocoonfs.FileWriter) {
	if c.staged != nil && c.staged != w {
		c.staged.Abort()
	}
	c.staged, c.baseKind, c.baseLen, c.pages = w, baseStaged, c.size, nil
}

// copyInto writes the whole file to w, merging base, pages and zeros.
func (c *content) copyInto(w *cocoonfs.FileWriter) error {
	buf := make([]byte, min(copyChunk, max(c.size, 1)))
	for off := int64(0); off < c.size; {
		n := int(min(int64(len(buf)), c.size-off))
		if _, err := c.readAt(buf[:n], off); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		off += int64(n)
	}
	return nil
}

// consolidate writes the merged file to a new staged writer and makes it
// the base (closed) or, with keepOpen, the stream. On failure nothing
// changes.
func (c *content) consolidate(keepOpen bool) error {
	w, err := c.fsys.Stage(c.ino, c.flags)
	if err != nil {
		return err
	}
	if err := c.copyInto(w); err != nil {
		w.Abort()
		return err
	}
	if keepOpen {
		if c.staged != nil {
			c.staged.Abort()
		}
		c.staged, c.baseKind, c.baseLen, c.pages = nil, baseNone, 0, nil
		c.stream = w
		return nil
	}
	if err := w.Close(); err != nil {
		w.Abort()
		return err
	}
	c.setStagedBase(w)
	return nil
}

// materialize returns a closed staged writer holding the whole file,
// encrypted for inode ino. own reports that it is the content's own base
// (a commit that takes it and fails loses it: see committed/failed).
func (c *content) materialize(ino uint64) (w *cocoonfs.FileWriter, own bool, err error) {
	if c.err != nil {
		return nil, false, c.err
	}
	if c.stream != nil {
		if err := c.closeStream(); err != nil {
			return nil, false, err
		}
	}
	if ino == c.ino && c.baseKind == baseStaged && len(c.pages) == 0 && c.baseLen == c.size && c.staged.Size() == c.size {
		return c.staged, true, nil
	}
	w, err = c.fsys.Stage(ino, c.flags)
	if err != nil {
		return nil, false, err
	}
	if err := c.copyInto(w); err != nil {
		w.Abort()
		return nil, false, err
	}
	if err := w.Close(); err != nil {
		w.Abort()
		return nil, false, err
	}
	return w, false, nil
}

// committed records that the image now holds the file as inode ino: the
// content is clean, over the committed file.
func (c *content) committed(ino uint64) {
	if c.stream != nil {
		c.stream.Abort()
		c.stream = nil
	}
	if c.staged != nil {
		c.staged.Abort() // a no-op if the commit adopted it
		c.staged = nil
	}
	c.fileMu.Lock()
	c.file = nil
	c.fileMu.Unlock()
	c.ino, c.baseKind, c.baseLen, c.pages, c.dirty = ino, baseCommitted, c.size, nil, false
}

// failed records a commit that did not happen: a writer the content owned
// was adopted by the transaction, which dropped it, so the changes are lost.
func (c *content) failed(w *cocoonfs.FileWriter, own bool, err error) {
	if !own {
		w.Abort()
		return
	}
	c.lose(err)
}

// lose makes the content fail from now on: its uncommitted changes cannot
// be read back any more.
func (c *content) lose(err error) error {
	c.discard()
	if c.err == nil {
		c.err = fmt.Errorf("inode %d: %w: %w", c.ino, errLost, err)
	}
	return c.err
}

// freeze makes the content independent of the committed file, which is
// about to be removed or replaced while handles still use it.
func (c *content) freeze() error {
	if c.err != nil || c.stream != nil || c.baseKind != baseCommitted || c.baseLen == 0 {
		return nil
	}
	return c.consolidate(false)
}

// discard drops every uncommitted byte and frees the staged blocks.
func (c *content) discard() {
	if c.stream != nil {
		c.stream.Abort()
		c.stream = nil
	}
	if c.staged != nil {
		c.staged.Abort()
		c.staged = nil
	}
	c.baseKind, c.baseLen, c.pages = baseNone, 0, nil
}
