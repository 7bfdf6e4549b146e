package fusefs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/sealfs/sealfs/cocoonfs"
	"github.com/sealfs/sealfs/internal/fusemount"
	"github.com/sealfs/sealfs/nvram"
)

// DefaultName is the mount's subtype: it shows as type "fuse.sealfs-nvram".
const DefaultName = "sealfs-nvram"

// DefaultType is the type of new entries when Options.Type is nil.
const DefaultType = "data"

// cacheTimeout is how long the kernel may keep entries and attributes;
// every change goes through the mount.
const cacheTimeout = time.Second

const maxLogged = 1024

// Options are the settings of a mount. The zero value is a private,
// read-write mount.
type Options struct {
	// ReadOnly serves the store read-only.
	ReadOnly bool
	// FsName is the mount's source (/proc/mounts); default DefaultName.
	// Commas become underscores (fusermount3 separates options by them).
	FsName string
	// Name is the subtype: the type shows as "fuse.NAME". Default
	// DefaultName.
	Name string
	// AllowOther lets other users in (files stay mode 0600).
	AllowOther bool
	// Debug logs every FUSE request and reply to Logger.
	Debug bool
	// Logger receives failures answered with EIO, unreadable entries and
	// refused names (never data) and, with Debug, the FUSE traffic.
	// Default: standard error.
	Logger *log.Logger
	// Type returns the type of a new entry named name; nil means
	// DefaultType for every name.
	Type func(name string) string
	// MemoryOnly reports names whose files exist only in memory while
	// mounted, never in the store (nil: none).
	MemoryOnly func(name string) bool
}

// Server is a mounted store. Its methods are safe for concurrent use.
type Server struct {
	srv        *fuse.Server
	fs         *filesystem
	mountpoint string
	done       chan struct{}
}

// Mount serves the NVRAM store of fsys on mountpoint (an existing
// directory) until Unmount or until it is unmounted from outside. An image
// without a store serves an empty one; the first file written creates it.
// The caller keeps fsys open until Wait has returned.
func Mount(fsys *cocoonfs.FS, mountpoint string, opts Options) (*Server, error) {
	if fsys == nil {
		return nil, fmt.Errorf("nvram fusefs: no image: %w", fs.ErrInvalid)
	}
	store, err := nvram.Open(fsys, &nvram.Options{Create: true})
	if err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = log.New(os.Stderr, "", log.LstdFlags)
	}
	st, err := os.Stat(mountpoint)
	if err != nil {
		return nil, fmt.Errorf("nvram fusefs: mount point: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("nvram fusefs: mount point %s is not a directory: %w", mountpoint, fs.ErrInvalid)
	}
	f := &filesystem{
		fsys: fsys, store: store, readOnly: opts.ReadOnly,
		typeOf: opts.Type, memoryOnly: opts.MemoryOnly,
		uid: uint32(os.Getuid()), gid: uint32(os.Getgid()),
		live: map[string]*entryNode{}, mem: map[string]*entryNode{},
		log: logger, logged: map[string]bool{},
	}
	if _, err := f.snapshot(); err != nil {
		return nil, err
	}
	mopts := []string{"default_permissions"}
	if opts.ReadOnly {
		mopts = append(mopts, "ro")
	}
	timeout := cacheTimeout
	srv, err := gofs.Mount(mountpoint, &rootNode{fs: f}, &gofs.Options{
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
		},
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		NullPermissions: true,
		UID:             f.uid,
		GID:             f.gid,
	})
	if err != nil {
		return nil, fmt.Errorf("nvram fusefs: mount %s: %w", mountpoint, err)
	}
	s := &Server{srv: srv, fs: f, mountpoint: mountpoint, done: make(chan struct{})}
	go func() {
		srv.Wait()
		f.shutdown()
		close(s.done)
	}()
	return s, nil
}

// Mountpoint returns the path the store is mounted on.
func (s *Server) Mountpoint() string { return s.mountpoint }

// Wait blocks until the file system is unmounted and every open file's
// changes were committed or discarded.
func (s *Server) Wait() { <-s.done }

// Unmount unmounts the file system and waits for the server to stop. It
// fails (EBUSY) while a process still uses the mount.
func (s *Server) Unmount() error {
	if err := s.srv.Unmount(); err != nil {
		return fmt.Errorf("nvram fusefs: unmount %s: %w", s.mountpoint, err)
	}
	<-s.done
	return nil
}

