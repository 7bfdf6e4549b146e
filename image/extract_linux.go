package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sealfs/sealfs/errs"
)

// extractor holds the state of one ExtractContext call.
type extractor struct {
	ctx   context.Context
	im    *Image
	opts  ExtractOptions
	plan  []extractEntry
	stats ExtractStats
	root  bool // euid 0
	chown bool
	tree  string // the tree being built: TMP/tree
	// links is a descriptor of TMP/links, where the first name of every
	// multiply linked inode gets a second name (its inode number), so that
	// later names link to it in O(1), whatever the depth or the mode of
	// the directory holding the first name. -1 until needed.
	links       int
	staged      []string // names in links
	skipped     map[uint64]bool
	done, total uint64
}

// extractDirFrame is an open directory on the current path.
type extractDirFrame struct {
	fd int
	e  *extractEntry
}

// extractTree builds the tree in tmp/tree and renames it to target.
func extractTree(ctx context.Context, im *Image, plan []extractEntry, total uint64, tmp, target string, opts ExtractOptions) (ExtractStats, error) {
	x := &extractor{
		ctx: ctx, im: im, opts: opts, plan: plan, total: total,
		root:    os.Geteuid() == 0,
		tree:    filepath.Join(tmp, "tree"),
		links:   -1,
		skipped: map[uint64]bool{},
	}
	x.chown = opts.Owners == OwnersRestore || (opts.Owners == OwnersAuto && x.root)
	x.stats.Owners = x.chown
	err := x.run()
	if x.links >= 0 {
		unix.Close(x.links)
	}
	if err != nil {
		return x.stats, err
	}
	// rename(2) itself, not os.Rename, which refuses any existing
	// directory: an empty one is replaced atomically, a non-empty one or a
	// non-directory refused.
	if err := unix.Rename(x.tree, target); err != nil {
		if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTDIR) {
			err = fmt.Errorf("%w: %w", err, fs.ErrExist)
		}
		return x.stats, fmt.Errorf("image: extract: moving the finished tree to %s: %w", target, err)
	}
	return x.stats, nil
}

func (x *extractor) run() error {
	if err := unix.Mkdir(x.tree, 0o700); err != nil {
		return fmt.Errorf("image: extract: %s: %w", x.tree, err)
	}
	rootfd, err := unix.Open(x.tree, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("image: extract: %s: %w", x.tree, err)
	}
	stack := []extractDirFrame{{rootfd, &x.plan[0]}}
	defer func() {
		for _, f := range stack {
			unix.Close(f.fd)
		}
	}()
	if err := unix.Fchmod(rootfd, 0o700); err != nil { // whatever the umask
		return fmt.Errorf("image: extract: %s: %w", x.tree, err)
	}
	x.stats.Dirs++
	for i := 1; i < len(x.plan); i++ {
		if err := x.ctx.Err(); err != nil {
			return fmt.Errorf("image: extract: %w", err)
		}
		e := &x.plan[i]
		// Leaving a directory: its subtree is complete, so its own
		// ownership, xattrs and mode can be applied now.
		for len(stack) > e.depth {
			top := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			err := x.finishDir(top)
			unix.Close(top.fd)
			if err != nil {
				return err
			}
		}
		if len(stack) != e.depth {
			panic(fmt.Sprintf("BUG: image: extract plan entry %q at depth %d below %d open directories", e.path, e.depth, len(stack)))
		}
		fd, err := x.create(stack[len(stack)-1].fd, e)
		if err != nil {
			return err
		}
		if fd >= 0 {
			stack = append(stack, extractDirFrame{fd, e})
		}
	}
	for len(stack) > 0 {
		top := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		err := x.finishDir(top)
		unix.Close(top.fd)
		if err != nil {
			return err
		}
	}
	// The staged second names must not outlive the extraction; removing
	// them before the rename keeps a failure all-or-nothing.
	for _, n := range x.staged {
		if err := unix.Unlinkat(x.links, n, 0); err != nil {
			return fmt.Errorf("image: extract: removing a staged hard link: %w", err)
		}
	}
	if x.links >= 0 {
		if err := unix.Rmdir(filepath.Join(filepath.Dir(x.tree), "links")); err != nil {
			return fmt.Errorf("image: extract: %w", err)
		}
	}
	return nil
}

// fail names the entry in an error from the system.
func (x *extractor) fail(e *extractEntry, what string, err error) error {
	return fmt.Errorf("image: extract %q: %s: %w", e.path, what, err)
}

func (x *extractor) warn(e *extractEntry, err error) {
	if x.opts.Warn != nil {
		x.opts.Warn(e.path, err)
	}
}

