package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sealfs/sealfs/errs"
)

// OwnerPolicy says whether Extract restores the uid and gid of what it
// creates.
type OwnerPolicy uint8

const (
	// OwnersAuto restores ownership when the process runs as root (euid 0),
	// the one case where giving files away is permitted; otherwise
	// everything belongs to the caller, as with tar.
	OwnersAuto OwnerPolicy = iota
	// OwnersRestore always restores ownership; a chown the system refuses
	// (EPERM as non-root, EINVAL for an id a user namespace cannot map)
	// fails the extraction.
	OwnersRestore
	// OwnersIgnore never restores ownership.
	OwnersIgnore
)

// ExtractOptions tune Extract. The zero value restores everything the
// process is permitted to restore.
type ExtractOptions struct {
	// Owners says whether to restore uid and gid.
	Owners OwnerPolicy
	// NoXattrs skips extended attributes altogether (for file systems
	// without xattr support); they are counted in ExtractStats.SkippedXattrs.
	NoXattrs bool
	// SkipDevices skips character and block devices (counted in
	// ExtractStats.SkippedDevices) instead of failing where mknod is not
	// permitted. Further names of a skipped inode are skipped too.
	SkipDevices bool
	// Progress, if not nil, is called as file data is written with the
	// bytes written so far and the total to write.
	Progress func(done, total uint64)
	// Warn, if not nil, is told about each thing that was deliberately not
	// restored (an xattr in the trusted. or security. namespace the caller
	// may not set, a skipped device). Warnings are always counted in
	// ExtractStats, whether or not Warn is set.
	Warn func(path string, err error)
}

// ExtractStats counts what Extract created.
type ExtractStats struct {
	Files     int    `json:"files"`     // regular files (the first name of each inode)
	Dirs      int    `json:"dirs"`      // directories, the root included
	Symlinks  int    `json:"symlinks"`  // symbolic links (first names)
	Hardlinks int    `json:"hardlinks"` // further names of an inode already extracted
	Others    int    `json:"others"`    // fifos, character and block devices, sockets (first names)
	Bytes     uint64 `json:"bytes"`     // file data written
	// Owners reports whether uid and gid were restored.
	Owners bool `json:"owners"`
	// SkippedDevices counts devices not created (SkipDevices).
	SkippedDevices int `json:"skipped_devices"`
	// SkippedXattrs counts extended attributes not restored: all of them
	// with NoXattrs, else trusted.* and security.* ones the kernel refused
	// to a process that is not root.
	SkippedXattrs int `json:"skipped_xattrs"`
}

// maxExtractDepth bounds how deeply directories may nest: Extract holds one
// open descriptor per level, and no path-based tool could reach entries
// past PATH_MAX (4096 bytes, at least two per level) anyway.
const maxExtractDepth = 2048

// Extract recreates the image's tree as directory dir, which must not
// exist or be an empty directory (fs.ErrExist otherwise). It is
// ExtractContext without cancellation.
func (im *Image) Extract(dir string, opts ExtractOptions) (ExtractStats, error) {
	return im.ExtractContext(context.Background(), dir, opts)
}

