// Package cdc splits data into content-defined chunks with FastCDC, the
// chunker of PuzzleFS images: a cut point depends only on the bytes near it,
// so an insertion or deletion re-cuts only the chunks around it and every
// other chunk keeps its bytes — and its sha256 name — across files, layers
// and image versions. Package image runs one chunker over the concatenated
// regular files of a tree, as PuzzleFS does (v2020, 16 KiB / 64 KiB /
// 256 KiB, normalization level 1: DefaultOptions).
//
// Both published variants are implemented, each with normalization levels
// 0–3, min/avg/max sizes as parameters, and the hash at each cut as the
// reference reports it:
//
//   - V2016, the algorithm of the FastCDC paper (Xia et al., USENIX ATC 2016):
//     a gear hash over one byte per step, sub-minimum cut-point skipping, and
//     normalized chunking (a stricter mask before the average size, a looser
//     one after it).
//   - V2020, the 2020 paper's "rolling two bytes each time": two bytes per
//     step with a left-shifted gear table and left-shifted masks for the
//     first byte of each pair. This is what PuzzleFS uses
//     (fastcdc::v2020::StreamCDC from the Rust crate fastcdc, pinned at
//     3.0.0). Options.Seed gives the seeded gear tables of the crate's later
//     releases (v2020 only).
//
// Cut works on a byte slice; Chunker reads an io.Reader and yields exactly the
// same chunks whatever sizes the reader's reads have.
//
// # Compatibility facts
//
// The cut points, lengths and hashes are those of the Rust crate fastcdc
// (nlfiedler/fastcdc-rs, tags 3.0.0 to 4.0.1), which PuzzleFS uses; the
// facts come from ../shared/ref/puzzlefs-notes.md (section 2, "FastCDC in
// PuzzleFS and test vectors") and ../shared/vectors/cdc/README.md, and the
// tests check every vector listed there:
//
//   - gear[i] is the first 8 bytes, big-endian, of MD5 over 64 bytes equal
//     to i (the C reference's method); v2020 also uses gear[i]<<1. A seed s
//     XORs s into gear and s<<1 into the shifted table.
//   - Level n uses masks[bits+n] before the average size and masks[bits-n]
//     from it on, with bits = round(log2(avg)) (rounded, not truncated).
//   - If at most min bytes remain they form the last chunk, with hash 0.
//     Otherwise hashing starts at byte min (v2020: at 2*(min/2)) with hash 0,
//     the window is capped at max, and the byte whose hash satisfies the mask
//     starts the next chunk. With no match the chunk has max bytes (or the
//     rest of the data, if shorter); v2020 then leaves an odd last byte
//     unhashed.
//   - Parameter limits, as the crate's: min 64 B … 1 MiB, avg 256 B … 4 MiB,
//     max 1 KiB … 16 MiB. sealfs also requires min ≤ avg ≤ max, and an even
//     min for v2020: the reference starts hashing at byte 2*(min/2) and so
//     cuts an odd min one byte early, below the minimum.
//
// # Why hand-written
//
// sealfs prefers well-kept libraries, but none of the Go FastCDC packages
// reproduces both the 2016 and the 2020 variant with normalization levels
// 0–3 and the exact cut points of the reference implementations. Of those
// surveyed (their pkg.go.dev and GitHub pages), github.com/jotfs/fastcdc-go
// has no 2020 variant and no release since v0.2.0 (June 2020),
// github.com/PlakarLabs/go-fastcdc uses a randomly generated gear table, and
// github.com/tigerwill90/fastcdc follows the ronomon variant. Image
// interoperability with the puzzlefs tool needs bit-identical cuts, so the
// algorithm — a few dozen lines — is written here against the vectors.
//
// # Concurrency
//
// Cut is safe for concurrent use. A Chunker is not; use one per stream.
package cdc