// filesystem is what the nodes of one mount share.
type filesystem struct {
	fsys       *cocoonfs.FS
	store      *nvram.Store
	readOnly   bool
	typeOf     func(string) string
	memoryOnly func(string) bool
	uid, gid   uint32

	// nsMu serializes create, unlink and rename. Lock order: nsMu, node
	// locks (source before target), mu.
	nsMu sync.Mutex
	mu   sync.Mutex
	live map[string]*entryNode // open files, by name
	mem  map[string]*entryNode // memory-only files, by name

	commits atomic.Uint64 // commits through the mount

	snapMu   sync.Mutex
	snap     *snapshot
	snapAt   uint64
	statInfo *cocoonfs.Info
	statAt   uint64

	log    *log.Logger
	logMu  sync.Mutex
	logged map[string]bool
}

// snapshot is the committed directory, parsed, with its entries by name.
type snapshot struct {
	dir   *nvram.Directory
	infos map[string]nvram.Info // entries whose names can be file names
	names []string              // the same, sorted
}

// snapshot returns the committed directory, cached until the next commit
// through the mount. Its Directory must be used under snapMu only... so
// it is never handed out: callers use the accessors below.
func (f *filesystem) snapshot() (*snapshot, error) {
	f.snapMu.Lock()
	defer f.snapMu.Unlock()
	at := f.commits.Load()
	if f.snap != nil && f.snapAt == at {
		return f.snap, nil
	}
	d, err := f.store.Snapshot()
	if err != nil {
		return nil, err
	}
	s := &snapshot{dir: d, infos: map[string]nvram.Info{}}
	for _, in := range d.List() {
		if in.Name == "" || strings.ContainsAny(in.Name, "/\x00") || in.Name == "." || in.Name == ".." || len(in.Name) > 255 {
			f.logOnce("entry %q (type %q) is not shown: its name cannot be a file name", in.Name, in.Type)
			continue
		}
		s.infos[in.Name] = in
		s.names = append(s.names, in.Name)
	}
	f.snap, f.snapAt = s, at
	return s, nil
}

// info describes the committed entry name.
func (f *filesystem) info(name string) (nvram.Info, bool, error) {
	s, err := f.snapshot()
	if err != nil {
		return nvram.Info{}, false, err
	}
	in, ok := s.infos[name]
	return in, ok, nil
}

// get returns the committed entry name (a copy).
func (f *filesystem) get(name string) (*nvram.Entry, error) {
	s, err := f.snapshot()
	if err != nil {
		return nil, err
	}
	f.snapMu.Lock()
	defer f.snapMu.Unlock()
	return s.dir.Get(name)
}

// update runs one transaction on the store.
func (f *filesystem) update(fn func(d *nvram.Directory) error) error {
	// Not cancellable: a commit is short, and the journal makes a cut one
	// harmless but not useful.
	err := f.store.Update(context.Background(), fn)
	f.commits.Add(1) // a failed update may still have read a newer directory
	return err
}

func (f *filesystem) newType(name string) string {
	if f.typeOf != nil {
		if t := f.typeOf(name); t != "" {
			return t
		}
	}
	return DefaultType
}

func (f *filesystem) isMemoryOnly(name string) bool {
	return f.memoryOnly != nil && f.memoryOnly(name)
}

// statfs returns the image's description, cached until the next commit.
func (f *filesystem) statfs() (*cocoonfs.Info, error) {
	f.snapMu.Lock()
	defer f.snapMu.Unlock()
	at := f.commits.Load()
	if f.statInfo != nil && f.statAt == at {
		return f.statInfo, nil
	}
	in, err := f.fsys.Info()
	if err != nil {
		return nil, err
	}
	f.statInfo, f.statAt = in, at
	return in, nil
}

func (f *filesystem) logOnce(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	f.logMu.Lock()
	first := !f.logged[msg] && len(f.logged) < maxLogged
	if first {
		f.logged[msg] = true
	}
	f.logMu.Unlock()
	if first {
		f.log.Print("nvram fusefs: " + msg)
	}
}

// errno turns an error into the kernel's answer, logging what becomes EIO.
func (f *filesystem) errno(op, name string, err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, cocoonfs.ErrNoSpace):
		return syscall.ENOSPC
	case errors.Is(err, nvram.ErrDirectoryTooLarge):
		return syscall.EFBIG
	case errors.Is(err, fs.ErrNotExist):
		return syscall.ENOENT
	case errors.Is(err, fs.ErrInvalid):
		return syscall.EINVAL
	case errors.Is(err, cocoonfs.ErrReadOnlyFS):
		return syscall.EROFS
	}
	f.logOnce("%s of entry %q failed, returning EIO: %v", op, name, err)
	return syscall.EIO
}

// shutdown commits what is still open once the kernel let go.
func (f *filesystem) shutdown() {
	f.mu.Lock()
	nodes := make([]*entryNode, 0, len(f.live))
	for _, n := range f.live {
		nodes = append(nodes, n)
	}
	f.mu.Unlock()
	for _, n := range nodes {
		n.mu.Lock()
		if n.opens > 0 {
			n.opens = 1
			n.releaseLocked()
		}
		n.mu.Unlock()
	}
}
