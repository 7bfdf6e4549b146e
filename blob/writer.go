package blob

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sealfs/sealfs/blob/delivery"
	"github.com/sealfs/sealfs/merkle"
)

// writeBuffer batches file writes; hashing works on the caller's slices.
const writeBuffer = 1 << 20

// spillMemory is how many bytes of level-0 hashes (those of 256 MiB of
// data) an install keeps in memory before it moves them to a file. A
// variable for tests.
var spillMemory = 1 << 20

// Writer installs one blob. It is an io.WriteCloser for one goroutine: the
// bytes are hashed as they are written and staged in a temporary file;
// Close verifies them against the name and makes the blob visible, Abort
// discards them. After any error the Writer stays failed and nothing is
// installed.
type Writer struct {
	s     *Store
	name  merkle.Digest
	known bool  // name given to Create; otherwise computed (Put)
	size  int64 // declared size; -1 when unknown (Put)
	f     *os.File
	bw    *bufio.Writer
	b     *merkle.FuchsiaStream
	spill *leafSpill // the level-0 hashes b computes, until Close writes the tree
	n     int64
	err   error // sticky
}

// Create starts installing the blob name of size bytes. Errors:
// fs.ErrExist if it is already installed; fs.ErrInvalid for a negative
// size. The caller must Close or Abort the Writer.
func (s *Store) Create(name merkle.Digest, size int64) (*Writer, error) {
	if size < 0 {
		return nil, fmt.Errorf("blob %s: negative size %d: %w", name, size, fs.ErrInvalid)
	}
	if _, err := os.Lstat(s.path(name)); err == nil {
		return nil, fmt.Errorf("blob %s: %w", name, fs.ErrExist)
	}
	w, err := s.newWriter(size)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", name, err)
	}
	w.name, w.known = name, true
	return w, nil
}

// newWriter creates and locks the temporary file. The lock keeps Open's
// cleanup away from it; if a cleanup removed the file between its creation
// and the lock, the file is made again.
func (s *Store) newWriter(size int64) (*Writer, error) {
	for range 10 {
		f, err := os.CreateTemp(s.tmp, tmpPrefix+"*")
		if err != nil {
			return nil, err
		}
		if err := lockFile(f, true); err != nil {
			f.Close()
			os.Remove(f.Name())
			return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		fi, ferr := f.Stat()
		pi, perr := os.Stat(f.Name())
		if ferr != nil || perr != nil || !os.SameFile(fi, pi) {
			f.Close() // removed by a cleanup before we locked it
			continue
		}
		hs := size
		if hs < 0 {
			hs = 0 // rewritten by commit
		}
		w := &Writer{s: s, size: size, f: f, spill: &leafSpill{dir: s.tmp}}
		w.b = merkle.NewFuchsiaStream(w.spill)
		// The header goes straight to the file, so the buffer starts empty
		// and large writes bypass it (bufio copies only small ones).
		if _, err := f.Write(header{size: hs, treeSize: merkle.FuchsiaTreeSize(hs)}.encode()); err != nil {
			w.discard()
			return nil, err
		}
		w.bw = bufio.NewWriterSize(f, writeBuffer)
		return w, nil
	}
	return nil, errors.New("cannot create a temporary file in the store: it keeps disappearing")
}

// Write hashes and stages p. Writing past the declared size fails with
// ErrSizeMismatch.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.size >= 0 && int64(len(p)) > w.size-w.n {
		return 0, w.fail(fmt.Errorf("%s: more than the declared %d bytes: %w", w.label(), w.size, ErrSizeMismatch))
	}
	if _, err := w.b.Write(p); err != nil {
		return 0, w.fail(fmt.Errorf("%s: %w", w.label(), err))
	}
	if _, err := w.bw.Write(p); err != nil {
		return 0, w.fail(fmt.Errorf("%s: %w", w.label(), err))
	}
	w.n += int64(len(p))
	return len(p), nil
}

// fail records err, discards the staged bytes and returns err.
func (w *Writer) fail(err error) error {
	w.err = err
	w.discard()
	return err
}

func (w *Writer) discard() {
	if w.f != nil {
		w.f.Close()
		os.Remove(w.f.Name())
		w.f = nil
	}
	w.spill.close()
}

