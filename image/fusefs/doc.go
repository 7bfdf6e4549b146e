// Package fusefs serves a PuzzleFS image ([image.Image]) as a read-only
// FUSE file system, with github.com/hanwen/go-fuse/v2.
//
// [Mount] walks the image's metadata once (every directory, with the
// whiteouts of lower layers applied) before it mounts, so a corrupt tree
// (a missing inode, a directory reachable twice) is refused with
// errs.ErrCorrupt and nothing is mounted. After that the view is served from
// memory and from the chunk blobs:
//
//   - Inode numbers are the image's: hard links share one, and st_nlink
//     counts the names that point at an inode (a directory: 2 plus its
//     subdirectories). Modes, owners, device numbers, symlink targets and
//     extended attributes are the stored ones. Times are the epoch, since
//     the format records none; st_blocks is the size in 512-byte units.
//   - Every byte read goes through [image.Image.ReadAt], so it is checked
//     against its chunk's sha256 and, when the image was opened with a root
//     digest, the fs-verity chain. A chunk that fails is EIO for the reads
//     that need it, logged once with the chunk's digest (never file data);
//     the rest of the file system stays readable.
//   - The mount is "ro": opening for writing, creating, removing, renaming,
//     setattr and setxattr all fail with EROFS, before or after the kernel
//     asks.
//   - The image never changes under a mount, so the kernel may cache
//     entries, attributes and file contents for as long as it likes.
//
// Permission checks are the kernel's ("default_permissions"), against the
// stored modes and owners, so a mount with AllowOther is as private as the
// tree it shows.
//
// [Unmount] unmounts any FUSE mount point (fusermount3 -u, or umount(2)
// when run as root without fusermount), and names a path that is not one.
package fusefs
