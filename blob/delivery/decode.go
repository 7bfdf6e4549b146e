package delivery

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"

	"github.com/klauspost/compress/zstd"

	"github.com/sealfs/sealfs/errs"
)

// corruptf returns an error wrapping ErrCorrupt that names the offset (in
// the delivery blob) of what is wrong.
func corruptf(off uint64, format string, args ...any) error {
	return fmt.Errorf("%w at offset %d: %s", ErrCorrupt, off, fmt.Sprintf(format, args...))
}

// unsupportedf is corruptf for a well-formed feature this package does not
// implement; it also wraps errs.ErrUnsupported.
func unsupportedf(off uint64, format string, args ...any) error {
	return fmt.Errorf("%w at offset %d: %s: %w", ErrCorrupt, off, fmt.Sprintf(format, args...), errs.ErrUnsupported)
}

// truncated reports input that ended at off while what was still expected.
func truncated(off uint64, what string) error {
	return fmt.Errorf("%w at offset %d: truncated %s: %w", ErrCorrupt, off, what, io.ErrUnexpectedEOF)
}

// countingReader counts the bytes read and remembers whether the source
// ended, so errors can name offsets and tell truncation from corruption.
type countingReader struct {
	r   io.Reader
	n   uint64
	eof bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint64(n)
	if err == io.EOF {
		c.eof = true
	}
	return n, err
}

// Decoder decodes one delivery blob from a stream. It checks the headers
// and the seek table when created and every chunk as it is read; Read
// returns an error wrapping ErrCorrupt rather than any byte that fails a
// check: a chunk of up to 4 MiB (every chunk of a blob under 4 GiB) is
// returned only after it decoded to exactly its seek-table size and passed
// its zstd content checksum, when present. Larger chunks are streamed, so
// some of their bytes can be returned before a failure later in the same
// chunk is reported; the error then comes before io.EOF. A Decoder is not
// safe for concurrent use.
type Decoder struct {
	r          countingReader
	size       int64
	compressed bool
	payloadLen uint64

	// compressed payloads
	entries    []seekEntry
	archivePos uint64 // payload bytes consumed so far
	next       int    // index of the next entry to start

	out    []byte // buffered chunk being returned
	outPos int
	cbuf   []byte // compressed frame of a buffered chunk

	zr        *zstd.Decoder // stream decoder for chunks over maxBufferedChunk
	zlr       io.LimitedReader
	zEntry    int
	zLeft     uint64 // decoded bytes of the streamed chunk still to return
	streaming bool
	bufLimit  uint64 // chunks up to this size are decoded in one piece

	// uncompressed payloads
	rawLeft uint64

	err error // sticky: io.EOF after the end, or the first failure
}

// NewDecoder reads and validates the delivery header and, for a compressed
// blob, the archive header and the whole seek table, from r. r must end
// where the delivery blob ends: trailing bytes are reported as corruption at
// the end of Read.
func NewDecoder(r io.Reader) (*Decoder, error) {
	d := &Decoder{r: countingReader{r: r}, bufLimit: maxBufferedChunk}
	if err := d.readHeaders(); err != nil {
		return nil, err
	}
	return d, nil
}

// Size is the decompressed size of the blob, from the headers.
func (d *Decoder) Size() int64 { return d.size }

// Compressed reports whether the payload is a chunked archive.
func (d *Decoder) Compressed() bool { return d.compressed }

func (d *Decoder) readFull(p []byte, what string) error {
	off := d.r.n
	_, err := io.ReadFull(&d.r, p)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return truncated(d.r.n, what)
	}
	if err != nil {
		return fmt.Errorf("delivery: reading %s at offset %d: %w", what, off, err)
	}
	return nil
}

func (d *Decoder) readHeaders() error {
	var h [HeaderSize]byte
	if err := d.readFull(h[:], "delivery header"); err != nil {
		return err
	}
	if !bytes.Equal(h[0:4], deliveryMagic[:]) {
		return corruptf(0, "bad magic %x, want %x", h[0:4], deliveryMagic[:])
	}
	switch t := binary.LittleEndian.Uint32(h[4:8]); t {
	case type1:
	case 2, 3:
		return unsupportedf(4, "delivery blob type %d (only type 1 is implemented)", t)
	default:
		return corruptf(4, "invalid delivery blob type %d", t)
	}
	if hl := binary.LittleEndian.Uint32(h[8:12]); hl != HeaderSize {
		return corruptf(8, "header length %d, type 1 requires %d", hl, HeaderSize)
	}
	stored := binary.LittleEndian.Uint32(h[20:24])
	binary.LittleEndian.PutUint32(h[20:24], 0)
	if c := crc32.ChecksumIEEE(h[:]); c != stored {
		return corruptf(20, "header checksum %#08x, computed %#08x", stored, c)
	}
	flags := binary.LittleEndian.Uint32(h[24:28])
	if flags&^validFlags != 0 {
		return corruptf(24, "unknown flags %#x", flags&^validFlags)
	}
	d.payloadLen = binary.LittleEndian.Uint64(h[12:20])
	d.compressed = flags&flagCompressed != 0
	if d.payloadLen > math.MaxInt64-HeaderSize {
		return corruptf(12, "payload length %d out of range", d.payloadLen)
	}
	if !d.compressed {
		d.size = int64(d.payloadLen)
		d.rawLeft = d.payloadLen
		return nil
	}
	return d.readSeekTable()
}