// Abort discards the staged bytes; nothing is installed. It is a no-op on
// a Writer that is already closed, aborted or failed.
func (w *Writer) Abort() {
	if w.err == nil {
		w.fail(fmt.Errorf("%s: install aborted: %w", w.label(), ErrClosed))
	}
}

// Close verifies the bytes against the name and installs the blob.
// Errors: ErrSizeMismatch if fewer bytes than declared were written;
// ErrIntegrity if they do not hash to the name; fs.ErrExist if another
// writer installed the same blob first. Only a nil error means this call
// installed the blob; on any error nothing of this Writer is visible.
func (w *Writer) Close() error {
	_, err := w.commit()
	return err
}

func (w *Writer) commit() (merkle.Digest, error) {
	if w.err != nil {
		return w.name, w.err
	}
	defer func() {
		if w.err == nil {
			w.err = fmt.Errorf("%s: %w", w.label(), ErrClosed)
		}
		w.discard()
	}()
	if w.size >= 0 && w.n != w.size {
		return w.name, w.fail(fmt.Errorf("%s: %d of the declared %d bytes written: %w", w.label(), w.n, w.size, ErrSizeMismatch))
	}
	root, upper, err := w.b.Finish()
	if err != nil {
		return w.name, w.fail(fmt.Errorf("%s: %w", w.label(), err))
	}
	if !w.known {
		w.name = root
	} else if root != w.name {
		return w.name, w.fail(fmt.Errorf("blob %s: the bytes hash to %s: %w", w.name, root, ErrIntegrity))
	}
	if err := w.writeTree(upper); err != nil {
		return w.name, w.fail(fmt.Errorf("blob %s: %w", w.name, err))
	}
	if err := w.bw.Flush(); err != nil {
		return w.name, w.fail(fmt.Errorf("blob %s: %w", w.name, err))
	}
	if w.size < 0 {
		h := header{size: w.n, treeSize: merkle.FuchsiaTreeSize(w.n)}
		if _, err := w.f.WriteAt(h.encode(), 0); err != nil {
			return w.name, w.fail(fmt.Errorf("blob %s: %w", w.name, err))
		}
	}
	if err := w.install(); err != nil {
		return w.name, w.fail(fmt.Errorf("blob %s: %w", w.name, err))
	}
	return w.name, nil
}

// writeTree appends the tree after the data: the level-0 hashes from the
// spill, zero-padded to whole 8 KiB blocks, then the upper levels (the
// layout of merkle.FuchsiaBuilder.Finish). A blob of one block has no tree.
func (w *Writer) writeTree(upper []byte) error {
	want := merkle.FuchsiaTreeSize(w.n)
	if want == 0 {
		return nil
	}
	n, err := w.spill.writeTo(w.bw)
	if err != nil {
		return err
	}
	pad := (merkle.FuchsiaBlockSize - n%merkle.FuchsiaBlockSize) % merkle.FuchsiaBlockSize
	if _, err := w.bw.Write(make([]byte, pad)); err != nil {
		return err
	}
	if _, err := w.bw.Write(upper); err != nil {
		return err
	}
	if got := n + pad + int64(len(upper)); got != want {
		panic(fmt.Sprintf("blob: BUG: wrote a %d-byte tree for %d bytes, want %d (merkle.FuchsiaStream and FuchsiaTreeSize disagree)", got, w.n, want))
	}
	return nil
}

// install makes the staged file durable and links it under its name. The
// link fails if the name exists, so a blob is never replaced.
func (w *Writer) install() error {
	if err := w.f.Sync(); err != nil {
		return err
	}
	if err := os.Link(w.f.Name(), w.s.path(w.name)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fs.ErrExist
		}
		return unwrapPath(err)
	}
	if err := syncDir(w.s.blobs); err != nil {
		// Not known to be durable: take it back, so that an error always
		// means "not installed".
		os.Remove(w.s.path(w.name))
		return err
	}
	return nil // the temporary link goes in discard; it needs no sync
}

