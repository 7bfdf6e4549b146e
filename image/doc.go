// Package image reads PuzzleFS container images: an OCI image layout whose
// image manifests point at a Cap'n Proto metadata blob (the "rootfs", format
// manifest version 3) and at content-defined chunks named by their sha256.
//
// This first step reads: [OpenLayout] opens the OCI layout, [Layout.Tags] and
// [Layout.Manifest] resolve tags, [Layout.Rootfs] or [ReadRootfs] decode the
// metadata into plain Go values ([Rootfs], [Inode], [FileChunk]), and
// [Layout.ReadChunk] / [Layout.ReadFile] return file bytes. Every blob is
// checked against its sha256 name (and its descriptor size, when one is known)
// before a byte of it is parsed or returned; a mismatch is
// errs.ErrAuthentication naming the digest. Malformed metadata is
// errs.ErrCorrupt, unknown media types and format versions
// errs.ErrUnsupported, a missing tag or blob fs.ErrNotExist.
//
// The format is described in docs/format/puzzlefs.md. The OCI JSON types are
// the handful of fields PuzzleFS uses, declared here rather than imported.
//
// A *Layout is safe for concurrent use; it holds only the directory name.
package image