func (d *Decoder) readSeekTable() error {
	const base = HeaderSize // archive offsets are relative to the payload
	if d.payloadLen < archiveHeaderSize {
		return corruptf(12, "payload length %d is too short for a chunked archive header (%d bytes)", d.payloadLen, archiveHeaderSize)
	}
	var ah [archiveHeaderSize]byte
	if err := d.readFull(ah[:], "archive header"); err != nil {
		return err
	}
	if !bytes.Equal(ah[0:8], archiveMagic[:]) {
		return corruptf(base, "bad archive magic %x, want %x", ah[0:8], archiveMagic[:])
	}
	switch v := binary.LittleEndian.Uint16(ah[8:10]); v {
	case archiveVersion:
	case 3:
		return unsupportedf(base+8, "chunked archive version %d (only version 2 is implemented)", v)
	default:
		return corruptf(base+8, "invalid chunked archive version %d", v)
	}
	n := binary.LittleEndian.Uint32(ah[12:16])
	if n > maxEntries {
		return corruptf(base+12, "%d seek table entries, at most %d allowed", n, maxEntries)
	}
	hsz := uint64(archiveHeaderSize + seekEntrySize*n)
	if hsz > d.payloadLen {
		return corruptf(base+12, "%d seek table entries (%d header bytes) do not fit in payload length %d", n, hsz, d.payloadLen)
	}
	h := make([]byte, hsz)
	copy(h, ah[:])
	if err := d.readFull(h[archiveHeaderSize:], "seek table"); err != nil {
		return err
	}
	if stored, c := binary.LittleEndian.Uint32(h[16:20]), archiveCRC(h); stored != c {
		return corruptf(base+16, "archive header checksum %#08x, computed %#08x", stored, c)
	}

	d.entries = make([]seekEntry, n)
	var dEnd, cEnd uint64
	for i := range d.entries {
		t := h[archiveHeaderSize+seekEntrySize*i:]
		e := seekEntry{
			dOff:  binary.LittleEndian.Uint64(t[0:]),
			dSize: binary.LittleEndian.Uint64(t[8:]),
			cOff:  binary.LittleEndian.Uint64(t[16:]),
			cSize: binary.LittleEndian.Uint64(t[24:]),
		}
		off := uint64(base + archiveHeaderSize + seekEntrySize*i)
		switch {
		case e.dSize == 0 || e.cSize == 0:
			return corruptf(off, "seek table entry %d has a zero size (decompressed %d, compressed %d)", i, e.dSize, e.cSize)
		case e.dOff != dEnd:
			return corruptf(off, "seek table entry %d starts at decompressed offset %d, want %d (contiguous from 0)", i, e.dOff, dEnd)
		case e.cOff < hsz:
			return corruptf(off+16, "seek table entry %d: compressed offset %d lies inside the %d-byte archive header", i, e.cOff, hsz)
		case e.cOff < cEnd:
			return corruptf(off+16, "seek table entry %d: compressed offset %d overlaps the previous frame (ends at %d)", i, e.cOff, cEnd)
		case e.cSize > d.payloadLen || e.cOff > d.payloadLen-e.cSize:
			return corruptf(off+16, "seek table entry %d: frame [%d, +%d) extends past the archive (%d bytes)", i, e.cOff, e.cSize, d.payloadLen)
		case e.dSize > math.MaxInt64-dEnd:
			return corruptf(off+8, "seek table entry %d: decompressed size %d overflows", i, e.dSize)
		case e.dSize/maxZstdRatio > e.cSize || (e.dSize/maxZstdRatio == e.cSize && e.dSize%maxZstdRatio != 0):
			return corruptf(off+8, "seek table entry %d: %d decompressed bytes cannot come from a %d-byte zstd frame (at most %dx)", i, e.dSize, e.cSize, maxZstdRatio)
		}
		dEnd = e.dOff + e.dSize
		cEnd = e.cOff + e.cSize
		d.entries[i] = e
	}
	d.size = int64(dEnd)
	d.archivePos = hsz
	return nil
}

