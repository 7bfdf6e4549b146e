// Package bd provides protected block devices over an untrusted medium (the
// nextfs / libbd model): each variant wraps a blockdev.Device and is itself a
// blockdev.Device, so they stack and every sealfs harness applies to them.
//
//   - Std: plaintext passthrough, no protection.
//   - Crypt: AES-256-XTS per block, tweak = block number (dm-crypt's
//     aes-xts-plain64). Confidentiality only: a flipped, swapped or replayed
//     ciphertext block decrypts to garbage WITHOUT an error.
//   - Verity: a Merkle tree of HMAC-SHA256 nodes on a separate tree device,
//     checked against a trusted root hash given at open; read-write, the new
//     root is reported by Root after every write.
//   - VeriCrypt: Crypt over Verity, so the tree covers the ciphertext.
//   - DmVerity: read-only, the tree is a `veritysetup format` hash device
//     (package merkle), so Linux's dm-verity can check the same image.
//
// The on-medium formats (XTS tweak, KDF sidecar, verity tree device) are
// specified in docs/format/bd.md.
//
// # Block granularity
//
// The devices are block-granular: ReadAt and WriteAt offsets and lengths
// must be multiples of BlockSize (else ErrUnaligned). Size is the lower
// device's size rounded down to whole blocks. Reads past Size follow
// blockdev's io.EOF rules. ByteAddressable turns any of them into a device
// that accepts every offset and length, by read-modify-write.
//
// # Errors
//
// A block that fails authentication is never returned: the read returns
// the verified blocks before it, zeroes the rest of the buffer and fails
// with an error wrapping errs.ErrAuthentication that names the block. Other
// blocks stay readable. A wrong passphrase is errs.ErrWrongKey.
//
// # Crash consistency (Verity, VeriCrypt)
//
// A write puts the data block on the data device first, then the changed
// leaf and path nodes on the tree device; Sync syncs the data device, then
// the tree device. The caller keeps the root somewhere trusted, normally the
// value of Root right after a successful Sync. After a power cut:
//
//   - Never is wrong data returned. A data block and its leaf that disagree
//     (the block written, its leaf not yet, or a torn block) make reads of
//     that block fail with errs.ErrAuthentication; other blocks read fine.
//   - The tree device as a whole must agree with the trusted root: if the
//     cut fell between the tree being updated and the root being recorded
//     (or the other way round), OpenVerity fails with
//     errs.ErrAuthentication for the whole device. The tree cannot tell a
//     crash from a rollback attack; recovery is an explicit decision of
//     the owner, who may re-run FormatVerity (`sealfs bd makemerkle`) to
//     accept the medium's current contents.
//
// Interior nodes on the tree device are only a convenience: OpenVerity
// recomputes them from the leaves, and Check reports stored ones that
// disagree.
//
// # Concurrency
//
// Std, Crypt and DmVerity hold no mutable state and are safe for
// concurrent use when the lower devices are. Verity and VeriCrypt are safe
// for concurrent use: reads run in parallel, writes are serialized with
// each other and with reads. ByteAddressable serializes its
// read-modify-write cycles. As for any blockdev.Device, concurrent writes to
// overlapping ranges leave the overlap unspecified.
//
// # Memory
//
// Verity and VeriCrypt keep at most VerityOptions.TreeCache bytes of tree
// nodes (DefaultTreeCache, 16 MiB, unless set), whatever the device size.
// A device whose whole tree fits (64 bytes per data block rounded up to a
// power of two: up to 1 GiB of 4 KiB blocks with the default) keeps it in
// memory, verified once at open, so a read costs one HMAC over the block
// and no tree I/O. A larger device keeps the upper levels of the tree
// (verified at open, at most half the budget) and a cache of recently used
// groups of leaves: a block whose group is not cached costs one read of the
// group's leaves from the tree device (4 KiB for a 64 GiB device with the
// default) and the HMACs up to the kept levels, which the group must match
// before any of it is used. Stored interior nodes are never used, so the
// crash and tamper behaviour above is the same for every cache size; a leaf
// altered on the tree device after open fails the blocks of its group with
// errs.ErrAuthentication. Opening streams every leaf once (a 64 GiB device
// reads 512 MiB of leaves), and FormatVerity streams the data, hashing on
// every CPU: both in bounded memory.
package bd
