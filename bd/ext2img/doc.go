// Package ext2img makes reproducible ext2 filesystem images of a directory
// tree with mke2fs -d (e2fsprogs): the same tree and options give the same
// image, byte for byte, so that the root hash of a verity device over it can
// be pinned in a boot configuration.
//
// Left alone, mke2fs puts into the image a random UUID, a random directory
// hash seed, the current time (superblock, root directory, lost+found), the
// time stamps and owners of every file it copies, and whatever the host's
// mke2fs.conf and locale say. Build pins each of them:
//
//   - UUID: Options.UUID, or one derived from TreeDigest and the options,
//     so that different trees get different UUIDs (two images attached at
//     once must not share one) and the same tree the same one.
//   - Directory hash seed: derived from the UUID.
//   - Time: E2FSPROGS_FAKE_TIME (honoured by mke2fs and libext2fs) for what
//     mke2fs stamps itself (superblock, root, lost+found); then every
//     inode's atime, ctime, mtime and crtime is set to Options.Time in the
//     finished image, since mke2fs copies them from the source files (and
//     a source file's ctime cannot be set at all).
//   - Owners: every inode is made 0:0 (root), unless Options.KeepOwners.
//   - Directory order: mke2fs 1.47 copies a source directory's entries
//     sorted by name, not in the order the directory lists them; Build runs
//     it with LC_ALL=C so that the sort is by bytes whatever the caller's
//     locale. (The tests check it on tmpfs, which lists newest first.)
//   - Configuration: a fixed mke2fs.conf (the stock one of e2fsprogs 1.47)
//     through MKE2FS_CONFIG, an empty environment otherwise, and the block
//     size and inode size on the command line.
//
// What stays: file contents (blocks of zeros become holes whether or not the
// source file was sparse), names, the tree's shape and hard links, symbolic
// link targets, device numbers, permission bits and extended attributes.
// An image depends on the e2fsprogs version that made it; the tests check
// that the version installed here is reproducible.
package ext2img
