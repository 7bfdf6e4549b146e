package fusefs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"math"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/sealfs/sealfs/cocoonfs"
	"github.com/sealfs/sealfs/internal/fusemount"
)

// DefaultName is the mount's subtype: it shows as type "fuse.cocoonfs".
const DefaultName = "cocoonfs"

// cacheTimeout is how long the kernel may keep entries and attributes.
// Every change goes through this mount, so the kernel's caches stay right;
// the timeout only bounds how long a file whose node it dropped stays
// cached.
const cacheTimeout = time.Second

// maxLogged bounds the distinct errors remembered for logging once.
const maxLogged = 1024

// Options are the settings of a mount. The zero value is a private,
// read-write mount.
type Options struct {
	// ReadOnly serves the image read-only (the image must have been opened
	// without cocoonfs.Options.ReadWrite, or writes are refused anyway).
	ReadOnly bool
	// FsName is the mount's source, the first field of /proc/mounts.
	// Default DefaultName.
	FsName string
	// Name is the subtype: the mount's type shows as "fuse.NAME".
	// Default DefaultName.
	Name string
	// AllowOther lets other users in (the files are still mode 0600,
	// owned by the mounting user; non-root users need user_allow_other in
	// /etc/fuse.conf).
	AllowOther bool
	// Debug logs every FUSE request and reply to Logger.
	Debug bool
	// Logger receives failures answered with EIO (once per distinct
	// failure; never file data) and, with Debug, the FUSE traffic.
	// Default: standard error.
	Logger *log.Logger
}

// Server is a mounted image. Its methods are safe for concurrent use.
type Server struct {
	srv        *fuse.Server
	fs         *filesystem
	mountpoint string
	done       chan struct{}
}

// Mount serves fsys on mountpoint (an existing directory) in the background
// until Unmount, or until the mount point is unmounted from outside (Wait
// returns then). The caller keeps fsys open until Wait has returned.
func Mount(fsys *cocoonfs.FS, mountpoint string, opts Options) (*Server, error) {
	if fsys == nil {
		return nil, fmt.Errorf("fusefs: no image: %w", fs.ErrInvalid)
	}
	logger := opts.Logger
	if logger == nil {
		logger = log.New(os.Stderr, "", log.LstdFlags)
	}
	st, err := os.Stat(mountpoint)
	if err != nil {
		return nil, fmt.Errorf("fusefs: mount point: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("fusefs: mount point %s is not a directory: %w", mountpoint, fs.ErrInvalid)
	}
	f := &filesystem{
		fsys:     fsys,
		readOnly: opts.ReadOnly,
		log:      logger,
		logged:   map[string]bool{},
		live:     map[uint64]*fileNode{},
		gens:     map[uint64]uint64{},
		uid:      uint32(os.Getuid()),
		gid:      uint32(os.Getgid()),
	}
	mopts := []string{"default_permissions"}
	if opts.ReadOnly {
		mopts = append(mopts, "ro")
	}
	timeout := cacheTimeout
	root := &rootNode{fs: f}
	srv, err := gofs.Mount(mountpoint, root, &gofs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther: opts.AllowOther,
			FsName:     fusemount.Source(cmp.Or(opts.FsName, DefaultName)),
			Name:       cmp.Or(opts.Name, DefaultName),
			Debug:      opts.Debug,
			Logger:     logger,
			Options:    mopts,
			// O_TRUNC reaches Open, so an entry that cannot be read can
			// still be replaced, and nothing is loaded only to be dropped.
			ExtraCapabilities: fuse.CAP_ATOMIC_O_TRUNC,
			// Large requests: one staged-writer segment per write, and
			// reads big enough to use every core.
			MaxWrite: 1 << 20,
		},
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		NullPermissions: true,
		UID:             f.uid,
		GID:             f.gid,
	})
	if err != nil {
		return nil, fmt.Errorf("fusefs: mount %s: %w", mountpoint, err)
	}
	raiseReadahead(mountpoint, logger)
	s := &Server{srv: srv, fs: f, mountpoint: mountpoint, done: make(chan struct{})}
	go func() {
		srv.Wait()
		f.shutdown()
		close(s.done)
	}()
	return s, nil
}

// readaheadKiB is the read-ahead the mount asks the kernel for. The
// kernel's default for FUSE, 128 KiB, makes a sequential reader wait for
// each 128 KiB request in turn; with 4 MiB it keeps several 1 MiB requests
// in flight, which the server handles on every core: reading a large file
// through the mount is then about as fast as `sealfs read` (bench/mount.sh).
const readaheadKiB = 4096