// Read returns decoded bytes. After the last byte it checks the rest of
// the payload and that the input ends, then returns io.EOF. Any violation
// is an error wrapping ErrCorrupt; errors are sticky.
func (d *Decoder) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var err error
	if d.compressed {
		n, err = d.readCompressed(p)
	} else {
		n, err = d.readRaw(p)
	}
	if err != nil {
		d.err = err
		d.out, d.outPos = nil, 0
		if n > 0 {
			return n, nil
		}
	}
	return n, err
}

func (d *Decoder) readRaw(p []byte) (int, error) {
	if d.rawLeft == 0 {
		return 0, d.finish()
	}
	m := uint64(len(p))
	if m > d.rawLeft {
		m = d.rawLeft
	}
	n, err := d.r.Read(p[:m])
	d.rawLeft -= uint64(n)
	switch {
	case err == io.EOF && d.rawLeft > 0:
		return n, truncated(d.r.n, "payload")
	case err != nil && err != io.EOF:
		return n, fmt.Errorf("delivery: reading payload at offset %d: %w", d.r.n, err)
	}
	return n, nil
}

func (d *Decoder) readCompressed(p []byte) (int, error) {
	for {
		if d.outPos < len(d.out) {
			n := copy(p, d.out[d.outPos:])
			d.outPos += n
			return n, nil
		}
		if d.streaming {
			if d.zLeft > 0 {
				return d.readStream(p)
			}
			if err := d.endStream(); err != nil {
				return 0, err
			}
			continue
		}
		if d.next == len(d.entries) {
			return 0, d.finish()
		}
		if err := d.startEntry(); err != nil {
			return 0, err
		}
	}
}

// skipTo discards payload bytes up to archive offset pos (a gap the seek
// table allows between frames or after the last one).
func (d *Decoder) skipTo(pos uint64) error {
	if gap := pos - d.archivePos; gap > 0 {
		n, err := io.CopyN(io.Discard, &d.r, int64(gap))
		d.archivePos += uint64(n)
		if err == io.EOF {
			return truncated(d.r.n, "archive")
		}
		if err != nil {
			return fmt.Errorf("delivery: reading archive at offset %d: %w", d.r.n, err)
		}
	}
	return nil
}

func (d *Decoder) startEntry() error {
	i := d.next
	e := d.entries[i]
	d.next++
	if err := d.skipTo(e.cOff); err != nil {
		return err
	}
	frameOff := HeaderSize + e.cOff
	if e.dSize > d.bufLimit || e.cSize > d.bufLimit {
		return d.startStream(i, e)
	}
	if uint64(cap(d.cbuf)) < e.cSize {
		d.cbuf = make([]byte, e.cSize)
	}
	frame := d.cbuf[:e.cSize]
	if err := d.readFull(frame, fmt.Sprintf("zstd frame of chunk %d", i)); err != nil {
		return err
	}
	d.archivePos += e.cSize
	dec, err := sharedDecoder()
	if err != nil {
		return fmt.Errorf("delivery: zstd decoder: %w", err)
	}
	if uint64(cap(d.out)) < e.dSize {
		d.out = make([]byte, 0, e.dSize)
	}
	out, err := dec.DecodeAll(frame, d.out[:0])
	if errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		return corruptf(frameOff, "chunk %d decodes to more than the %d bytes its seek table entry says", i, e.dSize)
	}
	if err != nil {
		return corruptf(frameOff, "chunk %d: zstd: %v", i, err)
	}
	if uint64(len(out)) != e.dSize {
		return corruptf(frameOff, "chunk %d decodes to %d bytes, its seek table entry says %d", i, len(out), e.dSize)
	}
	d.out, d.outPos = out, 0
	return nil
}

func (d *Decoder) startStream(i int, e seekEntry) error {
	d.zlr = io.LimitedReader{R: &d.r, N: int64(e.cSize)}
	if d.zr == nil {
		zr, err := zstd.NewReader(&d.zlr,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxWindow(maxWindow),
			zstd.WithDecoderMaxMemory(1<<63))
		if err != nil {
			return corruptf(HeaderSize+e.cOff, "chunk %d: zstd: %v", i, err)
		}
		d.zr = zr
	} else if err := d.zr.Reset(&d.zlr); err != nil {
		return d.streamErr(err)
	}
	d.zEntry, d.zLeft, d.streaming = i, e.dSize, true
	return nil
}

