// Package fusefs serves the NVRAM store of an open CocoonFS image (package
// nvram) as a FUSE file system: one flat directory whose files are the
// store's entries, named by entry name. It is the state directory swtpm
// runs on in `sealfs tpm run` (package tpm), and works with ordinary tools.
//
// # Semantics
//
// A file's contents are its entry's data. Changes to a file become one
// transaction of the image (nvram.Store.Update) when it is fsynced or
// closed — every close(2) of a changed file — and that call returns only
// after the commit is durable. A new file is committed at its first fsync
// or close, empty if nothing was written. rename is one transaction: the
// entry takes the new name (with the file's pending changes, if any), an
// entry of that name is replaced, and the old name is gone — so writing a
// temporary file, fsyncing it and renaming it over an entry, as swtpm and
// most programs replace state files, changes the entry atomically. unlink
// is one transaction, and so is truncate(2) of a file nobody has open.
// After a crash the store holds every entry as of its last completed
// commit. Handles of one file share its contents (the last close commits
// what it holds then: last close wins); handles of an unlinked or replaced
// file keep its contents, never committed again.
//
// A new entry gets the type Options.Type chooses for its name ("data" by
// default) and no attributes; writing an existing entry keeps its type and
// attributes (realsize follows the data). Renaming moves the entry's type
// and attributes with it. An entry whose mandatory attributes this version
// does not understand is listed with its size, but opening it for reading
// fails with EIO and a log line naming the attribute; it can still be
// replaced (O_TRUNC, or a rename over it), renamed or removed. Entries
// without a name, or whose name cannot be a file name ('/', NUL, "." or
// ".."), are not shown (logged once) and are kept as they are.
//
// Names that are not valid entry names (nvram.ValidName) cannot be created
// (EINVAL). Options.MemoryOnly names files that live in memory only while
// mounted, never in the store: swtpm's .lock file, which it creates and
// locks (the kernel holds the fcntl locks; the store sees nothing).
// Renames to or from such a file fail with EXDEV (mv then copies).
// Directories, links and device nodes cannot be made (EPERM). Files are
// mode 0600 and owned by the mounting user; chmod, chown and utimes are
// accepted and change nothing, and times read as the epoch.
//
// # Memory
//
// An entry's data is held in memory while its file is open (the NVRAM
// store holds whole entries in one directory file, at most
// nvram.MaxDirectorySize, 64 MiB; a write beyond that is EFBIG). The
// parsed directory is cached until the next commit through the mount, so
// stat and reads cost no image reads. statfs reports the image's size and
// free space.
//
// The mount must be the image's only writer while it runs.
package fusefs
