package ext2img

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sealfs/sealfs/internal/testutil"
)

// entry is one thing in a test tree.
type entry struct {
	path   string
	kind   byte // 'f' file, 'd' directory, 'l' symlink, 'h' hard link to target, 'z' 64 KiB of zeros, 'p' fifo
	body   string
	target string
	perm   fs.FileMode
}

// treeEntries is the test tree: files small and large, a directory big
// enough for an htree index, a symlink, a hard link, a fifo, a file of zeros
// (sparse in one tree, written out in the other), an xattr on hello.txt.
func treeEntries() []entry {
	es := []entry{
		{path: "hello.txt", kind: 'f', body: "hello, reproducible world\n", perm: 0o644},
		{path: "bin", kind: 'd', perm: 0o755},
		{path: "bin/tool", kind: 'f', body: strings.Repeat("#!/bin/sh\necho tool\n", 400), perm: 0o755},
		{path: "bin/setuid", kind: 'f', body: "s", perm: 0o4750},
		{path: "etc", kind: 'd', perm: 0o750},
		{path: "etc/link-to-hello", kind: 'l', target: "../hello.txt"},
		{path: "etc/hardlink", kind: 'h', target: "hello.txt"},
		{path: "etc/fifo", kind: 'p', perm: 0o600},
		{path: "zeros.bin", kind: 'z', perm: 0o600},
		{path: "many", kind: 'd', perm: 0o755},
	}
	for i := range 200 {
		es = append(es, entry{path: fmt.Sprintf("many/a-file-with-a-long-name-%03d.txt", i), kind: 'f', body: fmt.Sprint(i), perm: 0o644})
	}
	return es
}

// makeTree creates the tree under root, in forward or reverse order (with
// directories before their contents), with every time stamp set to mtime
// and zeros.bin sparse or written out.
func makeTree(t *testing.T, root string, reverse, sparse bool, mtime time.Time) {
	t.Helper()
	es := treeEntries()
	if reverse {
		slices.Reverse(es)
	}
	for _, e := range es {
		if e.kind == 'd' {
			must(t, os.MkdirAll(filepath.Join(root, e.path), 0o755))
		}
	}
	// Hard links need their target: create those last.
	slices.SortStableFunc(es, func(a, b entry) int { return bool2int(a.kind == 'h') - bool2int(b.kind == 'h') })
	for _, e := range es {
		p := filepath.Join(root, e.path)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		switch e.kind {
		case 'f':
			must(t, os.WriteFile(p, []byte(e.body), 0o600))
		case 'z':
			if sparse {
				f, err := os.Create(p)
				must(t, err)
				must(t, f.Truncate(64<<10))
				must(t, f.Close())
			} else {
				must(t, os.WriteFile(p, make([]byte, 64<<10), 0o600))
			}
		case 'l':
			must(t, os.Symlink(e.target, p))
		case 'h':
			must(t, os.Link(filepath.Join(root, e.target), p))
		case 'p':
			must(t, unix.Mkfifo(p, 0o600))
		}
		if e.kind != 'l' && e.kind != 'h' {
			must(t, os.Chmod(p, e.perm))
		}
	}
	if err := unix.Setxattr(filepath.Join(root, "hello.txt"), "user.sealfs", []byte("kept"), 0); err != nil {
		t.Logf("no user xattrs here (%v): the image has none either", err)
	}
	must(t, os.Chmod(root, 0o755))
	must(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return unix.Lutimes(p, []unix.Timeval{unix.NsecToTimeval(mtime.UnixNano()), unix.NsecToTimeval(mtime.UnixNano())})
	}))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func bool2int(b bool) int {
	if b {
		return 1
	}
	return 0
}

// tmpfsDir returns a new directory on tmpfs, whose readdir order is the
// reverse of creation order (so two trees made in different orders list
// differently), or a plain temporary directory if there is none.
func tmpfsDir(t *testing.T) (string, bool) {
	t.Helper()
	var st unix.Statfs_t
	if unix.Statfs("/dev/shm", &st) == nil && st.Type == unix.TMPFS_MAGIC {
		if d, err := os.MkdirTemp("/dev/shm", "sealfs-ext2img-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d, true
		}
	}
	return t.TempDir(), false
}

// readdirOrder lists a directory in the order the file system returns.
func readdirOrder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open(dir)
	must(t, err)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	must(t, err)
	return names
}