// Put installs the bytes of r as a new blob and returns its name, computed
// as the bytes stream. Errors: fs.ErrExist (with the name) if the blob was
// already installed, plus any error reading r.
func (s *Store) Put(r io.Reader) (merkle.Digest, error) {
	w, err := s.newWriter(-1)
	if err != nil {
		return merkle.Digest{}, fmt.Errorf("install blob: %w", err)
	}
	if _, err := io.Copy(w, r); err != nil {
		return merkle.Digest{}, w.abortWith(err)
	}
	return w.commit()
}

// InstallDelivery installs the blob name from an RFC-0207 delivery blob
// read from r: the payload is decoded as it streams and verified against
// name like any install. Errors: delivery.ErrCorrupt for a malformed or
// truncated delivery blob, and those of Create and Close.
func (s *Store) InstallDelivery(r io.Reader, name merkle.Digest) error {
	d, err := delivery.NewDecoder(r)
	if err != nil {
		return fmt.Errorf("blob %s: %w", name, err)
	}
	w, err := s.Create(name, d.Size())
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, d); err != nil {
		return w.abortWith(err)
	}
	return w.Close()
}

// PutDelivery is Put for a delivery blob: it decodes r, installs the blob
// and returns its name.
func (s *Store) PutDelivery(r io.Reader) (merkle.Digest, error) {
	d, err := delivery.NewDecoder(r)
	if err != nil {
		return merkle.Digest{}, fmt.Errorf("install blob: %w", err)
	}
	w, err := s.newWriter(d.Size())
	if err != nil {
		return merkle.Digest{}, fmt.Errorf("install blob: %w", err)
	}
	if _, err := io.Copy(w, d); err != nil {
		return merkle.Digest{}, w.abortWith(err)
	}
	return w.commit()
}

// abortWith aborts after a failed copy into w: err is the Writer's own
// (already labelled) or the source's.
func (w *Writer) abortWith(err error) error {
	if w.err != nil {
		return w.err
	}
	w.fail(err)
	return fmt.Errorf("%s: %w", w.label(), err)
}

// label names the blob in messages; Put does not know the name yet.
func (w *Writer) label() string {
	if w.known {
		return "blob " + w.name.String()
	}
	return "install blob"
}

// tempFiles lists the store's temporary files (for tests).
func (s *Store) tempFiles() ([]string, error) {
	ents, err := os.ReadDir(s.tmp)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		names = append(names, filepath.Join(s.tmp, e.Name()))
	}
	return names, nil
}

// leafSpill keeps the level-0 hashes of an install: in memory up to
// spillMemory bytes, then in a temporary file of the store's tmp directory,
// unlinked as soon as it is made (so nothing is left behind, whatever
// happens). Writes are buffered; writeTo copies everything written.
type leafSpill struct {
	dir string
	mem []byte
	f   *os.File
	bw  *bufio.Writer
	n   int64
}

func (s *leafSpill) Write(p []byte) (int, error) {
	if s.f == nil && len(s.mem)+len(p) > spillMemory {
		f, err := os.CreateTemp(s.dir, "spill-*")
		if err != nil {
			return 0, fmt.Errorf("spill the Merkle tree: %w", err)
		}
		os.Remove(f.Name())
		s.f, s.bw = f, bufio.NewWriterSize(f, 64<<10)
		if _, err := s.bw.Write(s.mem); err != nil {
			return 0, fmt.Errorf("spill the Merkle tree: %w", err)
		}
		s.mem = nil
	}
	if s.f == nil {
		s.mem = append(s.mem, p...)
	} else if _, err := s.bw.Write(p); err != nil {
		return 0, fmt.Errorf("spill the Merkle tree: %w", err)
	}
	s.n += int64(len(p))
	return len(p), nil
}

// writeTo copies what was written to w and returns its length.
func (s *leafSpill) writeTo(w io.Writer) (int64, error) {
	if s.f == nil {
		_, err := w.Write(s.mem)
		return s.n, err
	}
	if err := s.bw.Flush(); err != nil {
		return 0, fmt.Errorf("spill the Merkle tree: %w", err)
	}
	n, err := io.Copy(w, io.NewSectionReader(s.f, 0, s.n))
	if err == nil && n != s.n {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return n, fmt.Errorf("read back the Merkle tree spill: %w", err)
	}
	return n, nil
}

func (s *leafSpill) close() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
	s.mem = nil
}
