package fusefs

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/image"
	"github.com/sealfs/sealfs/internal/testutil"
)

// mountCase is one reference image as a mount should show it.
type mountCase struct {
	name, oci, tag, digest string
	tree                   string // src/ tree it was built from
}

var mountCases = []mountCase{
	{name: "v1", oci: "oci", tag: "v1", tree: "tree1"},
	{name: "v1-verity", oci: "oci", tag: "v1", digest: digestV1, tree: "tree1"},
	{name: "v2", oci: "oci", tag: "v2", tree: "tree2"},
	{name: "v2-verity", oci: "oci", tag: "v2", digest: digestV2, tree: "tree2"},
	// v3's fsVerityData is wrong upstream, so only a sha256 mount reads.
	{name: "v3", oci: "oci-compressed-tree1", tag: "v3", tree: "tree1"},
}

// TestMountVectors mounts every reference image and compares the mount
// with the source tree it was built from: file contents and symlink
// targets (diff -r), the fs.FS contract (fstest), and every path's
// attributes against a real kernel file system holding the same tree
// (mode, nlink, size) and against the image metadata (inode numbers).
func TestMountVectors(t *testing.T) {
	testutil.RequireFUSE(t)
	diff := testutil.RequireTool(t, "diff")
	for _, c := range mountCases {
		t.Run(c.name, func(t *testing.T) {
			im := openImage(t, filepath.Join(vectors(t), c.oci), c.tag, c.digest)
			mnt, _, logs := mountImage(t, im, Options{})
			want := expectedTree(t, filepath.Join(vectors(t), "src", c.tree))

			if out, err := exec.Command(diff, "-r", "--no-dereference", want, mnt).CombinedOutput(); err != nil {
				t.Errorf("diff -r --no-dereference %s %s: %v\n%s", want, mnt, err, out)
			}

			var paths []string
			if err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
				if err == nil && p != want {
					rel, _ := filepath.Rel(want, p)
					paths = append(paths, rel)
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if err := fstest.TestFS(os.DirFS(mnt), paths...); err != nil {
				t.Errorf("fstest.TestFS: %v", err)
			}

			// Every name the mount shows is in the source tree, and the
			// other way round (a whiteout must not leave a name behind).
			var got []string
			if err := filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
				if err == nil && p != mnt {
					rel, _ := filepath.Rel(mnt, p)
					got = append(got, rel)
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, paths) {
				t.Errorf("mount shows %q, source tree has %q", got, paths)
			}

			inos := map[string]uint64{}
			if err := im.Walk(func(p string, in *image.Inode) error {
				inos[p] = in.Ino
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			for _, p := range append([]string{"."}, paths...) {
				compareAttrs(t, p, filepath.Join(want, p), filepath.Join(mnt, p), inos[p])
			}
			if logs.String() != "" {
				t.Errorf("server logged:\n%s", logs)
			}
		})
	}
}

// compareAttrs compares the lstat of a mounted path with the same path in
// the expected tree and with the inode number the metadata gives it.
func compareAttrs(t *testing.T, rel, want, got string, ino uint64) {
	t.Helper()
	var w, g unix.Stat_t
	if err := unix.Lstat(want, &w); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(got, &g); err != nil {
		t.Errorf("%s: %v", rel, err)
		return
	}
	if g.Mode != w.Mode {
		t.Errorf("%s: mode %#o, want %#o", rel, g.Mode, w.Mode)
	}
	if g.Nlink != w.Nlink {
		t.Errorf("%s: nlink %d, want %d", rel, g.Nlink, w.Nlink)
	}
	if g.Ino != ino {
		t.Errorf("%s: ino %d, the image says %d", rel, g.Ino, ino)
	}
	// The vectors were built as root; the copy may not be.
	if g.Uid != 0 || g.Gid != 0 {
		t.Errorf("%s: owner %d:%d, want 0:0", rel, g.Uid, g.Gid)
	}
	if g.Mtim.Sec != 0 || g.Ctim.Sec != 0 || g.Atim.Sec != 0 {
		t.Errorf("%s: times %v %v %v, want the epoch", rel, g.Atim, g.Mtim, g.Ctim)
	}
	if g.Mode&unix.S_IFMT != unix.S_IFDIR {
		if g.Size != w.Size {
			t.Errorf("%s: size %d, want %d", rel, g.Size, w.Size)
		}
		if want := (g.Size + 511) / 512; g.Blocks != want {
			t.Errorf("%s: %d blocks for %d bytes, want %d", rel, g.Blocks, g.Size, want)
		}
	}
}

// TestHardLinkAndXattrs checks the hard link, the symlink and the xattr of
// the vectors by their stated values.
func TestHardLinkAndXattrs(t *testing.T) {
	testutil.RequireFUSE(t)
	mnt, _, _ := mountImage(t, openImage(t, filepath.Join(vectors(t), "oci"), "v1", digestV1), Options{})
	hello := filepath.Join(mnt, "hello.txt")

	var a, b unix.Stat_t
	if err := unix.Stat(hello, &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(filepath.Join(mnt, "hardlink-hello.txt"), &b); err != nil {
		t.Fatal(err)
	}
	if a.Ino != b.Ino || a.Nlink != 2 || b.Nlink != 2 {
		t.Errorf("hello.txt ino %d nlink %d, hardlink-hello.txt ino %d nlink %d; want one inode, nlink 2", a.Ino, a.Nlink, b.Ino, b.Nlink)
	}
	if target, err := os.Readlink(filepath.Join(mnt, "link-to-hello")); err != nil || target != "hello.txt" {
		t.Errorf("Readlink(link-to-hello) = %q, %v; want hello.txt", target, err)
	}
	want, err := os.ReadFile(filepath.Join(vectors(t), "src", "tree1", "hello.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(mnt, "link-to-hello")); err != nil || !bytes.Equal(data, want) {
		t.Errorf("ReadFile(link-to-hello) = %q, %v; want hello.txt's %q", data, err, want)
	}

	for _, p := range []string{"hello.txt", "hardlink-hello.txt"} {
		path := filepath.Join(mnt, p)
		n, err := unix.Listxattr(path, nil)
		if err != nil || n != len("user.puzzlefs\x00") {
			t.Errorf("%s: Listxattr size = %d, %v", p, n, err)
		}
		buf := make([]byte, 64)
		n, err = unix.Listxattr(path, buf)
		if err != nil || string(buf[:n]) != "user.puzzlefs\x00" {
			t.Errorf("%s: Listxattr = %q, %v; want user.puzzlefs", p, buf[:n], err)
		}
		if n, err := unix.Getxattr(path, "user.puzzlefs", nil); err != nil || n != len("interop") {
			t.Errorf("%s: Getxattr size = %d, %v; want 7", p, n, err)
		}
		n, err = unix.Getxattr(path, "user.puzzlefs", buf)
		if err != nil || string(buf[:n]) != "interop" {
			t.Errorf("%s: Getxattr = %q, %v; want interop", p, buf[:n], err)
		}
		if _, err := unix.Getxattr(path, "user.puzzlefs", buf[:3]); err != unix.ERANGE {
			t.Errorf("%s: Getxattr into 3 bytes: %v, want ERANGE", p, err)
		}
		if _, err := unix.Getxattr(path, "user.other", buf); err != unix.ENODATA {
			t.Errorf("%s: Getxattr(user.other): %v, want ENODATA", p, err)
		}
	}
	if n, err := unix.Listxattr(filepath.Join(mnt, "subdir", "nested.txt"), make([]byte, 64)); err != nil || n != 0 {
		t.Errorf("nested.txt: Listxattr = %d, %v; want none", n, err)
	}
}

// TestWhiteout: v2 deletes empty with a whiteout over v1; no operation may
// find it.
func TestWhiteout(t *testing.T) {
	testutil.RequireFUSE(t)
	mnt, _, _ := mountImage(t, openImage(t, filepath.Join(vectors(t), "oci"), "v2", digestV2), Options{})
	if _, err := os.Lstat(filepath.Join(mnt, "empty")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lstat(empty) = %v, want ErrNotExist", err)
	}
	names, err := os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range names {
		if e.Name() == "empty" {
			t.Errorf("ReadDir lists empty")
		}
	}
	if _, err := os.Stat(filepath.Join(mnt, "subdir", "added.txt")); err != nil {
		t.Errorf("subdir/added.txt: %v", err)
	}
}

// TestTamperedChunk flips a byte of one chunk blob: reads that need the
// chunk fail with EIO, logged once with its digest; everything else
// (including the file's other chunks) still reads.
func TestTamperedChunk(t *testing.T) {
	testutil.RequireFUSE(t)
	// In oci:v1 blob 7c3b641c… is random.bin's second chunk, bytes
	// 220389..246693, and nothing else's (vectors decoded/oci_v1).
	const bad = "7c3b641c4646ac642222e67870e456414d4fdcbde77e525f9e61d12c77f01f8b"
	for _, digest := range []string{"", digestV1} {
		t.Run("digest="+digest, func(t *testing.T) {
			oci := copyLayout(t, filepath.Join(vectors(t), "oci"))
			blob := filepath.Join(oci, "blobs", "sha256", bad)
			b, err := os.ReadFile(blob)
			if err != nil {
				t.Fatal(err)
			}
			secret := slices.Clone(b[100:116])
			b[100] ^= 0x40
			if err := os.WriteFile(blob, b, 0o644); err != nil {
				t.Fatal(err)
			}
			mnt, _, logs := mountImage(t, openImage(t, oci, "v1", digest), Options{})

			for i := 0; i < 2; i++ {
				if _, err := os.ReadFile(filepath.Join(mnt, "random.bin")); !errors.Is(err, syscall.EIO) {
					t.Errorf("ReadFile(random.bin) = %v, want EIO", err)
				}
			}
			f, err := os.Open(filepath.Join(mnt, "random.bin"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 4096)
			if _, err := f.ReadAt(buf, 230000); !errors.Is(err, syscall.EIO) {
				t.Errorf("read inside the tampered chunk: %v, want EIO", err)
			}
			if _, err := f.ReadAt(buf, 0); err != nil {
				t.Errorf("read of the intact first chunk: %v", err)
			}
			if _, err := f.ReadAt(buf, 250000); err != nil {
				t.Errorf("read of the intact third chunk: %v", err)
			}
			for _, p := range []string{"hello.txt", "subdir/nested.txt", "empty"} {
				if _, err := os.ReadFile(filepath.Join(mnt, p)); err != nil {
					t.Errorf("ReadFile(%s) = %v; other files must still read", p, err)
				}
			}

			log := logs.String()
			if n := strings.Count(log, bad); n != 1 {
				t.Errorf("the log names the chunk %d times, want once:\n%s", n, log)
			}
			if bytes.Contains([]byte(log), secret) || strings.Contains(log, string(b[100:116])) {
				t.Errorf("the log holds file data:\n%q", log)
			}
		})
	}
}

// TestV3Verity: upstream wrote wrong fsVerityData for oci-compressed-tree1,
// so with the root digest every chunk fails (EIO) while the metadata,
// which the chain does cover, serves; a sha256-only mount of v3 reads (see
// TestMountVectors).
func TestV3Verity(t *testing.T) {
	testutil.RequireFUSE(t)
	mnt, _, logs := mountImage(t, openImage(t, filepath.Join(vectors(t), "oci-compressed-tree1"), "v3", digestV3), Options{})
	if _, err := os.ReadFile(filepath.Join(mnt, "hello.txt")); !errors.Is(err, syscall.EIO) {
		t.Errorf("ReadFile(hello.txt) = %v, want EIO", err)
	}
	if _, err := os.ReadFile(filepath.Join(mnt, "subdir", "nested.txt")); !errors.Is(err, syscall.EIO) {
		t.Errorf("ReadFile(subdir/nested.txt) = %v, want EIO", err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "empty")); err != nil || len(b) != 0 {
		t.Errorf("ReadFile(empty) = %q, %v; a file without chunks reads", b, err)
	}
	if st, err := os.Stat(filepath.Join(mnt, "random.bin")); err != nil || st.Size() != 300<<10 {
		t.Errorf("Stat(random.bin) = %v, %v", st, err)
	}
	if !strings.Contains(logs.String(), "4bafd3efde51a0e6d9647079242a09d85306234e748004e09fbb4110f000341a") {
		t.Errorf("log does not name the failing chunk:\n%s", logs)
	}
}

// TestReadOnly: every way of changing the tree fails with EROFS, and the
// mount is listed read-only with its name.
func TestReadOnly(t *testing.T) {
	testutil.RequireFUSE(t)
	mnt, _, _ := mountImage(t, openImage(t, filepath.Join(vectors(t), "oci"), "v1", ""), Options{FsName: "oci:v1", Name: "sealfs"})
	hello := filepath.Join(mnt, "hello.txt")
	open := func(flag int) func() error {
		return func() error {
			f, err := os.OpenFile(hello, flag, 0)
			if err == nil {
				f.Close()
			}
			return err
		}
	}
	for _, c := range []struct {
		name string
		op   func() error
	}{
		{"open O_WRONLY", open(os.O_WRONLY)},
		{"open O_RDWR", open(os.O_RDWR)},
		{"open O_TRUNC", open(os.O_RDONLY | os.O_TRUNC)},
		{"create", func() error { return os.WriteFile(filepath.Join(mnt, "new"), nil, 0o644) }},
		{"mkdir", func() error { return os.Mkdir(filepath.Join(mnt, "d"), 0o755) }},
		{"mknod", func() error { return unix.Mkfifo(filepath.Join(mnt, "fifo"), 0o644) }},
		{"unlink", func() error { return os.Remove(hello) }},
		{"rmdir", func() error { return unix.Rmdir(filepath.Join(mnt, "subdir")) }},
		{"rename", func() error { return os.Rename(hello, filepath.Join(mnt, "moved")) }},
		{"link", func() error { return os.Link(hello, filepath.Join(mnt, "link2")) }},
		{"symlink", func() error { return os.Symlink("hello.txt", filepath.Join(mnt, "sym2")) }},
		{"chmod", func() error { return os.Chmod(hello, 0o600) }},
		{"chown", func() error { return os.Chown(hello, 1, 1) }},
		{"truncate", func() error { return os.Truncate(hello, 0) }},
		{"utimes", func() error { return os.Chtimes(hello, time.Now(), time.Now()) }},
		{"setxattr", func() error { return unix.Setxattr(hello, "user.x", []byte("y"), 0) }},
		{"removexattr", func() error { return unix.Removexattr(hello, "user.puzzlefs") }},
	} {
		if err := c.op(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", c.name, err)
		}
	}
	if b, err := os.ReadFile(hello); err != nil || len(b) != 15 {
		t.Errorf("hello.txt after the attempts: %q, %v", b, err)
	}

	line := mountinfoLine(t, mnt)
	f := strings.Fields(line)
	i := slices.Index(f, "-")
	if i < 0 || i+3 > len(f) || f[i+1] != "fuse.sealfs" || f[i+2] != "oci:v1" || !slices.Contains(strings.Split(f[5], ","), "ro") {
		t.Errorf("mountinfo: %q; want type fuse.sealfs, source oci:v1, option ro", line)
	}
}

// TestStatfs: statfs answers for the mount, read-only, with the image's
// totals.
func TestStatfs(t *testing.T) {
	testutil.RequireFUSE(t)
	mnt, _, _ := mountImage(t, openImage(t, filepath.Join(vectors(t), "oci"), "v1", ""), Options{})
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	// tree1: hello.txt (15, twice linked), empty, random.bin (300 KiB),
	// subdir/nested.txt (12); 7 inodes with the root, subdir and the symlink.
	const bytes = 15 + 300<<10 + 12
	if st.Type != unix.FUSE_SUPER_MAGIC || st.Bsize != 4096 || st.Blocks != (bytes+4095)/4096 || st.Files != 7 || st.Bfree != 0 || st.Ffree != 0 {
		t.Errorf("statfs = %+v; want FUSE, 4096-byte blocks, %d blocks, 7 files, none free", st, (bytes+4095)/4096)
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("statfs flags %#x lack ST_RDONLY", st.Flags)
	}
}

// TestConcurrentReads reads one file from many goroutines, with small
// reads at odd offsets, and compares with the source (and, under -race,
// checks the server for races).
func TestConcurrentReads(t *testing.T) {
	testutil.RequireFUSE(t)
	want, err := os.ReadFile(filepath.Join(vectors(t), "src", "tree1", "random.bin"))
	if err != nil {
		t.Fatal(err)
	}
	mnt, _, _ := mountImage(t, openImage(t, filepath.Join(vectors(t), "oci-compressed-tree1"), "v3", ""), Options{})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Open(filepath.Join(mnt, "random.bin"))
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			buf := make([]byte, 7919)
			for off := int64(g * 1013); off < int64(len(want)); off += 37 * 1024 {
				n, err := f.ReadAt(buf, off)
				if err != nil && err != io.EOF {
					t.Error(err)
					return
				}
				if !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
					t.Errorf("bytes at %d differ", off)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestUnmount: Unmount by path (with a space in it) ends the mount and
// the server; a second time, or on a plain directory, it is
// ErrNotMounted.
func TestUnmount(t *testing.T) {
	testutil.RequireFUSE(t)
	mnt := filepath.Join(t.TempDir(), "a mount point")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	srv, err := Mount(openImage(t, filepath.Join(vectors(t), "oci"), "v1", ""), mnt, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if mountinfoLine(t, mnt) != "" {
			unmountForCleanup(t, srv)
		}
	})
	if mountinfoLine(t, mnt) == "" {
		t.Fatalf("%s is not in mountinfo after Mount", mnt)
	}
	if err := Unmount(mnt); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("server still running 10s after Unmount")
	}
	if line := mountinfoLine(t, mnt); line != "" {
		t.Errorf("still mounted: %s", line)
	}
	if err := Unmount(mnt); !errors.Is(err, ErrNotMounted) {
		t.Errorf("second Unmount = %v, want ErrNotMounted", err)
	}
	if err := Unmount(t.TempDir()); !errors.Is(err, ErrNotMounted) {
		t.Errorf("Unmount(plain directory) = %v, want ErrNotMounted", err)
	}
}

// TestMountRefuses: what cannot be served fails before anything is
// mounted (no FUSE needed).
func TestMountRefuses(t *testing.T) {
	dir := func(ino uint64, ents ...image.DirEntry) image.Inode {
		return image.Inode{Ino: ino, Type: image.TypeDir, Permissions: 0o755, Dir: &image.Dir{Entries: ents}}
	}
	ent := func(name string, ino uint64) image.DirEntry { return image.DirEntry{Name: []byte(name), Ino: ino} }
	file := image.Inode{Ino: 3, Type: image.TypeFile, Permissions: 0o644}
	for _, c := range []struct {
		name   string
		inodes []image.Inode
		want   []error
	}{
		{"no root", []image.Inode{file}, []error{errs.ErrCorrupt}},
		{"missing inode", []image.Inode{dir(image.RootIno, ent("a", 9))}, []error{errs.ErrCorrupt}},
		{"directory loop", []image.Inode{dir(image.RootIno, ent("a", 2)), dir(2, ent("up", image.RootIno))}, []error{image.ErrLoop, errs.ErrCorrupt}},
		{"directory hard link", []image.Inode{dir(image.RootIno, ent("a", 2), ent("b", 2)), dir(2)}, []error{image.ErrLoop, errs.ErrCorrupt}},
	} {
		t.Run(c.name, func(t *testing.T) {
			im := &image.Image{Rootfs: &image.Rootfs{Layers: []image.Layer{{Inodes: c.inodes}}}}
			mnt := t.TempDir()
			srv, err := Mount(im, mnt, Options{})
			if err == nil {
				srv.Unmount()
				t.Fatal("Mount succeeded")
			}
			for _, w := range c.want {
				if !errors.Is(err, w) {
					t.Errorf("Mount: %v, want %v", err, w)
				}
			}
		})
	}
	im := openImage(t, filepath.Join(vectors(t), "oci"), "v1", "")
	if _, err := Mount(im, filepath.Join(t.TempDir(), "missing"), Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Mount on a missing directory: %v, want ErrNotExist", err)
	}
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Mount(im, notDir, Options{}); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("Mount on a file: %v, want ErrInvalid", err)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b`:      "/a b",
		`/t\011ab\012`: "/t\tab\n",
		`/back\134s`:   `/back\s`,
		`/plain`:       "/plain",
		`/short\04`:    `/short\04`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
	if typ, ok, err := mountType("/proc"); err != nil || !ok || typ != "proc" {
		t.Errorf(`mountType("/proc") = %q, %v, %v; want "proc"`, typ, ok, err)
	}
}
