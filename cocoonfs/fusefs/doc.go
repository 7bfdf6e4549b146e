// Package fusefs serves an open CocoonFS image ([cocoonfs.FS]) as a FUSE
// file system, read-write or read-only, with github.com/hanwen/go-fuse/v2.
//
// # Names
//
// The mount is one directory holding the image's files, each named by its
// inode number in canonical decimal ("42", never "042" or "+42"). Creating
// a file (or renaming to a name) that is not such a number, or is a number
// reserved for the filesystem (below cocoonfs.FirstUserInode, 16), fails
// with EINVAL and a log line saying why; 2^64-1 is refused too, since FUSE
// reserves it. Directories, links and device nodes cannot be made (EPERM).
// Every file is a regular file of mode 0600 owned by the mounting user;
// chmod, chown and utimes are accepted and change nothing, since CocoonFS
// stores none of them, and times read as the epoch. st_ino is the inode
// number, except for a file renamed while the kernel still caches it,
// which keeps its old st_ino until the kernel lets it go: the name is
// authoritative.
//
// # Durability
//
// A file's changes become one CocoonFS transaction when it is fsynced or
// closed (every close(2) of a changed file, not only the last), and that
// call returns only after the transaction has committed, so "close
// returned" means the new contents are durable; after a crash at any
// moment the image holds each file's last committed contents, old or new,
// never a mix. A file created and closed without a write is committed
// empty. unlink, rename and a truncate(2) of a file nobody has open are
// each one transaction before they return. A commit that fails (no space)
// fails the close or fsync with the error and leaves the image unchanged;
// the changes stay pending and the next fsync or close retries them (or,
// when the failed commit had taken the file's staged copy, they are lost
// and the handles fail with EIO: the image still holds the old contents).
//
// Handles of one file share its contents, as on a local file system: a
// second writer sees and overwrites the first one's bytes, and whichever
// close comes last commits what the file holds then (last close wins).
// Handles still open on a file that is unlinked or replaced by a rename
// keep reading and writing its contents, which are frozen into a staged
// copy first (a copy of the file) and never committed. Rename re-encrypts
// the file: CocoonFS derives a file's data key from its inode number, so
// the new number needs a copy of the contents, written in the rename's
// transaction; it also commits the renamed file's pending changes.
//
// # Writing, in bounded memory
//
// A file written from its start (a new file, or O_TRUNC) collects its
// first 256 KiB in memory; past that it streams into a staged writer
// (cocoonfs.FS.Stage): the data goes to free blocks of the image as it
// arrives, encrypted, with many files in flight at once and alongside
// commits, and the commit at close only adopts it. Writes elsewhere, a
// truncate, or a read of a file being streamed switch that file to an
// overlay: 4 KiB dirty pages over the base (the committed file, or a
// closed staged copy, read back verified). At most 8 MiB of pages are kept
// per file; beyond that the merged file is written into a new staged copy
// that becomes the base, and appends stream again. At a commit the file's
// staged copy is made (if the changes are not one already) and adopted by
// a short transaction. So memory is
// bounded by the files open — at most 8 MiB of pages plus a staged
// writer's three 1 MiB segment buffers each — never by their size, and
// nothing but ciphertext in the image's own free space is ever written
// outside the process: no plaintext and no swap file on the host. The
// price is write amplification for random writes to large files (each
// 8 MiB of scattered changes rewrites the file once), which CocoonFS's
// write-the-whole-file design has anyway at every commit. What a staged
// writer wrote is free space again if the process dies before its commit.
//
// # Reading
//
// Reads of an unchanged file go to cocoonfs.File.ReadAt: only the data
// blocks a read touches are authenticated and decrypted, and reads of one
// file run in parallel. The mount asks the kernel for a 4 MiB read-ahead
// (its own /sys/class/bdi entry; this needs root, else the default 128 KiB
// stays), so a sequential reader keeps several 1 MiB requests in flight. A block that fails authentication is EIO for the
// whole request, logged once (inode and error, never data); nothing
// unauthenticated is ever returned. stat reads a file's last cipher blocks
// for its size, never its contents; statfs reports the image's size and
// free space in allocation blocks (cocoonfs.FS.Info, cached until the next
// commit through the mount).
//
// The mount must be the image's only writer while it runs (the sealfs
// command locks the image file); the kernel's attribute and entry caches
// rely on every change coming through it.
package fusefs
