// Package blob is a content-addressed, immutable, verified blob store on a
// local directory: the Fxblob / blobfs model (Fuchsia RFC-0225).
//
// A blob is named by its Fuchsia Merkle root (see package merkle): 64
// lowercase hex characters. The namespace is flat. Blobs never change once
// installed; they can only be removed.
//
// # Installing
//
// [Store.Create] returns a [Writer] for a blob whose name and size are known
// in advance. The bytes are hashed as they stream in and written to a
// temporary file inside the store; [Writer.Close] compares the computed root
// with the name and, only if they match, makes the blob visible atomically
// and durably (fsync of the file, a hard link to its final name that never
// replaces an existing file, fsync of the directory). A mismatch returns an
// error matching [ErrIntegrity] and leaves nothing visible. [Store.Put]
// installs bytes whose name is not known in advance and returns the name;
// [Store.InstallDelivery] and [Store.PutDelivery] decode an RFC-0207 delivery
// blob (package blob/delivery) while installing it.
//
// Installing a blob that already exists is an error matching [fs.ErrExist]
// (not idempotent): Create reports it before any byte is written when the
// blob is already visible, and Close reports it when another writer
// (in this process or another) installed the same blob first. In both cases
// the stored blob is complete and verified, so callers that only want the
// blob to be present may treat fs.ErrExist as success (the CLI's put does).
//
// A writer killed at any point (or a power cut) leaves at most a temporary
// file, never a partial blob; [Open] removes such leftovers. Temporary files
// of writers that are still running are protected by an flock(2) lock, so
// opening a store never disturbs installs in progress in other processes.
//
// # Reading
//
// [Store.Open] returns a [Blob] (io.ReaderAt, io.Reader, io.Seeker). The
// Merkle tree stored beside the data is checked against the name when the
// blob is opened; each read then verifies only the 8 KiB data blocks it
// touches against the tree before returning a byte of them. A tampered block
// makes reads that touch it fail with [ErrIntegrity]; other blocks stay
// readable. The last verified block is cached, so small sequential reads do
// not hash the same block twice. [Store.Verify] and [Store.VerifyAll] check
// whole blobs.
//
// # Memory
//
// Installing and reading take memory that does not grow with the blob:
// installs hash as the bytes stream and keep the data block hashes (1/256
// of the data) in memory only up to 1 MiB, then in an unlinked temporary
// file; delivery blobs decode one chunk at a time (package blob/delivery);
// an open blob keeps only the tree levels above the data block hashes
// (1/65536 of the data) and reads those hashes back from the blob file, one
// 8 KiB hash block at a time, checking each against the verified level
// above before use.
//
// # Registries
//
// [Push] uploads a whole store to an OCI registry as one artifact (an OCI
// manifest with one layer per blob, each annotated with its name; see
// docs/format/oci-blob-store.md), uploading only the blobs the registry
// lacks. [Pull] installs such an artifact into a store through the
// verified install path: every blob is checked against both its sha256 and
// its name before it becomes visible, and blobs already present are
// skipped, so an interrupted pull resumes.
//
// # Space accounting
//
// [Store.Usage] is the number of bytes the store occupies on its file
// system: the allocated blocks (st_blocks × 512) of every file and directory
// under the store's root, the root itself included, each inode counted once.
// That includes blob files (header, data and tree), the marker file, and
// temporary files of installs in progress. [Store.Stat] reports the same
// figure for one blob.
//
// # Concurrency
//
// A [Store] is safe for concurrent use by any number of goroutines, and any
// number of processes may use the same store directory at once: installs of
// different blobs proceed in parallel, two installs of the same blob resolve
// as described above, and reads may run while blobs are being installed or
// removed (removing a blob that is open leaves the open [Blob] readable).
// A [Writer] is for one goroutine. A [Blob]'s ReadAt and Size may be called
// concurrently; Read and Seek share one offset and are serialized.
//
// The on-disk layout is specified in docs/format/blob-store.md.
//
// The store relies on POSIX file-system semantics (hard links, flock, fsync
// of directories, st_blocks). It runs on Unix systems; elsewhere the package
// builds but Open fails with errs.ErrUnsupported.
package blob
