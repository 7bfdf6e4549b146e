// Package image builds, reads, verifies and extracts PuzzleFS container
// images: an OCI image layout whose image manifests point at a Cap'n Proto
// metadata blob (the "rootfs", format manifest version 3) and at
// content-defined chunks named by their sha256, shared by every image in
// the layout.
//
// [Build] walks a directory tree and writes an image that is byte for byte
// what the puzzlefs tool writes for the same tree (so the printed root
// digest matches), stacking it on a base tag when asked: kept paths keep
// their inode numbers, deleted names become whiteouts, unchanged data reuses
// its chunks. [EncodeRootfs] is the metadata writer, laid out as
// capnproto-rust lays it out.
//
// [Layout.OpenImage] opens a tag for reading; with the manifest's fs-verity
// digest (the root of trust that Build returns and puzzlefs prints) it checks
// the whole chain: manifest, rootfs, and every chunk before its bytes are
// used. [Image] resolves names top-down through the layers with whiteouts
// hidden ([Image.Walk], [Image.Lookup], [Image.ReadDir]) and reads files
// ([Image.ReadAt], [Image.ReadFile]); [Image.Extract] recreates the tree on
// disk, all or nothing; [Layout.Usage] accounts for shared and unique bytes.
// Package image/fusefs mounts an Image read-only.
//
// Images travel through OCI registries (package registry): [Push] uploads a
// tagged image, only the blobs the registry lacks; [Pull] fetches one into
// a layout through the same verify-then-link path as Build, so an
// interrupted pull leaves a valid layout and the next one resumes. An Image
// reads its blobs through a [Source]: a layout ([Layout.Source]) or, for a
// lazy mount, a [Remote], which fetches blobs from a registry when first
// read and keeps them in a local cache. [OpenImageFrom] opens an image from
// any Source and trusts nothing it returns: the manifest is checked against
// its digest, every blob against its sha256 and, with a root digest, the
// fs-verity chain, before a byte is used.
//
// Lower-level readers: [OpenLayout], [Layout.Tags], [Layout.Manifest],
// [ReadRootfs] (the metadata as plain Go values: [Rootfs], [Inode],
// [FileChunk]) and [Layout.ReadChunk]. Every blob is checked against its
// sha256 name (and its descriptor size, when one is known) before a byte of
// it is parsed or returned; a mismatch is errs.ErrAuthentication naming the
// digest. Malformed metadata is errs.ErrCorrupt, unknown media types and
// format versions errs.ErrUnsupported, a missing tag or blob fs.ErrNotExist.
//
// The format, including how puzzlefs lays out what it writes and where
// sealfs deliberately differs, is described in docs/format/puzzlefs.md. The
// OCI JSON types are the handful of fields PuzzleFS uses, declared here
// rather than imported.
//
// A *Layout and an *Image are safe for concurrent use.
package image