// raiseReadahead sets the read-ahead of the mount's backing device info
// (/sys/class/bdi/MAJOR:MINOR/read_ahead_kb, which belongs to this mount
// alone). It needs privileges; without them the kernel's default stays.
func raiseReadahead(mountpoint string, logger *log.Logger) {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return
	}
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(path, []byte(strconv.Itoa(readaheadKiB)), 0); err != nil && !errors.Is(err, fs.ErrPermission) {
		logger.Printf("cocoonfs fusefs: could not raise the read-ahead (%v); sequential reads stay slower", err)
	}
}

// Mountpoint returns the path the image is mounted on.
func (s *Server) Mountpoint() string { return s.mountpoint }

// Wait blocks until the file system is unmounted, by Unmount or from
// outside (fusermount3 -u), and every open file's changes were committed
// or discarded (see the package doc).
func (s *Server) Wait() { <-s.done }

// Unmount unmounts the file system and waits for the server to stop. It
// fails (EBUSY) while a process still uses the mount.
func (s *Server) Unmount() error {
	if err := s.srv.Unmount(); err != nil {
		return fmt.Errorf("fusefs: unmount %s: %w", s.mountpoint, err)
	}
	<-s.done
	return nil
}

// filesystem is what every node of one mount shares.
type filesystem struct {
	fsys     *cocoonfs.FS
	readOnly bool
	uid, gid uint32

	// nsMu serializes changes of the namespace (create, unlink, rename).
	// Lock order: nsMu, then node locks (source before target), then mu.
	nsMu sync.Mutex
	// mu guards live and gens.
	mu sync.Mutex
	// live maps an inode number to the node whose open handles or
	// uncommitted contents it has: while a file is open, every lookup of
	// its number finds that node.
	live map[uint64]*fileNode
	// gens holds each inode number's generation, bumped when a number
	// starts naming another file (rename, unlink, create), so that the
	// kernel never takes a new file for an old one it still caches.
	gens    map[uint64]uint64
	nextGen uint64

	// commits counts commits made through the mount: cached sizes are
	// valid while it is unchanged.
	commits atomic.Uint64

	log    *log.Logger
	logMu  sync.Mutex
	logged map[string]bool
}

// parseName maps a file name to an inode number: the canonical decimal
// form of a user inode that FUSE can carry (go-fuse reserves 2^64-1).
func parseName(name string) (uint64, bool) {
	ino, err := strconv.ParseUint(name, 10, 64)
	if err != nil || strconv.FormatUint(ino, 10) != name || ino < cocoonfs.FirstUserInode || ino == math.MaxUint64 {
		return 0, false
	}
	return ino, true
}

// gen returns the current generation of ino; bump starts a new one. The
// caller holds f.mu.
func (f *filesystem) gen(ino uint64) uint64 { return f.gens[ino] }

func (f *filesystem) bump(ino uint64) {
	f.nextGen++
	f.gens[ino] = f.nextGen
}

// liveNode returns the node registered for ino, or nil.
func (f *filesystem) liveNode(ino uint64) *fileNode {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live[ino]
}

// logOnce logs a failure the first time it is seen.
func (f *filesystem) logOnce(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	f.logMu.Lock()
	first := !f.logged[msg] && len(f.logged) < maxLogged
	if first {
		f.logged[msg] = true
	}
	f.logMu.Unlock()
	if first {
		f.log.Print("cocoonfs fusefs: " + msg)
	}
}

// errno turns an error into the answer to the kernel, logging the ones
// that become EIO (what failed, never file data).
func (f *filesystem) errno(op string, ino uint64, err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, cocoonfs.ErrNoSpace):
		return syscall.ENOSPC
	case errors.Is(err, fs.ErrNotExist):
		return syscall.ENOENT
	case errors.Is(err, fs.ErrInvalid):
		return syscall.EINVAL
	case errors.Is(err, cocoonfs.ErrReadOnlyFS):
		return syscall.EROFS
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	}
	f.logOnce("%s of inode %d failed, returning EIO: %v", op, ino, err)
	return syscall.EIO
}

// commit runs one transaction: fill adds the changes. It retries nothing;
// a failed transaction leaves the image as it was.
func (f *filesystem) commit(fill func(tx *cocoonfs.Tx) error) error {
	tx, err := f.fsys.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fill(tx); err != nil {
		return err
	}
	// Not cancellable: the kernel may interrupt the request, but a commit
	// is short and half of one is what the journal is for, not a goal.
	if err := tx.Commit(context.Background()); err != nil {
		return err
	}
	f.commits.Add(1)
	return nil
}

// shutdown runs once the kernel let go of the mount: whatever is still
// open (a lazy unmount, a kernel that never sent the releases) is
// committed as a last close would, and staged blocks are given back.
func (f *filesystem) shutdown() {
	f.mu.Lock()
	nodes := make([]*fileNode, 0, len(f.live))
	for _, n := range f.live {
		nodes = append(nodes, n)
	}
	f.mu.Unlock()
	for _, n := range nodes {
		n.mu.Lock()
		n.opens = 1
		n.releaseLocked()
		n.mu.Unlock()
	}
}