func build(t *testing.T, dir string, opts Options) ([]byte, *Result) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "fs.img")
	r, err := Build(context.Background(), dir, img, &opts)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	b, err := os.ReadFile(img)
	must(t, err)
	return b, r
}

// TestBuildReproducible builds two trees with the same contents, made in
// opposite orders (so that they list in different orders), with different
// time stamps, one with a sparse file the other writes out: the images are
// identical, fsck clean, and hold the tree with the pinned times and owner.
func TestBuildReproducible(t *testing.T) {
	testutil.RequireTool(t, "mke2fs")
	base, onTmpfs := tmpfsDir(t)
	a, b := filepath.Join(base, "a"), filepath.Join(base, "b")
	makeTree(t, a, false, false, time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC))
	time.Sleep(1100 * time.Millisecond) // and different ctimes
	makeTree(t, b, true, true, time.Date(2024, 11, 12, 13, 14, 15, 0, time.UTC))
	if oa, ob := readdirOrder(t, filepath.Join(a, "many")), readdirOrder(t, filepath.Join(b, "many")); slices.Equal(oa, ob) {
		if onTmpfs {
			t.Fatal("the two trees list in the same order on tmpfs; the test does not test directory order")
		}
		t.Log("no tmpfs: both trees list in the same order, so directory order is not exercised")
	}

	opts := Options{Size: 4 << 20, BlockSize: 1024}
	imgA, ra := build(t, a, opts)
	imgB, rb := build(t, b, opts)
	if ra.UUID != rb.UUID || !bytes.Equal(ra.TreeDigest, rb.TreeDigest) {
		t.Errorf("UUIDs %s and %s, tree digests %x and %x", ra.UUID, rb.UUID, ra.TreeDigest, rb.TreeDigest)
	}
	if !bytes.Equal(imgA, imgB) {
		n := 0
		for i := range imgA {
			if imgA[i] != imgB[i] && n < 10 {
				t.Errorf("byte %d (block %d): %#02x vs %#02x", i, i/1024, imgA[i], imgB[i])
				n++
			}
		}
		t.Fatal("the same tree gave different images")
	}
	// A second build of the same tree, later: still the same.
	if again, _ := build(t, a, opts); !bytes.Equal(again, imgA) {
		t.Fatal("building the same tree twice gave different images")
	}

	img := filepath.Join(t.TempDir(), "a.img")
	must(t, os.WriteFile(img, imgA, 0o600))
	fsck(t, img)
	checkContents(t, img, a)
	checkSuperblock(t, imgA, ra.UUID, DefaultTime)
}

// fsck runs e2fsck -fn: a clean image exits 0.
func fsck(t *testing.T, img string) {
	t.Helper()
	e2fsck := testutil.RequireTool(t, "e2fsck")
	cmd := exec.Command(e2fsck, "-fn", img)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
}

// checkContents reads the image back with debugfs: every file's contents,
// symlink target and permission bits as in src, every inode's times the
// pinned ones and its owner root.
func checkContents(t *testing.T, img, src string) {
	t.Helper()
	debugfs := testutil.RequireTool(t, "debugfs")
	out := filepath.Join(t.TempDir(), "out")
	must(t, os.Mkdir(out, 0o755))
	if b, err := exec.Command(debugfs, "-R", "rdump / "+out, img).CombinedOutput(); err != nil {
		t.Fatalf("debugfs rdump: %v\n%s", err, b)
	}
	for _, e := range treeEntries() {
		if e.kind == 'p' { // rdump skips special files
			if stat := debugfsStat(t, debugfs, img, "/"+e.path); !strings.Contains(stat, "Type: FIFO") {
				t.Errorf("%s is not a FIFO:\n%s", e.path, stat)
			}
			continue
		}
		got, want := filepath.Join(out, e.path), filepath.Join(src, e.path)
		gi, err := os.Lstat(got)
		if err != nil {
			t.Errorf("%s: %v", e.path, err)
			continue
		}
		wi, _ := os.Lstat(want)
		if gi.Mode().Type() != wi.Mode().Type() {
			t.Errorf("%s: type %v, want %v", e.path, gi.Mode().Type(), wi.Mode().Type())
			continue
		}
		switch {
		case wi.Mode().IsRegular():
			gb, _ := os.ReadFile(got)
			wb, _ := os.ReadFile(want)
			if !bytes.Equal(gb, wb) {
				t.Errorf("%s: contents differ", e.path)
			}
		case wi.Mode().Type() == fs.ModeSymlink:
			gl, _ := os.Readlink(got)
			wl, _ := os.Readlink(want)
			if gl != wl {
				t.Errorf("%s: link to %q, want %q", e.path, gl, wl)
			}
		}
		if e.kind != 'l' && e.kind != 'h' {
			stat := debugfsStat(t, debugfs, img, "/"+e.path)
			if want := fmt.Sprintf("Mode:  %04o", uint32(e.perm.Perm())|modeExtra(e.perm)); !strings.Contains(stat, want) {
				t.Errorf("%s: debugfs stat lacks %q:\n%s", e.path, want, stat)
			}
		}
	}
	for _, p := range []string{"/", "/hello.txt", "/many", "/etc/fifo", "/lost+found"} {
		stat := debugfsStat(t, debugfs, img, p)
		for _, want := range []string{"User:     0   Group:     0", "ctime: 0x386d4380:00000000", "atime: 0x386d4380:00000000", "mtime: 0x386d4380:00000000", "crtime: 0x386d4380:00000000"} {
			if !strings.Contains(stat, want) {
				t.Errorf("%s: debugfs stat lacks %q:\n%s", p, want, stat)
			}
		}
	}
	if stat := debugfsStat(t, debugfs, img, "/hello.txt"); !strings.Contains(stat, "Links: 2") {
		t.Errorf("hello.txt and etc/hardlink are not one inode:\n%s", stat)
	}
}