// ExtractContext recreates the image's visible tree (whiteouts applied) as
// directory dir: regular files, directories, symbolic links, hard links,
// fifos, character and block devices, sockets (created with mknod, as an
// unbound socket inode), permission bits including setuid, setgid and
// sticky, extended attributes, and uid/gid as opts.Owners says. The image
// has no timestamps; everything gets the time of extraction.
//
// Nothing partial ever appears at dir. The tree is built in a new
// temporary directory next to it (".DIR.sealfs-extract-*", same parent,
// so the same file system), every file and directory is fsynced, and only
// then is the tree renamed to dir (replacing it if it is an empty
// directory) and the parent fsynced. On any error, including a
// cancellation of ctx, the temporary directory is removed and dir is left
// as it was. A power cut may leave the hidden temporary directory behind,
// never a partial dir.
//
// Every chunk is verified (sha256, and the fs-verity chain when the image
// was opened with a root digest) before a byte of it is written; a
// mismatch is errs.ErrAuthentication. A blob the image references but the
// layout lacks is errs.ErrCorrupt (wrapping fs.ErrNotExist), a directory
// reachable by two paths ErrLoop with errs.ErrCorrupt, and an entry type
// Linux cannot create (TypeUnknown, a device number wider than 12:20 bits)
// or nesting deeper than 2048 directories errs.ErrUnsupported.
//
// No write ever goes through a symbolic link: every entry is created
// relative to an open descriptor of its parent directory with no-follow,
// exclusive semantics (O_CREAT|O_EXCL|O_NOFOLLOW, mkdirat, mknodat,
// symlinkat, linkat without AT_SYMLINK_FOLLOW), and symbolic links are
// never resolved, so they may point anywhere and come in any order. Names
// are checked again ("", ".", "..", '/', NUL are refused). Ownership is
// set before the mode, so setuid and setgid survive; directory modes are
// applied after their contents, so a 0555 directory still gets its files.
//
// As a process that is not root: devices fail with a clear error naming
// the path (EPERM) unless SkipDevices; trusted.* and security.* xattrs the
// kernel refuses are skipped with a warning; ownership is not restored
// unless OwnersRestore, and then a refusal is an error.
func (im *Image) ExtractContext(ctx context.Context, dir string, opts ExtractOptions) (ExtractStats, error) {
	var stats ExtractStats
	if dir == "" {
		return stats, fmt.Errorf("image: extract: empty target directory name: %w", fs.ErrInvalid)
	}
	target, err := filepath.Abs(dir)
	if err != nil {
		return stats, fmt.Errorf("image: extract: %w", err)
	}
	parent, base := filepath.Dir(target), filepath.Base(target)
	if parent == target {
		return stats, fmt.Errorf("image: extract: %s: the target has no parent directory: %w", dir, fs.ErrInvalid)
	}
	if err := checkExtractTarget(target); err != nil {
		return stats, err
	}
	plan, total, err := im.extractPlan()
	if err != nil {
		return stats, err
	}
	if len(base) > 100 {
		base = base[:100] // keep the temporary name under NAME_MAX
	}
	tmp, err := os.MkdirTemp(parent, "."+base+".sealfs-extract-")
	if err != nil {
		return stats, fmt.Errorf("image: extract: %w", err)
	}
	stats, err = extractTree(ctx, im, plan, total, tmp, target, opts)
	if err != nil {
		if rerr := removeExtractTemp(tmp); rerr != nil {
			err = fmt.Errorf("%w (and removing the temporary directory failed: %v)", err, rerr)
		}
		return stats, err
	}
	// The tree is in place; what is left in tmp is an empty directory.
	if err := os.Remove(tmp); err != nil {
		return stats, fmt.Errorf("image: extract: %s is complete, but removing the temporary directory failed: %w", dir, err)
	}
	if err := syncDir(parent); err != nil {
		return stats, fmt.Errorf("image: extract: %s is complete, but syncing its parent failed: %w", dir, err)
	}
	return stats, nil
}

// checkExtractTarget accepts a target that does not exist or is an empty
// directory (not a symbolic link to one).
func checkExtractTarget(target string) error {
	fi, err := os.Lstat(target)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("image: extract: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("image: extract: %s exists and is not a directory: %w", target, fs.ErrExist)
	}
	f, err := os.Open(target)
	if err != nil {
		return fmt.Errorf("image: extract: %w", err)
	}
	defer f.Close()
	if _, err := f.Readdirnames(1); err != io.EOF {
		if err == nil {
			return fmt.Errorf("image: extract: %s is not empty: %w", target, fs.ErrExist)
		}
		return fmt.Errorf("image: extract: %w", err)
	}
	return nil
}

