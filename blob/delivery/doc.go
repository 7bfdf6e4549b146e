// Package delivery reads and writes RFC-0207 delivery blobs of Type 1: the
// format in which Fuchsia ships blobs offline-compressed, and in which the
// blob store accepts and serves them.
//
// A delivery blob is a 28-byte header (magic FC 1A B1 0B, type 1, header
// length 28, payload length, a CRC-32 of the header, flags) followed by the
// payload: the blob itself, or — when bit 0 of the flags is set — a chunked
// compression archive, version 2: a 32-byte header with its own CRC-32, a
// seek table of at most 1023 entries, and one independent zstd frame per
// chunk. A blob's name stays the Merkle root of the decompressed bytes; this
// package does not hash, the store verifies what it decodes.
//
// The layouts, invariants and test vectors are in section 2 of
// ../shared/ref/merkle-formats.md; sources are Fuchsia's
// src/storage/lib/delivery_blob (Rust) and src/lib/chunked-compression plus
// blobfs/delivery_blob.cc (C++).
//
// # What is hand-written and why
//
// zstd itself is github.com/klauspost/compress/zstd. The delivery header and
// the chunked archive (seek table, CRCs, chunk sizing, the validation
// invariants) are written here by hand: no Go library implements Fuchsia's
// chunked archive, and the format is small enough (two fixed headers and a
// table) that a direct implementation is simpler than any adapter.
//
// # Encoding choices
//
//   - Compression level: Type 1 specifies zstd level 14. klauspost/compress
//     offers four levels; zstd.EncoderLevelFromZstd(14) maps it to
//     SpeedBestCompression, the strongest one, which is what Encode uses. The
//     frames are ordinary zstd frames that any decoder (libzstd included)
//     reads; they are not byte-identical to libzstd's level 14, which RFC-0207
//     does not require (output is deterministic per tool version only).
//   - Each frame carries the zstd content checksum (as the zstd CLI and the
//     original Rust encoder write it; Fuchsia's C++ encoder omits it, and
//     both decoders accept either).
//   - Chunk size: 32 KiB while the blob fits in 1023 such chunks, otherwise
//     ceil(len/1023) rounded up to the 8 KiB Merkle block size (Rust
//     chunk_size_for / C++ ChunkSizeForInputSize).
//   - The archive is used only when it is strictly smaller than the blob
//     (the C++ rule; Rust also takes a tie). Empty blobs are always written
//     uncompressed: the C++ compressor emits a 0-byte archive for them and the
//     Rust decoder cannot read one.
//
// # Decoding
//
// Decoder streams: it reads and checks both headers and the whole seek table
// up front, then decodes one chunk at a time, so memory stays bounded by
// one chunk (at most 4 MiB; larger chunks, which only blobs over 4 GiB
// have, are decoded as a zstd stream with a window of at most 128 MiB, the
// libzstd default limit) no matter what the headers claim. Every claimed size
// is checked against what zstd can physically produce (a 4-byte RLE block
// yields at most 128 KiB, so no frame expands more than 32768 times) before
// anything is allocated. Every violation — a bad magic, type, length, flag,
// CRC, seek-table invariant, zstd error, a frame that decodes to more or
// fewer bytes than its entry says, truncation, trailing bytes — is an error
// wrapping ErrCorrupt (and so errs.ErrCorrupt) that names the offset in the
// delivery blob; truncation also wraps io.ErrUnexpectedEOF. A well-formed
// blob of a type or archive version this package does not implement (Type 2,
// archive version 3) additionally wraps errs.ErrUnsupported.
//
// Accepted although Encode never writes them: zstd frames with or without
// content checksums, gaps between frames and after the last one (allowed by
// the seek-table invariants), a compressed payload holding an archive with
// zero entries (an empty blob), and non-zero reserved archive header fields
// (covered by the CRC; neither reference checks them).
//
// Encode and Decode are safe for concurrent use; a Decoder is not. The zstd
// encoder and the block decoder are shared, lazily created caches (they are
// expensive to build and safe for concurrent use); they hold no state
// between calls.
package delivery
