package delivery

import (
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Encode writes data to dst as a Type 1 delivery blob: a chunked archive of
// zstd frames when that is strictly smaller than data, else data itself
// uncompressed (always for empty data). See the package documentation for
// the exact choices.
func Encode(dst io.Writer, data []byte) error {
	var hdr [HeaderSize]byte
	if len(data) == 0 {
		putDeliveryHeader(hdr[:], 0, false)
		_, err := dst.Write(hdr[:])
		return err
	}
	frames, entries, archiveLen, err := compressChunks(data)
	if err != nil {
		return err
	}
	if archiveLen >= uint64(len(data)) {
		putDeliveryHeader(hdr[:], uint64(len(data)), false)
		if _, err := dst.Write(hdr[:]); err != nil {
			return err
		}
		_, err := dst.Write(data)
		return err
	}
	putDeliveryHeader(hdr[:], archiveLen, true)
	if _, err := dst.Write(hdr[:]); err != nil {
		return err
	}
	if _, err := dst.Write(archiveHeader(entries)); err != nil {
		return err
	}
	for _, f := range frames {
		if _, err := dst.Write(f); err != nil {
			return err
		}
	}
	return nil
}

// compressChunks compresses data chunk by chunk (in parallel) and returns
// the frames, the seek table and the archive size.
func compressChunks(data []byte) ([][]byte, []seekEntry, uint64, error) {
	enc, err := sharedEncoder()
	if err != nil {
		return nil, nil, 0, fmt.Errorf("delivery: zstd encoder: %w", err)
	}
	chunk := chunkSize(int64(len(data)))
	n := int((int64(len(data)) + chunk - 1) / chunk)
	if n > maxEntries {
		// Unreachable: chunkSize guarantees at most 1023 chunks.
		return nil, nil, 0, fmt.Errorf("delivery: %d chunks exceed %d", n, maxEntries)
	}
	frames := make([][]byte, n)
	workers := min(runtime.GOMAXPROCS(0), n)
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				lo := int64(i) * chunk
				hi := min(lo+chunk, int64(len(data)))
				frames[i] = enc.EncodeAll(data[lo:hi], nil)
			}
		}()
	}
	wg.Wait()

	entries := make([]seekEntry, n)
	off := uint64(archiveHeaderSize + seekEntrySize*n)
	for i, f := range frames {
		lo := uint64(i) * uint64(chunk)
		hi := min(lo+uint64(chunk), uint64(len(data)))
		entries[i] = seekEntry{dOff: lo, dSize: hi - lo, cOff: off, cSize: uint64(len(f))}
		off += uint64(len(f))
	}
	return frames, entries, off, nil
}

// Spool holds the zstd frames EncodeStream makes until the seek table that
// precedes them is known: written from its start, then read back. An
// empty temporary file (*os.File) is the usual choice.
type Spool interface {
	io.Writer
	io.ReaderAt
}

// encodeBufferLimit is the largest chunk EncodeStream compresses in one
// piece (a variable for tests); larger chunks, which only blobs over about
// 4 GiB have, are compressed as a stream.
var encodeBufferLimit = int64(maxBufferedChunk)

// EncodeStream writes the size bytes of src to dst as a Type 1 delivery
// blob, choosing as Encode does, in memory that does not grow with size:
// chunks are read and compressed a few at a time (in parallel), and their
// frames wait in spool until the seek table, which precedes them, is
// known. Compression stops as soon as the archive cannot be smaller than
// the data; src is then read again and written uncompressed. For chunks of
// up to 4 MiB (every blob under about 4 GiB) the output is byte for byte
// Encode's; larger chunks are compressed as streams, into frames that
// decode the same but need not be the same bytes.
func EncodeStream(dst io.Writer, src io.ReaderAt, size int64, spool Spool) error {
	var hdr [HeaderSize]byte
	if size < 0 {
		return fmt.Errorf("delivery: negative blob size %d", size)
	}
	if size == 0 {
		putDeliveryHeader(hdr[:], 0, false)
		_, err := dst.Write(hdr[:])
		return err
	}
	entries, archiveLen, err := compressToSpool(src, size, spool)
	if err != nil {
		return err
	}
	if entries == nil { // the archive would not be smaller
		putDeliveryHeader(hdr[:], uint64(size), false)
		if _, err := dst.Write(hdr[:]); err != nil {
			return err
		}
		_, err := io.Copy(dst, io.NewSectionReader(src, 0, size))
		return err
	}
	putDeliveryHeader(hdr[:], archiveLen, true)
	if _, err := dst.Write(hdr[:]); err != nil {
		return err
	}
	table := archiveHeader(entries)
	if _, err := dst.Write(table); err != nil {
		return err
	}
	_, err = io.Copy(dst, io.NewSectionReader(spool, 0, int64(archiveLen)-int64(len(table))))
	return err
}

