package fusefs

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/image"
)

// DefaultName is the mount's subtype (its type shows as "fuse.sealfs") and
// its source when Options leave FsName and Name empty.
const DefaultName = "sealfs"

// cacheTimeout is how long the kernel may keep entries (positive and
// negative) and attributes. The image cannot change under the mount, so
// the only limit is the kernel's memory, which it manages itself.
const cacheTimeout = 24 * time.Hour

// maxLogged bounds the distinct read errors remembered for logging once.
const maxLogged = 1024

// ErrNotMounted is returned by Unmount for a path that is not a mount point.
var ErrNotMounted = errors.New("not a mount point")

// Options are the settings of a mount. The zero value is a private mount
// named "sealfs".
type Options struct {
	// FsName is the mount's source, the first field of /proc/mounts and
	// df's "Filesystem" column, e.g. "OCIDIR:TAG". Default DefaultName.
	FsName string
	// Name is the subtype: the mount's type shows as "fuse.NAME".
	// Default DefaultName.
	Name string
	// AllowOther lets users other than the one who mounted see the file
	// system (the kernel still checks the stored modes and owners). Non-root
	// users need user_allow_other in /etc/fuse.conf.
	AllowOther bool
	// Debug logs every FUSE request and reply to Logger.
	Debug bool
	// Logger receives read failures (once per distinct failure, naming the
	// inode and the chunk digest, never file data) and, with Debug, the
	// FUSE traffic. Default: standard error.
	Logger *log.Logger
}

// Server is a mounted image. Its methods are safe for concurrent use.
type Server struct {
	srv        *fuse.Server
	mountpoint string
}

// Mount checks im's directory tree, mounts it read-only on mountpoint (an
// existing directory) and serves it in the background until Unmount, or
// until the mount point is unmounted from outside (Wait returns then).
//
// A tree that cannot be served (a missing inode, a directory reachable by
// two paths, a reserved inode number) is errs.ErrCorrupt and nothing is
// mounted.
func Mount(im *image.Image, mountpoint string, opts Options) (*Server, error) {
	if im == nil || im.Rootfs == nil {
		return nil, fmt.Errorf("fusefs: no image: %w", fs.ErrInvalid)
	}
	logger := opts.Logger
	if logger == nil {
		logger = log.New(os.Stderr, "", log.LstdFlags)
	}
	fsys, err := newFilesystem(im, logger)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return nil, fmt.Errorf("fusefs: mount point %q: %w", mountpoint, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("fusefs: mount point: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("fusefs: mount point %s is not a directory: %w", abs, fs.ErrInvalid)
	}

	timeout := cacheTimeout
	root := fsys.newNode(im.Root())
	srv, err := gofs.Mount(abs, root, &gofs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther: opts.AllowOther,
			FsName:     cmp.Or(opts.FsName, DefaultName),
			Name:       cmp.Or(opts.Name, DefaultName),
			Debug:      opts.Debug,
			Logger:     logger,
			// ro: the kernel refuses writes itself and shows the mount
			// read-only. default_permissions: the kernel checks the
			// stored modes and owners, as for a local file system.
			Options: []string{"ro", "default_permissions"},
		},
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		// A stored mode of 0000 stays 0000.
		NullPermissions: true,
		RootStableAttr:  &gofs.StableAttr{Ino: im.Root().Ino},
	})
	if err != nil {
		return nil, fmt.Errorf("fusefs: mount %s: %w", abs, err)
	}
	return &Server{srv: srv, mountpoint: abs}, nil
}

// Mountpoint returns the absolute path the image is mounted on.
func (s *Server) Mountpoint() string { return s.mountpoint }

// Wait blocks until the file system is unmounted, by Unmount or from
// outside (fusermount3 -u, umount).
func (s *Server) Wait() { s.srv.Wait() }

// Unmount unmounts the file system and waits for the server to stop. It
// fails (EBUSY) while a process still uses the mount. Unmounting twice is
// not an error.
func (s *Server) Unmount() error {
	if err := s.srv.Unmount(); err != nil {
		return fmt.Errorf("fusefs: unmount %s: %w", s.mountpoint, err)
	}
	return nil
}