// create makes one entry in directory parent. For a directory it returns
// an open descriptor of it, else -1.
func (x *extractor) create(parent int, e *extractEntry) (int, error) {
	// Checked by the decoder and the plan already; a name is what could
	// take a write out of the tree, so it is checked where it is used too.
	if err := checkName([]byte(e.name)); err != nil {
		return -1, fmt.Errorf("image: extract %q: %w", e.path, err)
	}
	in := e.in
	if e.first >= 0 {
		return -1, x.link(parent, e)
	}
	switch in.Type {
	case TypeDir:
		if err := unix.Mkdirat(parent, e.name, 0o700); err != nil {
			return -1, x.fail(e, "mkdir", err)
		}
		fd, err := unix.Openat(parent, e.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, x.fail(e, "open directory", err)
		}
		// Whatever the umask: the contents must be creatable.
		if err := unix.Fchmod(fd, 0o700); err != nil {
			unix.Close(fd)
			return -1, x.fail(e, "chmod", err)
		}
		x.stats.Dirs++
		return fd, nil
	case TypeFile:
		return -1, x.createFile(parent, e)
	case TypeSymlink:
		if err := unix.Symlinkat(string(in.SymlinkTarget), parent, e.name); err != nil {
			return -1, x.fail(e, "symlink", err)
		}
		x.stats.Symlinks++
	case TypeFifo, TypeChar, TypeBlock, TypeSocket:
		if err := x.mknod(parent, e); err != nil || x.skipped[in.Ino] {
			return -1, err
		}
		x.stats.Others++
	default:
		return -1, fmt.Errorf("image: extract %q: inode %d of type %s: %w", e.path, in.Ino, in.Type, errs.ErrUnsupported)
	}
	if err := x.stage(parent, e); err != nil {
		return -1, err
	}
	return -1, x.finishNode(parent, e)
}

// createFile writes a regular file: created exclusively, never through a
// symbolic link, its chunks verified before they are written.
func (x *extractor) createFile(parent int, e *extractEntry) error {
	fd, err := unix.Openat(parent, e.name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return x.fail(e, "create", err)
	}
	f := os.NewFile(uintptr(fd), e.path)
	defer f.Close()
	w := &extractWriter{x: x, f: f}
	if _, err := x.im.WriteFileTo(w, e.in); err != nil {
		switch {
		case w.err != nil:
			return x.fail(e, "write", w.err)
		case errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("image: extract %q: a blob of the image is missing: %w: %w", e.path, err, errs.ErrCorrupt)
		}
		return fmt.Errorf("image: extract %q: %w", e.path, err)
	}
	x.stats.Files++
	if err := x.stage(parent, e); err != nil {
		return err
	}
	if err := x.finishFd(fd, e); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return x.fail(e, "fsync", err)
	}
	if err := f.Close(); err != nil {
		return x.fail(e, "close", err)
	}
	return nil
}

// extractWriter counts, reports progress, honours cancellation, and tells
// a failed write apart from a failed read of the image.
type extractWriter struct {
	x   *extractor
	f   *os.File
	err error
}

func (w *extractWriter) Write(p []byte) (int, error) {
	if err := w.x.ctx.Err(); err != nil {
		w.err = err
		return 0, err
	}
	n, err := w.f.Write(p)
	w.x.stats.Bytes += uint64(n)
	w.x.done += uint64(n)
	if err != nil {
		w.err = err
	}
	if w.x.opts.Progress != nil {
		w.x.opts.Progress(w.x.done, w.x.total)
	}
	return n, err
}

// mknod creates a fifo, device or socket node.
func (x *extractor) mknod(parent int, e *extractEntry) error {
	in := e.in
	var mode uint32
	dev := 0
	switch in.Type {
	case TypeFifo:
		mode = unix.S_IFIFO
	case TypeSocket:
		mode = unix.S_IFSOCK
	case TypeChar, TypeBlock:
		mode = unix.S_IFCHR
		if in.Type == TypeBlock {
			mode = unix.S_IFBLK
		}
		if x.opts.SkipDevices {
			x.skipped[in.Ino] = true
			x.stats.SkippedDevices++
			x.warn(e, fmt.Errorf("%s device %d:%d not created (skipping devices)", in.Type, in.Major, in.Minor))
			return nil
		}
		// The kernel's dev_t is 12 bits of major and 20 of minor.
		if in.Major > 0xfff || in.Minor > 0xfffff {
			return fmt.Errorf("image: extract %q: device %d:%d does not fit Linux's 12-bit major and 20-bit minor: %w", e.path, in.Major, in.Minor, errs.ErrUnsupported)
		}
		dev = int(unix.Mkdev(uint32(in.Major), uint32(in.Minor)))
	}
	if err := unix.Mknodat(parent, e.name, mode|0o600, dev); err != nil {
		if errors.Is(err, unix.EPERM) && (in.Type == TypeChar || in.Type == TypeBlock) {
			return fmt.Errorf("image: extract %q: creating %s device %d:%d needs privilege (run as root, or skip devices): %w", e.path, in.Type, in.Major, in.Minor, err)
		}
		return x.fail(e, "mknod", err)
	}
	return nil
}