// compressToSpool compresses the chunks of src into spool and returns the
// seek table and the archive size, or a nil table as soon as the archive
// reaches size bytes.
func compressToSpool(src io.ReaderAt, size int64, spool Spool) ([]seekEntry, uint64, error) {
	enc, err := sharedEncoder()
	if err != nil {
		return nil, 0, fmt.Errorf("delivery: zstd encoder: %w", err)
	}
	chunk := chunkSize(size)
	n := int((size + chunk - 1) / chunk)
	entries := make([]seekEntry, n)
	off := uint64(archiveHeaderSize + seekEntrySize*n)
	entry := func(i int, cSize int) {
		lo := int64(i) * chunk
		entries[i] = seekEntry{dOff: uint64(lo), dSize: uint64(min(lo+chunk, size) - lo), cOff: off, cSize: uint64(cSize)}
		off += uint64(cSize)
	}
	if chunk > encodeBufferLimit {
		zw, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(zstdLevel)),
			zstd.WithEncoderCRC(true),
			zstd.WithEncoderConcurrency(1))
		if err != nil {
			return nil, 0, fmt.Errorf("delivery: zstd encoder: %w", err)
		}
		defer zw.Close()
		for i := range n {
			lo := int64(i) * chunk
			cSize, err := compressStream(zw, spool, io.NewSectionReader(src, lo, min(lo+chunk, size)-lo))
			if err != nil {
				return nil, 0, err
			}
			if entry(i, cSize); off >= uint64(size) {
				return nil, 0, nil
			}
		}
		return entries, off, nil
	}
	workers := min(runtime.GOMAXPROCS(0), n)
	bufs := make([][]byte, workers)
	frames := make([][]byte, workers)
	for first := 0; first < n; first += workers {
		k := min(workers, n-first)
		var wg sync.WaitGroup
		errs := make([]error, k)
		for j := range k {
			wg.Add(1)
			go func() {
				defer wg.Done()
				lo := int64(first+j) * chunk
				hi := min(lo+chunk, size)
				if cap(bufs[j]) < int(chunk) {
					bufs[j] = make([]byte, chunk)
				}
				data := bufs[j][:hi-lo]
				if n, err := src.ReadAt(data, lo); n < len(data) {
					if err == nil || err == io.EOF {
						err = io.ErrUnexpectedEOF
					}
					errs[j] = fmt.Errorf("delivery: reading bytes %d..%d of the blob: %w", lo, hi, err)
					return
				}
				frames[j] = enc.EncodeAll(data, frames[j][:0])
			}()
		}
		wg.Wait()
		for j := range k {
			if errs[j] != nil {
				return nil, 0, errs[j]
			}
			if _, err := spool.Write(frames[j]); err != nil {
				return nil, 0, fmt.Errorf("delivery: spooling frames: %w", err)
			}
			if entry(first+j, len(frames[j])); off >= uint64(size) {
				return nil, 0, nil
			}
		}
	}
	return entries, off, nil
}

// compressStream compresses one large chunk from r into w as one zstd
// frame (with its content size and checksum) with zw, and returns the
// frame's size.
func compressStream(zw *zstd.Encoder, w io.Writer, r *io.SectionReader) (int, error) {
	cw := &countingWriter{w: w}
	zw.ResetContentSize(cw, r.Size())
	if _, err := io.Copy(zw, r); err != nil {
		return 0, fmt.Errorf("delivery: compressing a chunk: %w", err)
	}
	if err := zw.Close(); err != nil {
		return 0, fmt.Errorf("delivery: compressing a chunk: %w", err)
	}
	return cw.n, nil
}

type countingWriter struct {
	w io.Writer
	n int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += n
	return n, err
}