// Unmount unmounts the FUSE file system mounted on mountpoint, whichever
// process serves it, with fusermount3 -u (or fusermount -u, or umount(2)
// when neither is installed). A path that is not a mount point is
// ErrNotMounted; one that is not a FUSE mount is refused with
// fs.ErrInvalid.
func Unmount(mountpoint string) error {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return fmt.Errorf("fusefs: %q: %w", mountpoint, err)
	}
	// mountinfo names mount points by their real path. The mount point
	// itself is not resolved: a dead server makes any stat of it fail.
	if dir, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		abs = filepath.Join(dir, filepath.Base(abs))
	}
	fstype, ok, err := mountType(abs)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("fusefs: %s: %w", abs, ErrNotMounted)
	}
	if fstype != "fuse" && fstype != "fuseblk" && !strings.HasPrefix(fstype, "fuse.") {
		return fmt.Errorf("fusefs: %s is a %s mount, not a FUSE one: %w", abs, fstype, fs.ErrInvalid)
	}
	for _, name := range []string{"fusermount3", "fusermount"} {
		bin, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		// abs starts with '/', so it cannot be taken for an option.
		if out, err := exec.Command(bin, "-u", abs).CombinedOutput(); err != nil {
			return fmt.Errorf("fusefs: %s -u %s: %v: %s", name, abs, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if err := unix.Unmount(abs, 0); err != nil {
		return fmt.Errorf("fusefs: unmount %s (neither fusermount3 nor fusermount is installed): %w", abs, err)
	}
	return nil
}

// mountType returns the file system type of the topmost mount on path
// (an absolute, clean path), from /proc/self/mountinfo.
func mountType(path string) (fstype string, ok bool, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false, fmt.Errorf("fusefs: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || unescapeMountinfo(fields[4]) != path {
			continue
		}
		for i := 5; i+1 < len(fields); i++ {
			if fields[i] == "-" {
				fstype, ok = fields[i+1], true // later lines are mounted on top
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", false, fmt.Errorf("fusefs: /proc/self/mountinfo: %w", err)
	}
	return fstype, ok, nil
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in a mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// filesystem is what every node of one mount shares. All of it but the
// log bookkeeping is computed by newFilesystem and never changes.
type filesystem struct {
	im     *image.Image
	dirs   map[uint64][]image.DirEntry // visible entries of every directory, sorted by name
	parent map[uint64]uint64           // each directory's parent (the root's is itself)
	nlink  map[uint64]uint32           // names pointing at each inode; 2+subdirectories for a directory
	files  uint64                      // visible inodes, for statfs
	bytes  uint64                      // sum of the sizes of the visible regular files, each inode once

	log    *log.Logger
	mu     sync.Mutex
	logged map[string]bool // read failures already logged
}

// newFilesystem walks the visible tree once: it lists every directory
// (merging layers, dropping whiteouts), counts links and refuses what
// cannot be served.
func newFilesystem(im *image.Image, logger *log.Logger) (*filesystem, error) {
	root := im.Root()
	if root == nil || root.Type != image.TypeDir {
		return nil, fmt.Errorf("fusefs: the image has no root directory: %w", errs.ErrCorrupt)
	}
	if reservedIno(root.Ino) {
		return nil, fmt.Errorf("fusefs: root directory has reserved inode number %d: %w", root.Ino, errs.ErrCorrupt)
	}
	f := &filesystem{
		im:     im,
		dirs:   map[uint64][]image.DirEntry{},
		parent: map[uint64]uint64{root.Ino: root.Ino},
		nlink:  map[uint64]uint32{},
		log:    logger,
		logged: map[string]bool{},
	}
	stack := []*image.Inode{root}
	seen := map[uint64]bool{root.Ino: true} // directories
	f.files = 1
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		ents, err := im.ReadDir(d)
		if err != nil {
			return nil, fmt.Errorf("fusefs: %w", err)
		}
		links := uint32(2)
		for _, e := range ents {
			in := im.Inode(e.Ino)
			switch {
			case in == nil:
				return nil, fmt.Errorf("fusefs: directory %d: entry %q names missing inode %d: %w", d.Ino, e.Name, e.Ino, errs.ErrCorrupt)
			case reservedIno(e.Ino):
				return nil, fmt.Errorf("fusefs: directory %d: entry %q has reserved inode number %d: %w", d.Ino, e.Name, e.Ino, errs.ErrCorrupt)
			case in.Type == image.TypeDir:
				if seen[in.Ino] {
					return nil, fmt.Errorf("fusefs: directory inode %d (entry %q of directory %d): %w: %w", in.Ino, e.Name, d.Ino, image.ErrLoop, errs.ErrCorrupt)
				}
				seen[in.Ino] = true
				f.parent[in.Ino] = d.Ino
				stack = append(stack, in)
				links++
				f.files++
				continue
			}
			if f.nlink[in.Ino] == 0 {
				f.files++
				f.bytes += in.Size()
			}
			if f.nlink[in.Ino] < math.MaxUint32 {
				f.nlink[in.Ino]++
			}
		}
		f.dirs[d.Ino] = ents
		f.nlink[d.Ino] = links
	}
	return f, nil
}

// reservedIno reports inode numbers FUSE cannot carry: 0 (go-fuse would
// assign its own) and ^0 (go-fuse's poll hack).
func reservedIno(ino uint64) bool { return ino == 0 || ino == math.MaxUint64 }

// readFailed logs a failed read once per distinct error. Image errors name
// the inode and the chunk digest; they never hold file data.
func (f *filesystem) readFailed(in *image.Inode, err error) {
	msg := err.Error()
	f.mu.Lock()
	first := !f.logged[msg] && len(f.logged) < maxLogged
	if first {
		f.logged[msg] = true
	}
	f.mu.Unlock()
	if first {
		f.log.Printf("fusefs: read of inode %d failed, returning EIO: %v", in.Ino, err)
	}
}