// extractEntry is one name to create, in depth-first pre-order.
type extractEntry struct {
	path  string // relative, '/'-separated; "." for the root
	name  string // the last path element; "" for the root
	in    *Inode
	depth int // directories above it: 0 for the root, 1 for its entries
	// first is, for a further name of a non-directory inode, the index of
	// its first name; -1 otherwise.
	first int
	// links is, on the first name of a non-directory inode, how many names
	// it has.
	links int
}

// extractPlan lists every visible name, parents before children, entries
// sorted by name, checking names again and refusing a directory reachable
// twice before anything is written. total is the file data to write.
func (im *Image) extractPlan() (plan []extractEntry, total uint64, err error) {
	root := im.Root()
	if root == nil || root.Type != TypeDir {
		return nil, 0, fmt.Errorf("image: extract: no root directory: %w", errs.ErrCorrupt)
	}
	type frame struct {
		idx  int // of the directory in plan
		ents []DirEntry
	}
	ents, err := im.ReadDir(root)
	if err != nil {
		return nil, 0, fmt.Errorf("image: extract: %w", err)
	}
	plan = []extractEntry{{path: ".", in: root, first: -1}}
	seenDir := map[uint64]bool{root.Ino: true}
	firstName := map[uint64]int{}
	stack := []frame{{0, ents}}
	for len(stack) > 0 {
		top := &stack[len(stack)-1]
		if len(top.ents) == 0 {
			stack = stack[:len(stack)-1]
			continue
		}
		e := top.ents[0]
		top.ents = top.ents[1:]
		parent := plan[top.idx].path
		if err := checkName(e.Name); err != nil {
			return nil, 0, fmt.Errorf("image: extract: directory %q: %w", parent, err)
		}
		in := im.Inode(e.Ino)
		if in == nil {
			return nil, 0, fmt.Errorf("image: extract: directory %q: entry %q names missing inode %d: %w", parent, e.Name, e.Ino, errs.ErrCorrupt)
		}
		p := string(e.Name)
		if parent != "." {
			p = parent + "/" + p
		}
		pe := extractEntry{path: p, name: string(e.Name), in: in, depth: len(stack), first: -1}
		switch {
		case in.Type == TypeWhiteout:
			continue // ReadDir hides them; never recreate one
		case in.Type == TypeDir:
			if seenDir[in.Ino] {
				return nil, 0, fmt.Errorf("image: extract: directory inode %d at %q: %w: %w", in.Ino, p, ErrLoop, errs.ErrCorrupt)
			}
			seenDir[in.Ino] = true
			if len(stack) >= maxExtractDepth {
				return nil, 0, fmt.Errorf("image: extract: %q: directories nest deeper than %d: %w", p, maxExtractDepth, errs.ErrUnsupported)
			}
			sub, err := im.ReadDir(in)
			if err != nil {
				return nil, 0, fmt.Errorf("image: extract: %q: %w", p, err)
			}
			plan = append(plan, pe)
			stack = append(stack, frame{len(plan) - 1, sub})
			continue
		case in.Type == TypeUnknown:
			return nil, 0, fmt.Errorf("image: extract: %q: inode %d has a file type PuzzleFS did not recognise: %w", p, in.Ino, errs.ErrUnsupported)
		}
		if i, ok := firstName[in.Ino]; ok {
			pe.first = i
			plan[i].links++
		} else {
			firstName[in.Ino] = len(plan)
			pe.links = 1
			total += in.Size()
		}
		plan = append(plan, pe)
	}
	return plan, total, nil
}

// removeExtractTemp removes a temporary tree. Directories whose final mode
// denies the caller (a 0555 or 0000 directory, as a process that is not
// root) are made accessible first.
func removeExtractTemp(dir string) error {
	if os.RemoveAll(dir) == nil {
		return nil
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700) // d comes from lstat: never a symlink
		}
		return nil
	})
	return os.RemoveAll(dir)
}