// link gives an already extracted inode another name.
func (x *extractor) link(parent int, e *extractEntry) error {
	first := &x.plan[e.first]
	if x.skipped[first.in.Ino] {
		x.stats.SkippedDevices++
		x.warn(e, fmt.Errorf("hard link to skipped device %q not created", first.path))
		return nil
	}
	if x.links < 0 {
		panic(fmt.Sprintf("BUG: image: extract %q: the first name %q of inode %d was not staged", e.path, first.path, first.in.Ino))
	}
	if err := unix.Linkat(x.links, strconv.FormatUint(first.in.Ino, 10), parent, e.name, 0); err != nil {
		return x.fail(e, fmt.Sprintf("hard link to %q", first.path), err)
	}
	x.stats.Hardlinks++
	return nil
}

// stage gives the first name of a multiply linked inode its second name in
// the links directory.
func (x *extractor) stage(parent int, e *extractEntry) error {
	if e.links < 2 {
		return nil
	}
	if x.links < 0 {
		dir := filepath.Join(filepath.Dir(x.tree), "links")
		if err := unix.Mkdir(dir, 0o700); err != nil {
			return fmt.Errorf("image: extract: %s: %w", dir, err)
		}
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("image: extract: %s: %w", dir, err)
		}
		x.links = fd
	}
	n := strconv.FormatUint(e.in.Ino, 10)
	if err := unix.Linkat(parent, e.name, x.links, n, 0); err != nil {
		return x.fail(e, "staging a hard link", err)
	}
	x.staged = append(x.staged, n)
	return nil
}

// finishFd applies ownership, xattrs and mode, in that order, to an open
// file or directory: chown clears setuid, setgid and file capabilities,
// so it goes first; the mode goes last so it is exactly the stored one
// (setting a POSIX ACL rewrites the group bits).
func (x *extractor) finishFd(fd int, e *extractEntry) error {
	in := e.in
	if x.chown {
		if err := unix.Fchown(fd, int(in.UID), int(in.GID)); err != nil {
			return x.fail(e, fmt.Sprintf("chown %d:%d", in.UID, in.GID), err)
		}
	}
	if err := x.xattrs(e, func(k string, v []byte) error { return unix.Fsetxattr(fd, k, v, 0) }); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, uint32(in.Permissions)); err != nil {
		return x.fail(e, fmt.Sprintf("chmod %#o", in.Permissions), err)
	}
	return nil
}

// finishNode does the same for a symbolic link or special file, which
// cannot be opened for writing: by name relative to its parent, never
// following a link. Symbolic links have no mode of their own on Linux.
func (x *extractor) finishNode(parent int, e *extractEntry) error {
	in := e.in
	if x.chown {
		if err := unix.Fchownat(parent, e.name, int(in.UID), int(in.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return x.fail(e, fmt.Sprintf("chown %d:%d", in.UID, in.GID), err)
		}
	}
	// The path runs through directories this extraction created inside
	// its private (0700) temporary directory; lsetxattr does not follow
	// the last element.
	p := filepath.Join(x.tree, filepath.FromSlash(e.path))
	if err := x.xattrs(e, func(k string, v []byte) error { return unix.Lsetxattr(p, k, v, 0) }); err != nil {
		return err
	}
	if in.Type == TypeSymlink {
		return nil
	}
	// Not a symbolic link: it was just created by mknodat.
	if err := unix.Fchmodat(parent, e.name, uint32(in.Permissions), 0); err != nil {
		return x.fail(e, fmt.Sprintf("chmod %#o", in.Permissions), err)
	}
	return nil
}

// finishDir completes a directory once its whole subtree exists.
func (x *extractor) finishDir(d extractDirFrame) error {
	if err := x.finishFd(d.fd, d.e); err != nil {
		return err
	}
	if err := unix.Fsync(d.fd); err != nil {
		return x.fail(d.e, "fsync", err)
	}
	return nil
}

// xattrs restores e's extended attributes with set.
func (x *extractor) xattrs(e *extractEntry, set func(key string, val []byte) error) error {
	if x.opts.NoXattrs {
		x.stats.SkippedXattrs += len(e.in.Xattrs)
		return nil
	}
	for _, xa := range e.in.Xattrs {
		k := string(xa.Key)
		err := set(k, xa.Value)
		switch {
		case err == nil:
			continue
		case errors.Is(err, unix.EPERM) && !x.root && (strings.HasPrefix(k, "trusted.") || strings.HasPrefix(k, "security.")):
			x.stats.SkippedXattrs++
			x.warn(e, fmt.Errorf("xattr %q not restored (needs root): %w", k, err))
			continue
		case errors.Is(err, unix.ENOTSUP):
			return fmt.Errorf("image: extract %q: xattr %q: the target file system does not support it (skip xattrs to extract anyway): %w", e.path, k, err)
		}
		return x.fail(e, fmt.Sprintf("xattr %q", k), err)
	}
	return nil
}