// modeExtra is the setuid/setgid/sticky bits of m as in st_mode.
func modeExtra(m fs.FileMode) uint32 {
	var x uint32
	if m&fs.ModeSetuid != 0 {
		x |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		x |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		x |= 0o1000
	}
	return x
}

func debugfsStat(t *testing.T, debugfs, img, p string) string {
	t.Helper()
	b, err := exec.Command(debugfs, "-R", "stat "+p, img).Output()
	if err != nil {
		t.Fatalf("debugfs stat %s: %v", p, err)
	}
	return string(b)
}

// checkSuperblock reads the UUID and the times mke2fs stamps from the
// superblock.
func checkSuperblock(t *testing.T, img []byte, uuid UUID, when time.Time) {
	t.Helper()
	sb := img[1024:2048]
	le := binary.LittleEndian
	if got := UUID(sb[104:120]); got != uuid {
		t.Errorf("superblock UUID %s, want %s", got, uuid)
	}
	for _, f := range []struct {
		name string
		off  int
	}{{"s_wtime", 48}, {"s_lastcheck", 64}, {"s_mkfs_time", 264}} {
		if got := int64(le.Uint32(sb[f.off:])); got != when.Unix() {
			t.Errorf("%s %d, want %d", f.name, got, when.Unix())
		}
	}
	if got := sb[0xec:0xfc]; !bytes.Equal(got, hashSeedOf(uuid)) {
		t.Errorf("hash seed %x, want %x", got, hashSeedOf(uuid))
	}
}

func hashSeedOf(u UUID) []byte { s := hashSeed(u); return s[:] }

