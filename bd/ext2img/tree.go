package ext2img

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// TreeDigest is a SHA-256 digest of what Build copies from dir into an
// image: every entry below dir in byte order of its path, with its type,
// permission bits, contents (files), target (symbolic links), device
// number, extended attributes and hard-link identity, plus dir's own
// extended attributes; with keepOwners also numeric owners. Time stamps,
// inode numbers and the order a directory lists its entries in are not part
// of it, as Build does not keep them. It reads every file once.
func TreeDigest(ctx context.Context, dir string, keepOwners bool) ([]byte, error) {
	d := &treeDigest{h: sha256.New(), keepOwners: keepOwners, links: map[fileID]string{}, buf: make([]byte, 1<<20)}
	d.h.Write([]byte("sealfs ext2img tree v1\x00"))
	if err := d.xattrs(dir); err != nil {
		return nil, err
	}
	if keepOwners {
		st, err := lstat(dir)
		if err != nil {
			return nil, err
		}
		d.num(uint64(st.Uid))
		d.num(uint64(st.Gid))
	}
	if err := d.walk(ctx, dir, ""); err != nil {
		return nil, err
	}
	return d.h.Sum(nil), nil
}

type fileID struct{ dev, ino uint64 }

type treeDigest struct {
	h          hash.Hash
	keepOwners bool
	links      map[fileID]string // hard-linked files seen, by first path
	buf        []byte
}

// field writes one length-prefixed field, so that no two different
// sequences of fields hash alike.
func (d *treeDigest) field(b []byte) {
	d.num(uint64(len(b)))
	d.h.Write(b)
}

func (d *treeDigest) num(v uint64) {
	var b [binary.MaxVarintLen64]byte
	d.h.Write(b[:binary.PutUvarint(b[:], v)])
}

func lstat(p string) (*syscall.Stat_t, error) {
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return nil, fmt.Errorf("ext2img: %w", &os.PathError{Op: "lstat", Path: p, Err: err})
	}
	return &st, nil
}

// walk digests the entries of the directory at path p (rel below the
// root), in byte order of their names, as mke2fs copies them under LC_ALL=C.
func (d *treeDigest) walk(ctx context.Context, p, rel string) error {
	entries, err := os.ReadDir(p) // sorted by name, byte-wise
	if err != nil {
		return fmt.Errorf("ext2img: %w", err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		full, name := filepath.Join(p, e.Name()), rel+"/"+e.Name()
		st, err := lstat(full)
		if err != nil {
			return err
		}
		d.field([]byte(name))
		d.num(uint64(st.Mode)) // type and permission bits
		if d.keepOwners {
			d.num(uint64(st.Uid))
			d.num(uint64(st.Gid))
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFDIR && st.Nlink > 1 {
			id := fileID{uint64(st.Dev), st.Ino}
			if first, ok := d.links[id]; ok {
				d.field([]byte("link to " + first))
				continue
			}
			d.links[id] = name
		}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			if err := d.contents(full, st.Size); err != nil {
				return err
			}
		case syscall.S_IFLNK:
			target, err := os.Readlink(full)
			if err != nil {
				return fmt.Errorf("ext2img: %w", err)
			}
			d.field([]byte(target))
		case syscall.S_IFCHR, syscall.S_IFBLK:
			d.num(uint64(unix.Major(uint64(st.Rdev))))
			d.num(uint64(unix.Minor(uint64(st.Rdev))))
		}
		if err := d.xattrs(full); err != nil {
			return err
		}
		if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			if err := d.walk(ctx, full, name); err != nil {
				return err
			}
			d.field([]byte("end of " + name))
		}
	}
	return nil
}

// contents digests a file's size and bytes.
func (d *treeDigest) contents(p string, size int64) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("ext2img: %w", err)
	}
	defer f.Close()
	d.num(uint64(size))
	n, err := io.CopyBuffer(d.h, io.LimitReader(f, size), d.buf)
	if err != nil {
		return fmt.Errorf("ext2img: %s: %w", p, err)
	}
	if n != size {
		return fmt.Errorf("ext2img: %s changed while being read (%d of %d bytes)", p, n, size)
	}
	return nil
}

// xattrs digests the extended attributes of p, by name.
func (d *treeDigest) xattrs(p string) error {
	names, err := listXattrs(p)
	if err != nil {
		return err
	}
	slices.Sort(names)
	d.num(uint64(len(names)))
	for _, name := range names {
		v, err := getXattr(p, name)
		if err != nil {
			return err
		}
		d.field([]byte(name))
		d.field(v)
	}
	return nil
}

// maxXattrBuf bounds the buffers for attribute names and values: Linux
// allows 64 KiB for each.
const maxXattrBuf = 1 << 20

func listXattrs(p string) ([]string, error) {
	buf := make([]byte, 1024)
	for {
		n, err := unix.Llistxattr(p, buf)
		switch {
		case errors.Is(err, unix.ERANGE) && len(buf) < maxXattrBuf:
			buf = make([]byte, 2*len(buf))
			continue
		case errors.Is(err, unix.ENOTSUP):
			return nil, nil // a file system without xattrs: mke2fs copies none
		case err != nil:
			return nil, fmt.Errorf("ext2img: %w", &os.PathError{Op: "llistxattr", Path: p, Err: err})
		}
		return splitNUL(buf[:n]), nil
	}
}

func getXattr(p, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) && len(buf) < maxXattrBuf {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("ext2img: %w", &os.PathError{Op: "lgetxattr " + name, Path: p, Err: err})
		}
		return buf[:n], nil
	}
}

func splitNUL(b []byte) []string {
	var out []string
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != 0 {
			i++
		}
		if i > 0 {
			out = append(out, string(b[:i]))
		}
		if i == len(b) {
			break
		}
		b = b[i+1:]
	}
	return out
}