// streamErr classifies an error of the stream decoder.
func (d *Decoder) streamErr(err error) error {
	e := d.entries[d.zEntry]
	if d.r.eof && d.zlr.N > 0 {
		return truncated(d.r.n, fmt.Sprintf("zstd frame of chunk %d", d.zEntry))
	}
	return corruptf(HeaderSize+e.cOff, "chunk %d: zstd: %v", d.zEntry, err)
}

func (d *Decoder) readStream(p []byte) (int, error) {
	if uint64(len(p)) > d.zLeft {
		p = p[:d.zLeft]
	}
	n, err := d.zr.Read(p)
	d.zLeft -= uint64(n)
	if err == io.EOF && d.zLeft > 0 {
		if d.r.eof && d.zlr.N > 0 {
			return n, truncated(d.r.n, fmt.Sprintf("zstd frame of chunk %d", d.zEntry))
		}
		e := d.entries[d.zEntry]
		return n, corruptf(HeaderSize+e.cOff, "chunk %d decodes to %d bytes, its seek table entry says %d", d.zEntry, e.dSize-d.zLeft, e.dSize)
	}
	if err != nil && err != io.EOF {
		return n, d.streamErr(err)
	}
	return n, nil
}

// endStream checks that a streamed chunk has no more output and used
// exactly its compressed size.
func (d *Decoder) endStream() error {
	e := d.entries[d.zEntry]
	var one [1]byte
	n, err := io.ReadFull(d.zr, one[:])
	if n > 0 {
		return corruptf(HeaderSize+e.cOff, "chunk %d decodes to more than the %d bytes its seek table entry says", d.zEntry, e.dSize)
	}
	if err != io.EOF {
		return d.streamErr(err)
	}
	if d.zlr.N != 0 {
		return corruptf(HeaderSize+e.cOff+e.cSize-uint64(d.zlr.N), "chunk %d: %d bytes after the zstd frame", d.zEntry, d.zlr.N)
	}
	d.archivePos += e.cSize
	d.streaming = false
	return nil
}

// finish consumes what remains of the payload and checks that the input
// ends there; it returns io.EOF when all is well.
func (d *Decoder) finish() error {
	if d.compressed {
		if err := d.skipTo(d.payloadLen); err != nil {
			return err
		}
	}
	var one [1]byte
	n, err := io.ReadFull(&d.r, one[:])
	if n > 0 {
		return corruptf(d.r.n-1, "trailing bytes after the %d-byte payload", d.payloadLen)
	}
	if err != io.EOF {
		return fmt.Errorf("delivery: reading at offset %d: %w", d.r.n, err)
	}
	return io.EOF
}

// Decode decodes a whole delivery blob held in memory. The payload length
// must match len(b) exactly; memory is allocated as bytes are decoded, not
// as the header claims.
func Decode(b []byte) ([]byte, error) {
	d, err := NewDecoder(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	if have := uint64(len(b) - HeaderSize); d.payloadLen != have {
		if d.payloadLen > have {
			return nil, fmt.Errorf("%w at offset 12: payload length %d, but only %d bytes follow the header: %w", ErrCorrupt, d.payloadLen, have, io.ErrUnexpectedEOF)
		}
		return nil, corruptf(12, "payload length %d, but %d bytes follow the header", d.payloadLen, have)
	}
	// Uncompressed: size == len(b)-28. Compressed: start with a generous
	// multiple of the input and grow as bytes actually decode.
	size := d.size
	out := make([]byte, 0, min(size, int64(len(b))*8+1<<20))
	for {
		if len(out) == cap(out) {
			if int64(len(out)) == size {
				// Full: the next Read must be io.EOF (runs the end checks).
				var one [1]byte
				n, err := d.Read(one[:])
				if err == io.EOF {
					return out, nil
				}
				if err != nil {
					return nil, err
				}
				if n > 0 { // unreachable: the chunk sizes sum to size
					return nil, corruptf(uint64(len(b)), "decodes to more than %d bytes", size)
				}
				continue
			}
			out = append(out, 0)[:len(out)]
			out = out[:len(out):min(int64(cap(out)), size)]
		}
		n, err := d.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if err == io.EOF {
			if int64(len(out)) != size { // unreachable, as above
				return nil, corruptf(uint64(len(b)), "decodes to %d bytes, header says %d", len(out), size)
			}
			return out, nil
		}
		if err != nil {
			return nil, err
		}
	}
}