// TestBuildDifferences: what Build keeps changes the image and the derived
// UUID; what it pins does not; the options do what they say.
func TestBuildDifferences(t *testing.T) {
	testutil.RequireTool(t, "mke2fs")
	src := t.TempDir()
	makeTree(t, src, false, false, time.Unix(1e9, 0))
	opts := Options{Size: 4 << 20, BlockSize: 1024}
	img0, r0 := build(t, src, opts)

	// One byte of one file: another image, another UUID.
	must(t, os.WriteFile(filepath.Join(src, "many", "a-file-with-a-long-name-007.txt"), []byte("8"), 0o644))
	img1, r1 := build(t, src, opts)
	if r1.UUID == r0.UUID || bytes.Equal(img0, img1) {
		t.Error("a changed file left the UUID or the image unchanged")
	}
	must(t, os.WriteFile(filepath.Join(src, "many", "a-file-with-a-long-name-007.txt"), []byte("7"), 0o644))
	// Only its mode: another image too.
	must(t, os.Chmod(filepath.Join(src, "hello.txt"), 0o600))
	if _, r := build(t, src, opts); r.UUID == r0.UUID {
		t.Error("a changed mode left the UUID unchanged")
	}
	must(t, os.Chmod(filepath.Join(src, "hello.txt"), 0o644))
	if img, _ := build(t, src, opts); !bytes.Equal(img, img0) {
		t.Error("restoring the tree did not restore the image")
	}

	// A given UUID and time.
	u, err := ParseUUID("0123456789abcdef0123456789abcdef")
	must(t, err)
	when := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	o := opts
	o.UUID, o.Time = &u, when
	img2, r2 := build(t, src, o)
	if r2.UUID != u || r2.TreeDigest != nil || r2.Time != when {
		t.Errorf("result %+v", r2)
	}
	checkSuperblock(t, img2, u, when)
	p := filepath.Join(t.TempDir(), "u.img")
	must(t, os.WriteFile(p, img2, 0o600))
	fsck(t, p)
	if stat := debugfsStat(t, testutil.RequireTool(t, "debugfs"), p, "/bin/tool"); !strings.Contains(stat, fmt.Sprintf("mtime: %#08x:00000000", when.Unix())) {
		t.Errorf("/bin/tool times are not %s:\n%s", when, stat)
	}

	// Another size or block size: another UUID.
	for _, o := range []Options{{Size: 8 << 20, BlockSize: 1024}, {Size: 4 << 20, BlockSize: 4096}} {
		if _, r := build(t, src, o); r.UUID == r0.UUID {
			t.Errorf("%+v: same UUID as %+v", o, opts)
		}
	}
}

// TestBuildKeepOwners: by default every inode is root's; KeepOwners keeps
// the numeric owners (which only root can set up).
func TestBuildKeepOwners(t *testing.T) {
	testutil.RequireTool(t, "mke2fs")
	debugfs := testutil.RequireTool(t, "debugfs")
	if os.Geteuid() != 0 {
		t.Skip("chown to another owner needs root")
	}
	src := t.TempDir()
	makeTree(t, src, false, false, time.Unix(1e9, 0))
	must(t, os.Lchown(filepath.Join(src, "bin", "tool"), 70000, 1234))
	for _, keep := range []bool{false, true} {
		img, r := build(t, src, Options{Size: 4 << 20, BlockSize: 1024, KeepOwners: keep})
		p := filepath.Join(t.TempDir(), "o.img")
		must(t, os.WriteFile(p, img, 0o600))
		fsck(t, p)
		want := "User:     0   Group:     0"
		if keep {
			want = "User: 70000   Group:  1234"
		}
		if stat := debugfsStat(t, debugfs, p, "/bin/tool"); !strings.Contains(stat, want) {
			t.Errorf("KeepOwners %v (UUID %s): want %q in\n%s", keep, r.UUID, want, stat)
		}
	}
}

func TestBuildRefuses(t *testing.T) {
	src := t.TempDir()
	img := filepath.Join(t.TempDir(), "x.img")
	zero := UUID{}
	for _, c := range []struct {
		opts Options
		want string
	}{
		{Options{}, "size 0"},
		{Options{Size: 4<<20 + 1}, "multiple of the block size"},
		{Options{Size: 8 << 10, BlockSize: 1024}, "at least 16384"},
		{Options{Size: 4 << 20, BlockSize: 512}, "block size 512"},
		{Options{Size: 4 << 20, Time: time.Unix(0, 0)}, "whole seconds"},
		{Options{Size: 4 << 20, Time: time.Unix(1<<31, 0)}, "whole seconds"},
		{Options{Size: 4 << 20, Time: time.Unix(1e9, 5)}, "whole seconds"},
		{Options{Size: 4 << 20, UUID: &zero}, "all-zero UUID"},
		{Options{Size: 4 << 20, Mke2fs: "/nonexistent/mke2fs"}, "mke2fs"},
	} {
		_, err := Build(context.Background(), src, img, &c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err = %v, want one mentioning %q", c.opts, err, c.want)
		}
	}
	if _, err := Build(context.Background(), filepath.Join(src, "missing"), img, &Options{Size: 4 << 20}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing source: %v", err)
	}
	if _, err := ParseUUID("not-a-uuid"); err == nil {
		t.Error("ParseUUID accepted garbage")
	}
	if u, err := ParseUUID("01234567-89ab-cdef-0123-456789abcdef"); err != nil || u.String() != "01234567-89ab-cdef-0123-456789abcdef" {
		t.Errorf("ParseUUID round trip: %s, %v", u, err)
	}
}
