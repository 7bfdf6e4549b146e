package delivery

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/sealfs/sealfs/errs"
)

// ErrCorrupt is wrapped by every decoding error; it wraps errs.ErrCorrupt.
var ErrCorrupt = fmt.Errorf("corrupt delivery blob: %w", errs.ErrCorrupt)

// Delivery blob header (RFC-0207 generic header + Type 1 metadata).
const (
	// HeaderSize is the size of the Type 1 delivery blob header.
	HeaderSize = 28

	typeReserved = 0
	type1        = 1

	flagCompressed = 0x1
	validFlags     = flagCompressed
)

var deliveryMagic = [4]byte{0xfc, 0x1a, 0xb1, 0x0b}

// Chunked archive, version 2.
const (
	archiveHeaderSize = 32
	seekEntrySize     = 32
	archiveVersion    = 2
	maxEntries        = 1023

	// defaultChunk and chunkAlign are Type 1's target chunk size and the
	// Merkle block size large chunks are rounded to.
	defaultChunk = 32 << 10
	chunkAlign   = 8 << 10

	// zstdLevel is the level Type 1 specifies (libzstd numbering).
	zstdLevel = 14

	// maxZstdRatio bounds what one zstd frame can decode to: the densest
	// encoding is an RLE block, 4 bytes (3-byte block header and the byte)
	// for at most 128 KiB, and every frame also has a header of 6 or more
	// bytes. So decompressed <= 32768 * compressed for any valid frame.
	maxZstdRatio = 32768

	// maxBufferedChunk is the largest chunk decoded in one piece into a
	// buffer; larger chunks (blobs over ~4 GiB) are decoded as a stream.
	maxBufferedChunk = 4 << 20

	// maxWindow is the largest zstd window accepted, libzstd's default
	// decoder limit (ZSTD_WINDOWLOG_LIMIT_DEFAULT = 27).
	maxWindow = 128 << 20
)

// archiveMagic is the first 8 bytes of sha256("Fuchsia is a vivid purplish red color\n").
var archiveMagic = [8]byte{0x46, 0x9b, 0x78, 0xef, 0x0f, 0xd0, 0xb2, 0x03}

// seekEntry is one row of the archive's seek table.
type seekEntry struct {
	dOff, dSize, cOff, cSize uint64
}

// chunkSize returns the chunk size Type 1 uses for a blob of n bytes.
func chunkSize(n int64) int64 {
	if n <= maxEntries*defaultChunk {
		return defaultChunk
	}
	c := (n + maxEntries - 1) / maxEntries
	return (c + chunkAlign - 1) / chunkAlign * chunkAlign
}

// putDeliveryHeader fills h (HeaderSize bytes) with a Type 1 header.
func putDeliveryHeader(h []byte, payloadLen uint64, compressed bool) {
	copy(h[0:4], deliveryMagic[:])
	binary.LittleEndian.PutUint32(h[4:8], type1)
	binary.LittleEndian.PutUint32(h[8:12], HeaderSize)
	binary.LittleEndian.PutUint64(h[12:20], payloadLen)
	binary.LittleEndian.PutUint32(h[20:24], 0)
	var flags uint32
	if compressed {
		flags = flagCompressed
	}
	binary.LittleEndian.PutUint32(h[24:28], flags)
	binary.LittleEndian.PutUint32(h[20:24], crc32.ChecksumIEEE(h[:HeaderSize]))
}

// archiveHeader returns the archive header and seek table for entries.
func archiveHeader(entries []seekEntry) []byte {
	h := make([]byte, archiveHeaderSize+seekEntrySize*len(entries))
	copy(h[0:8], archiveMagic[:])
	binary.LittleEndian.PutUint16(h[8:10], archiveVersion)
	binary.LittleEndian.PutUint32(h[12:16], uint32(len(entries)))
	for i, e := range entries {
		t := h[archiveHeaderSize+seekEntrySize*i:]
		binary.LittleEndian.PutUint64(t[0:], e.dOff)
		binary.LittleEndian.PutUint64(t[8:], e.dSize)
		binary.LittleEndian.PutUint64(t[16:], e.cOff)
		binary.LittleEndian.PutUint64(t[24:], e.cSize)
	}
	binary.LittleEndian.PutUint32(h[16:20], archiveCRC(h))
	return h
}

// archiveCRC is CRC-32 (IEEE) over the archive header and seek table with
// the 4-byte CRC field at 16 skipped (not zeroed).
func archiveCRC(h []byte) uint32 {
	c := crc32.ChecksumIEEE(h[:16])
	return crc32.Update(c, crc32.IEEETable, h[20:])
}

// sharedEncoder is the zstd encoder every Encode uses; EncodeAll is safe
// for concurrent use and the encoder is costly to build.
var sharedEncoder = sync.OnceValues(func() (*zstd.Encoder, error) {
	return zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(zstdLevel)),
		zstd.WithEncoderCRC(true),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
	)
})

// sharedDecoder decodes whole frames of at most maxBufferedChunk bytes
// into caller-sized buffers: with WithDecodeAllCapLimit DecodeAll never
// grows dst past cap(dst). Its memory limit is set to maxWindow only because
// klauspost also caps the accepted window at it; output is bounded by cap.
var sharedDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
	return zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxMemory(maxWindow),
		zstd.WithDecoderMaxWindow(maxWindow),
	)
})
