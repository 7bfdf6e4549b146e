// Package cocoonfs opens CocoonFS images and reads them, every byte authenticated.
//
// CocoonFS (SUSE, COCONUT-SVSM) is a small encrypted filesystem for TEE state
// such as a vTPM's NV storage: files are named by 64-bit inode numbers, every
// filesystem entity is encrypted with a fresh random IV, and one Merkle tree
// (the authentication tree) covers the whole image, so a single root HMAC in
// the mutable header binds all contents, all metadata and the update counter.
// The format is specified in ../shared/ref/cocoonfs-format.md; the bytes this
// package reads are the ones the reference implementation writes, and where
// the two differ the reference wins (docs/format/cocoonfs-reference-facts.md).
//
// Opening follows the format's bootstrap: static header → root key → journal
// log head (a pending journal is reported, not replayed) → mutable header →
// inode index entry leaf, pre-authenticated with an inline HMAC → the extents
// lists of the authentication tree and allocation bitmap files (inline
// authenticated chained extents) → the root node of the authentication tree
// against the root HMAC → the entry leaf again, now through the tree (which
// loads the one allocation bitmap block that describes it) → the inode index
// root.
//
// After Open, every read authenticates the data blocks it touches against
// the tree before anything is decrypted or returned; tree nodes are verified
// on the path from the root and cached, as are allocation bitmap blocks,
// within fixed budgets.
//
// # Streaming
//
// Memory and work follow what an operation touches, never the size of a
// file or an image. A File (OpenFile) reads any range by authenticating and
// decrypting only its data blocks, and finds its length from its last
// cipher blocks. A FileWriter (Tx.Create, FS.Stage) encrypts on one
// goroutine while another digests and writes each segment to free blocks;
// the transaction keeps digests and extent edges, and the commit updates
// the tree along the paths to what changed (treeUpdater), as a journal
// replay does. Mkfs and the online format write the image in one pass
// (mkfswrite.go). The allocation bitmap is read block by block and a
// transaction's allocations and releases are extents (bitmap.go).
//
// # Algorithms by strength
//
// The static header records all seven algorithm choices and reading follows
// the header whatever it says; [Mkfs] and [WriteMkfsInfo] choose exactly what
// the reference's mkfs chooses ([SelectAlgorithms]):
//
//	strength  tree node hash, data HMAC   root HMAC, preauth HMAC, KDF  cipher
//	128       SHA-256 / SHA3-256 / SM3     same 256-bit hash             AES-128 / Camellia-128 / SM4
//	192       SHA-384 / SHA3-384           SHA-256 / SHA3-256            AES-192 / Camellia-192
//	256       SHA-512 / SHA3-512           SHA-256 / SHA3-256            AES-256 / Camellia-256
//
// SM3 and SM4 exist only at 128 bits. A tree node holds as many digests as
// fit, rounded down to a power of two; with 48-byte digests that leaves
// slack at the node's end, which no digest covers (only the entries are
// hashed, as the spec says: "the digests stored in the node back to back").
//
// An *FS is safe for concurrent use by multiple goroutines.
package cocoonfs
