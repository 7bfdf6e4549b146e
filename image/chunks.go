package image

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/sealfs/sealfs/errs"
)

// MaxChunkSize bounds the size of a chunk blob file and the uncompressed
// bytes read from one (BlobRef.Offset + FileChunk.Len): 16 MiB, the largest maximum chunk size
// FastCDC accepts. PuzzleFS chunks are at most 256 KiB.
const MaxChunkSize = 16 << 20

// ReadChunk returns the c.Len bytes of file data that c refers to. The blob
// is read whole and checked against its sha256 name before it is used; a
// compressed blob (c.Blob.Compressed) is then decompressed as zstd (PuzzleFS
// writes seekable zstd: ordinary zstd frames followed by a skippable frame
// holding the seek table, which the decoder skips). A chunk that reaches past
// the end of its blob is errs.ErrCorrupt.
func (l *Layout) ReadChunk(c FileChunk) ([]byte, error) {
	end := c.Blob.Offset + c.Len
	if end < c.Blob.Offset || (c.Blob.Compressed && end > MaxChunkSize) {
		return nil, fmt.Errorf("image: chunk %s: offset %d + length %d exceeds %d bytes: %w", c.Blob.Digest, c.Blob.Offset, c.Len, uint64(MaxChunkSize), errs.ErrCorrupt)
	}
	b, err := l.readBlob(c.Blob.Digest, -1, MaxChunkSize)
	if err != nil {
		return nil, err
	}
	if !c.Blob.Compressed {
		if end > uint64(len(b)) {
			return nil, fmt.Errorf("image: chunk %s: offset %d + length %d is past the blob's %d bytes: %w", c.Blob.Digest, c.Blob.Offset, c.Len, len(b), errs.ErrCorrupt)
		}
		return b[c.Blob.Offset:end], nil
	}
	dec, err := zstd.NewReader(bytes.NewReader(b), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(4*MaxChunkSize))
	if err != nil {
		return nil, fmt.Errorf("image: chunk %s: %w", c.Blob.Digest, err)
	}
	defer dec.Close()
	if _, err := io.CopyN(io.Discard, dec, int64(c.Blob.Offset)); err != nil {
		return nil, zstdErr(c, err)
	}
	out := make([]byte, c.Len)
	if _, err := io.ReadFull(dec, out); err != nil {
		return nil, zstdErr(c, err)
	}
	return out, nil
}

func zstdErr(c FileChunk, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("image: chunk %s: offset %d + length %d is past the end of the uncompressed blob: %w", c.Blob.Digest, c.Blob.Offset, c.Len, errs.ErrCorrupt)
	}
	return fmt.Errorf("image: chunk %s: zstd: %w: %w", c.Blob.Digest, err, errs.ErrCorrupt)
}

// ReadFile returns the contents of a regular file inode: its chunks
// concatenated, each read with ReadChunk. It holds the whole file in memory.
func (l *Layout) ReadFile(in *Inode) ([]byte, error) {
	if in.Type != TypeFile {
		return nil, fmt.Errorf("image: inode %d is a %s, not a regular file", in.Ino, in.Type)
	}
	var out []byte
	for i, c := range in.Chunks {
		b, err := l.ReadChunk(c)
		if err != nil {
			return nil, fmt.Errorf("image: inode %d chunk %d: %w", in.Ino, i, err)
		}
		out = append(out, b...)
	}
	return out, nil
}

// decompressChunk returns the whole uncompressed contents of a compressed
// chunk blob, refusing more than MaxChunkSize bytes.
func decompressChunk(d Digest, stored []byte) ([]byte, error) {
	dec, err := zstd.NewReader(bytes.NewReader(stored), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(4*MaxChunkSize))
	if err != nil {
		return nil, fmt.Errorf("image: chunk %s: %w", d, err)
	}
	defer dec.Close()
	out, err := io.ReadAll(io.LimitReader(dec, MaxChunkSize+1))
	if err != nil {
		return nil, fmt.Errorf("image: chunk %s: zstd: %w: %w", d, err, errs.ErrCorrupt)
	}
	if len(out) > MaxChunkSize {
		return nil, fmt.Errorf("image: chunk %s: decompresses to more than %d bytes: %w", d, MaxChunkSize, errs.ErrCorrupt)
	}
	return out, nil
}
