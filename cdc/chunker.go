package cdc

import (
	"fmt"
	"io"
)

// Chunker splits the bytes of an io.Reader into the same chunks as Cut
// splits them in memory, whatever the sizes of the reader's reads. It keeps
// a buffer of about twice the maximum chunk size. A Chunker is not safe for
// concurrent use.
type Chunker struct {
	r          io.Reader
	c          *cutter
	err        error // sticky: invalid options, a read error, or io.EOF when drained
	buf        []byte
	start, end int   // buf[start:end] is read but not yet returned
	eof        bool  // r has returned io.EOF
	offset     int64 // input offset of buf[start]
}

// minBuffer is the smallest buffer a Chunker allocates, so that small
// maximum sizes do not mean many small reads.
const minBuffer = 64 << 10

// maxEmptyReads is how many (0, nil) reads in a row a Chunker accepts before
// it gives up with io.ErrNoProgress, as bufio does.
const maxEmptyReads = 100

// NewChunker returns a Chunker over r. Invalid options are reported (wrapping
// ErrInvalidOptions) by the first call to Next.
func NewChunker(r io.Reader, opts Options) *Chunker {
	c, err := newCutter(opts)
	if err != nil {
		return &Chunker{err: err}
	}
	return &Chunker{r: r, c: c, buf: make([]byte, max(2*opts.Max, minBuffer))}
}

// Next returns the next chunk and its bytes. The bytes alias the Chunker's
// buffer and are valid only until the next call. At the end of the input
// Next returns io.EOF; a read error other than io.EOF is returned as is,
// and every later call returns the same error.
func (k *Chunker) Next() (Chunk, []byte, error) {
	if k.err != nil {
		return Chunk{}, nil, k.err
	}
	if err := k.fill(); err != nil {
		k.err = err
		return Chunk{}, nil, err
	}
	if k.start == k.end {
		k.err = io.EOF
		return Chunk{}, nil, io.EOF
	}
	n, h := k.c.cut(k.buf[k.start:k.end])
	ch := Chunk{Offset: k.offset, Length: n, Hash: h}
	data := k.buf[k.start : k.start+n : k.start+n]
	k.start += n
	k.offset += int64(n)
	return ch, data, nil
}

// fill reads until at least max bytes are buffered or the input has ended:
// then cut sees exactly what it would see in the whole input.
func (k *Chunker) fill() error {
	empty := 0
	for !k.eof && k.end-k.start < k.c.max {
		if len(k.buf)-k.end < k.c.max-(k.end-k.start) {
			k.end = copy(k.buf, k.buf[k.start:k.end])
			k.start = 0
		}
		n, err := k.r.Read(k.buf[k.end:])
		if n < 0 || n > len(k.buf)-k.end {
			return fmt.Errorf("cdc: reader returned invalid count %d", n)
		}
		k.end += n
		switch {
		case err == io.EOF:
			k.eof = true
		case err != nil:
			return err
		case n == 0:
			if empty++; empty >= maxEmptyReads {
				return io.ErrNoProgress
			}
		default:
			empty = 0
		}
	}
	return nil
}
