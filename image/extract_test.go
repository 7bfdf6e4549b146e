//go:build linux

package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sealfs/sealfs/errs"
)

// TestExtractVectors extracts every reference image, with and without its
// root digest, and compares the result with the source tree: upstream's
// extract fails on oci:v2 (the whiteout of "empty"), ours must give tree2.
// oci-compressed-tree1 carries upstream's wrong fsVerityData, so with the
// digest it must fail with ErrAuthentication and leave nothing behind.
func TestExtractVectors(t *testing.T) {
	needVectors(t)
	for _, v := range vectors {
		for _, withDigest := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s:%s/digest=%v", v.oci, v.tag, withDigest), func(t *testing.T) {
				l, err := OpenLayout(filepath.Join(vectorDir, v.oci))
				if err != nil {
					t.Fatal(err)
				}
				var rd *Digest
				if withDigest {
					d, err := ParseVerityDigest(v.printed)
					if err != nil {
						t.Fatal(err)
					}
					rd = &d
				}
				im, err := l.OpenImage(v.tag, rd)
				if err != nil {
					t.Fatal(err)
				}
				parent := t.TempDir()
				out := filepath.Join(parent, "out")
				var progress uint64
				st, err := im.Extract(out, ExtractOptions{Progress: func(done, total uint64) { progress = done }})
				if withDigest && v.badVerity != nil {
					if !errors.Is(err, errs.ErrAuthentication) || !strings.Contains(err.Error(), "fs-verity") {
						t.Fatalf("Extract = %v, want an fs-verity ErrAuthentication", err)
					}
					assertEmptyDir(t, parent)
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				assertOnly(t, parent, "out")
				compareWithSource(t, out, filepath.Join(vectorDir, "src", v.tree))
				var size uint64
				for _, n := range []string{"hello.txt", "random.bin", "subdir/nested.txt", "subdir/added.txt"} {
					if fi, err := os.Stat(filepath.Join(out, n)); err == nil {
						size += uint64(fi.Size())
					}
				}
				want := ExtractStats{Files: 4, Dirs: 2, Symlinks: 1, Hardlinks: 1, Bytes: size, Owners: os.Geteuid() == 0}
				if st != want {
					t.Errorf("stats %+v, want %+v", st, want)
				}
				if progress != size {
					t.Errorf("progress reported %d bytes, want %d", progress, size)
				}
			})
		}
	}
}

// compareWithSource checks an extracted vector against src/treeN, whose
// git copies lost the hard link, the xattr and the symlink.
func compareWithSource(t *testing.T, out, src string) {
	t.Helper()
	var names []string
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		names = append(names, rel)
		got := filepath.Join(out, rel)
		fi, err := os.Lstat(got)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		switch {
		case rel == "link-to-hello":
			target, err := os.Readlink(got)
			if fi.Mode()&fs.ModeSymlink == 0 || err != nil || target != "hello.txt" {
				t.Errorf("link-to-hello: mode %v, target %q, %v; want a symlink to hello.txt", fi.Mode(), target, err)
			}
		case d.IsDir():
			if fi.Mode() != fs.ModeDir|0o755 {
				t.Errorf("%s: mode %v, want drwxr-xr-x", rel, fi.Mode())
			}
		default:
			if fi.Mode() != 0o644 {
				t.Errorf("%s: mode %v, want -rw-r--r--", rel, fi.Mode())
			}
			a, _ := os.ReadFile(p)
			b, err := os.ReadFile(got)
			if err != nil || !bytes.Equal(a, b) {
				t.Errorf("%s: contents differ from the source (%v)", rel, err)
			}
		}
		if st := fi.Sys().(*syscall.Stat_t); os.Geteuid() == 0 && (st.Uid != 0 || st.Gid != 0) {
			t.Errorf("%s: owner %d:%d, want 0:0", rel, st.Uid, st.Gid)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var gotNames []string
	filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(out, p)
		gotNames = append(gotNames, rel)
		return err
	})
	if !slices.Equal(names, gotNames) {
		t.Errorf("extracted names %q, source %q", gotNames, names)
	}
	a, err1 := os.Stat(filepath.Join(out, "hello.txt"))
	b, err2 := os.Stat(filepath.Join(out, "hardlink-hello.txt"))
	if err1 != nil || err2 != nil || !os.SameFile(a, b) {
		t.Errorf("hello.txt and hardlink-hello.txt are not one inode (%v, %v)", err1, err2)
	}
	val := make([]byte, 64)
	n, err := unix.Lgetxattr(filepath.Join(out, "hello.txt"), "user.puzzlefs", val)
	if err != nil || string(val[:n]) != "interop" {
		t.Errorf("hello.txt xattr user.puzzlefs = %q, %v; want interop", val[:max(n, 0)], err)
	}
}

// tnode is one entry of a test tree, described once and built both as an
// image and, for comparison, on disk. Parents come before children.
type tnode struct {
	path         string
	typ          InodeType
	perm         uint16
	uid, gid     uint32
	data         string // TypeFile
	target       string // TypeSymlink
	major, minor uint64 // TypeChar, TypeBlock
	xattrs       []Xattr
	link         string // a hard link to this earlier path (other fields unused)
	ino          uint64 // forces the inode number (hostile images)
}

// testImage is an image built from tnodes with the test helpers.
type testImage struct {
	im     *Image
	layout string // the layout directory
	chunks []Digest
}

// buildTestImage encodes nodes as a one-layer image under a root
// directory (0755, 0:0). File data goes into chunk blobs of at most 4
// bytes, so files span several chunks and chunks several files.
func buildTestImage(t *testing.T, nodes []tnode) testImage {
	t.Helper()
	inos := map[string]uint64{".": RootIno}
	next := uint64(RootIno + 1)
	byIno := map[uint64]*Inode{RootIno: {Ino: RootIno, Type: TypeDir, Permissions: 0o755, Dir: &Dir{}}}
	var stream []byte
	type span struct {
		ino      uint64
		off, len int
	}
	var spans []span
	for _, n := range nodes {
		parent := byIno[inos[path.Dir(n.path)]]
		if parent == nil || parent.Type != TypeDir {
			t.Fatalf("%s: parent is not a directory", n.path)
		}
		ino := n.ino
		if n.link != "" {
			ino = inos[n.link]
		}
		if ino == 0 {
			ino = next
			next++
		}
		inos[n.path] = ino
		parent.Dir.Entries = append(parent.Dir.Entries, DirEntry{Ino: ino, Name: []byte(path.Base(n.path))})
		if byIno[ino] != nil {
			continue
		}
		in := &Inode{Ino: ino, Type: n.typ, UID: n.uid, GID: n.gid, Permissions: n.perm, Major: n.major, Minor: n.minor, Xattrs: n.xattrs}
		switch n.typ {
		case TypeDir:
			in.Dir = &Dir{}
		case TypeSymlink:
			in.SymlinkTarget = []byte(n.target)
		case TypeFile:
			spans = append(spans, span{ino, len(stream), len(n.data)})
			stream = append(stream, n.data...)
		}
		in.HasAdditional = len(in.Xattrs) > 0 || n.typ == TypeSymlink
		byIno[ino] = in
	}
	var chunks [][]byte
	var digests []Digest
	for off := 0; off < len(stream); off += 4 {
		c := stream[off:min(off+4, len(stream))]
		chunks = append(chunks, c)
		digests = append(digests, Digest(sha256.Sum256(c)))
	}
	for _, s := range spans {
		in := byIno[s.ino]
		for pos := s.off; pos < s.off+s.len; {
			ci, co := pos/4, pos%4
			n := min(4-co, s.off+s.len-pos)
			in.Chunks = append(in.Chunks, FileChunk{Blob: BlobRef{Digest: digests[ci], Offset: uint64(co)}, Len: uint64(n)})
			pos += n
		}
	}
	r := &Rootfs{ManifestVersion: ManifestVersion, Layers: []Layer{{}}}
	for _, in := range byIno {
		r.Layers[0].Inodes = append(r.Layers[0].Inodes, *in)
	}
	sort.Slice(r.Layers[0].Inodes, func(i, j int) bool { return r.Layers[0].Inodes[i].Ino < r.Layers[0].Inodes[j].Ino })
	l, dir := newLayout(t, encodeRootfs(t, r), MediaTypeChunk, chunks...)
	im, err := l.OpenImage("t", nil)
	if err != nil {
		t.Fatal(err)
	}
	return testImage{im, dir, digests}
}

// buildDiskTree creates nodes under dir (which exists) with the system's
// own calls: the reference an extraction is compared with. Needs root.
func buildDiskTree(t *testing.T, dir string, nodes []tnode) {
	t.Helper()
	must := func(p string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	for _, n := range nodes {
		p := filepath.Join(dir, n.path)
		switch {
		case n.link != "":
			must(p, os.Link(filepath.Join(dir, n.link), p))
		case n.typ == TypeDir:
			must(p, os.Mkdir(p, 0o700))
		case n.typ == TypeFile:
			must(p, os.WriteFile(p, []byte(n.data), 0o600))
		case n.typ == TypeSymlink:
			must(p, os.Symlink(n.target, p))
		case n.typ == TypeFifo:
			must(p, unix.Mknod(p, unix.S_IFIFO|0o600, 0))
		case n.typ == TypeSocket:
			must(p, unix.Mknod(p, unix.S_IFSOCK|0o600, 0))
		case n.typ == TypeChar:
			must(p, unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(uint32(n.major), uint32(n.minor)))))
		case n.typ == TypeBlock:
			must(p, unix.Mknod(p, unix.S_IFBLK|0o600, int(unix.Mkdev(uint32(n.major), uint32(n.minor)))))
		}
	}
	// Children before parents, ownership before mode.
	for i := len(nodes) - 1; i >= 0; i-- {
		n := nodes[i]
		if n.link != "" {
			continue
		}
		p := filepath.Join(dir, n.path)
		must(p, os.Lchown(p, int(n.uid), int(n.gid)))
		for _, x := range n.xattrs {
			must(p, unix.Lsetxattr(p, string(x.Key), x.Value, 0))
		}
		if n.typ != TypeSymlink {
			must(p, unix.Chmod(p, uint32(n.perm)))
		}
	}
	must(dir, os.Chmod(dir, 0o755))
}

// sameTree compares two trees entry by entry: type and mode bits, owner,
// device numbers, size and contents, symlink targets, xattrs, and which
// names share an inode.
// diffTypeLine is GNU diff's report of two special files of the same type
// ("File a is a fifo while file b is a fifo"), which it cannot compare.
var diffTypeLine = regexp.MustCompile(`^File .* is a (.*) while file .* is a (.*)$`)

func sameTree(t *testing.T, want, got string) {
	t.Helper()
	list := func(root string) map[string]fs.FileInfo {
		m := map[string]fs.FileInfo{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := os.Lstat(p)
			rel, _ := filepath.Rel(root, p)
			m[rel] = fi
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	w, g := list(want), list(got)
	inoMap := map[uint64]uint64{}
	for rel, wfi := range w {
		gfi, ok := g[rel]
		if !ok {
			t.Errorf("%s: missing", rel)
			continue
		}
		ws, gs := wfi.Sys().(*syscall.Stat_t), gfi.Sys().(*syscall.Stat_t)
		if ws.Mode != gs.Mode || ws.Uid != gs.Uid || ws.Gid != gs.Gid || ws.Rdev != gs.Rdev || ws.Nlink != gs.Nlink || (!wfi.IsDir() && ws.Size != gs.Size) {
			t.Errorf("%s: mode %#o uid %d gid %d rdev %#x nlink %d size %d, want %#o %d %d %#x %d %d", rel,
				gs.Mode, gs.Uid, gs.Gid, gs.Rdev, gs.Nlink, gs.Size, ws.Mode, ws.Uid, ws.Gid, ws.Rdev, ws.Nlink, ws.Size)
		}
		if prev, ok := inoMap[ws.Ino]; ok && prev != gs.Ino {
			t.Errorf("%s: hard links differ from the reference", rel)
		}
		inoMap[ws.Ino] = gs.Ino
		if wx, gx := xattrList(t, filepath.Join(want, rel)), xattrList(t, filepath.Join(got, rel)); !slices.Equal(wx, gx) {
			t.Errorf("%s: xattrs %q, want %q", rel, gx, wx)
		}
	}
	for rel := range g {
		if _, ok := w[rel]; !ok {
			t.Errorf("%s: not in the reference", rel)
		}
	}
	// Contents and symlink targets, by GNU diff, which reports fifos and
	// sockets even of the same type; those are compared above.
	out, err := exec.Command("diff", "-r", "--no-dereference", want, got).CombinedOutput()
	if err != nil {
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if m := diffTypeLine.FindStringSubmatch(line); m != nil && m[1] == m[2] {
				continue
			}
			t.Errorf("diff -r: %s", line)
		}
	}
}

func xattrList(t *testing.T, p string) []string {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatalf("%s: listxattr: %v", p, err)
	}
	var out []string
	for _, k := range strings.Split(string(buf[:n]), "\x00") {
		if k == "" {
			continue
		}
		v := make([]byte, 4096)
		m, err := unix.Lgetxattr(p, k, v)
		if err != nil {
			t.Fatalf("%s: getxattr %s: %v", p, k, err)
		}
		out = append(out, k+"="+string(v[:m]))
	}
	sort.Strings(out)
	return out
}

// allTypes is a tree with every kind of entry, in an order that trips
// extractors that write through symlinks or create links before targets.
var allTypes = []tnode{
	{path: "a-link", typ: TypeSymlink, target: "d/x", // before its target
		xattrs: []Xattr{{Key: []byte("trusted.on-the-link"), Value: []byte("not on d/x")}}},
	{path: "abs", typ: TypeSymlink, target: "/etc"},
	{path: "blk", typ: TypeBlock, perm: 0o660, gid: 6, major: 7, minor: 0},
	{path: "chr", typ: TypeChar, perm: 0o666, major: 1, minor: 3},
	{path: "d", typ: TypeDir, perm: 0o555, uid: 1000, gid: 1000},
	{path: "d/x", typ: TypeFile, perm: 0o444, uid: 1000, gid: 1000, data: "target of a-link"},
	{path: "d/up", typ: TypeSymlink, target: "../../..", uid: 1000, gid: 1000},
	{path: "d/closed", typ: TypeDir, perm: 0o000},
	{path: "d/closed/secret", typ: TypeFile, perm: 0o600, data: "in a 0000 directory"},
	{path: "empty", typ: TypeFile, perm: 0o644},
	{path: "fifo", typ: TypeFifo, perm: 0o640, uid: 1, gid: 2},
	{path: "file", typ: TypeFile, perm: 0o644, uid: 1000, gid: 100, data: "hello, world\n",
		xattrs: []Xattr{{Key: []byte("user.k"), Value: []byte("v")}, {Key: []byte("trusted.t"), Value: []byte("root only")}}},
	{path: "hard-file", link: "file"},
	{path: "hard-fifo", link: "fifo"},
	{path: "hard-secret", link: "d/closed/secret"}, // first name in a directory now 0000
	{path: "hard-sym", link: "abs"},
	{path: "setgid", typ: TypeFile, perm: 0o2755, uid: 1000, gid: 50, data: "sg"},
	{path: "setuid", typ: TypeFile, perm: 0o4755, uid: 1000, gid: 1000, data: "su"},
	{path: "sock", typ: TypeSocket, perm: 0o755},
	{path: "sticky", typ: TypeDir, perm: 0o1777},
	{path: "sticky/setgid-dir", typ: TypeDir, perm: 0o2750, gid: 100,
		xattrs: []Xattr{{Key: []byte("user.dir"), Value: []byte("yes")}}},
	{path: "sticky/setgid-dir/f", typ: TypeFile, perm: 0o640, data: strings.Repeat("0123456789", 10)},
}

// TestExtractAllTypes extracts every entry type and compares the result
// with the same tree made directly with the system's calls.
func TestExtractAllTypes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: devices, ownership and trusted.* xattrs (TestExtractUnprivileged covers the rest)")
	}
	ti := buildTestImage(t, allTypes)
	want := filepath.Join(t.TempDir(), "want")
	if err := os.Mkdir(want, 0o755); err != nil {
		t.Fatal(err)
	}
	buildDiskTree(t, want, allTypes)
	parent := t.TempDir()
	got := filepath.Join(parent, "got")
	st, err := ti.im.Extract(got, ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	assertOnly(t, parent, "got")
	sameTree(t, want, got)
	wantStats := ExtractStats{Files: 7, Dirs: 5, Symlinks: 3, Hardlinks: 4, Others: 4, Bytes: 152, Owners: true}
	if st != wantStats {
		t.Errorf("stats %+v, want %+v", st, wantStats)
	}
}

// TestExtractSymlinksNeverFollowed: links that point out of the tree, up
// the tree, or at the tree's own later entries are created as they are,
// and nothing is written outside.
func TestExtractSymlinksNeverFollowed(t *testing.T) {
	outside := t.TempDir()
	nodes := []tnode{
		{path: "a", typ: TypeSymlink, target: outside},
		{path: "b", typ: TypeSymlink, target: "../.."},
		{path: "c", typ: TypeSymlink, target: "c"}, // a loop
		{path: "d", typ: TypeDir, perm: 0o755},
		{path: "d/e", typ: TypeSymlink, target: "../a"},
		{path: "d/f", typ: TypeFile, perm: 0o644, data: "data"},
		{path: "e", typ: TypeSymlink, target: "/etc/passwd"},
		{path: "h", link: "a"},
	}
	ti := buildTestImage(t, nodes)
	parent := t.TempDir()
	out := filepath.Join(parent, "out")
	st, err := ti.im.Extract(out, ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.typ != TypeSymlink {
			continue
		}
		got, err := os.Readlink(filepath.Join(out, n.path))
		if err != nil || got != n.target {
			t.Errorf("%s: target %q, %v; want %q", n.path, got, err, n.target)
		}
	}
	assertEmptyDir(t, outside)
	if st.Symlinks != 5 || st.Hardlinks != 1 || st.Files != 1 {
		t.Errorf("stats %+v", st)
	}
	// A target that is itself a symlink (to an empty directory) is refused
	// rather than followed.
	empty := t.TempDir()
	sl := filepath.Join(parent, "sl")
	if err := os.Symlink(empty, sl); err != nil {
		t.Fatal(err)
	}
	if _, err := ti.im.Extract(sl, ExtractOptions{}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Extract onto a symlink = %v, want fs.ErrExist", err)
	}
	assertEmptyDir(t, empty)
}

// TestExtractTarget: DIR must be absent or an empty directory.
func TestExtractTarget(t *testing.T) {
	ti := buildTestImage(t, []tnode{{path: "f", typ: TypeFile, perm: 0o644, data: "x"}})
	for _, c := range []struct {
		name  string
		setup func(p string) error
		want  error // nil: success
	}{
		{"absent", func(string) error { return nil }, nil},
		{"empty dir", func(p string) error { return os.Mkdir(p, 0o700) }, nil},
		{"non-empty dir", func(p string) error {
			if err := os.Mkdir(p, 0o755); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(p, "keep"), []byte("mine"), 0o644)
		}, fs.ErrExist},
		{"file", func(p string) error { return os.WriteFile(p, []byte("mine"), 0o644) }, fs.ErrExist},
		{"parent missing", func(p string) error { return os.Remove(filepath.Dir(p)) }, fs.ErrNotExist},
	} {
		t.Run(c.name, func(t *testing.T) {
			parent := t.TempDir()
			p := filepath.Join(parent, "out")
			if err := c.setup(p); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, parent)
			_, err := ti.im.Extract(p, ExtractOptions{})
			if c.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if b, err := os.ReadFile(filepath.Join(p, "f")); err != nil || string(b) != "x" {
					t.Errorf("f = %q, %v", b, err)
				}
				fi, err := os.Stat(p)
				if err != nil || fi.Mode() != fs.ModeDir|0o755 {
					t.Errorf("root mode %v, %v; want the image root's drwxr-xr-x", fi.Mode(), err)
				}
				assertOnly(t, parent, "out")
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("Extract = %v, want %v", err, c.want)
			}
			if after := snapshot(t, parent); after != before {
				t.Errorf("the parent changed:\n%s\nwant\n%s", after, before)
			}
		})
	}
}

// TestExtractFailures: hostile or damaged images fail with the right
// class of error, and the target never appears, not even in part.
func TestExtractFailures(t *testing.T) {
	// Files that come before the damage in walk order, so a partial tree
	// exists when it is found, including directories an unprivileged
	// cleanup could not enter.
	prefix := []tnode{
		{path: "a", typ: TypeFile, perm: 0o644, data: "written first"},
		{path: "b", typ: TypeDir, perm: 0o555},
		{path: "b/c", typ: TypeDir, perm: 0o000},
		{path: "b/c/f", typ: TypeFile, perm: 0o400, data: "deep"},
	}
	with := func(ns ...tnode) []tnode { return append(slices.Clone(prefix), ns...) }
	cases := []struct {
		name   string
		nodes  []tnode
		damage func(t *testing.T, ti testImage)
		want   []error
		match  string
	}{
		{name: "tampered chunk", nodes: with(tnode{path: "z", typ: TypeFile, perm: 0o644, data: "the last file"}),
			damage: func(t *testing.T, ti testImage) { flipBlobByte(t, ti, ti.chunks[len(ti.chunks)-1]) },
			want:   []error{errs.ErrAuthentication}, match: `"z".*sha256`},
		{name: "missing chunk", nodes: with(tnode{path: "z", typ: TypeFile, perm: 0o644, data: "the last file"}),
			damage: func(t *testing.T, ti testImage) {
				if err := os.Remove(filepath.Join(ti.layout, "blobs/sha256", ti.chunks[len(ti.chunks)-1].String())); err != nil {
					t.Fatal(err)
				}
			},
			want: []error{errs.ErrCorrupt, fs.ErrNotExist}, match: `"z".*missing`},
		{name: "directory hard link", nodes: with(
			tnode{path: "x", typ: TypeDir, perm: 0o755, ino: 100},
			tnode{path: "x/f", typ: TypeFile, perm: 0o644, data: "f"},
			tnode{path: "y", link: "x"}),
			want: []error{ErrLoop, errs.ErrCorrupt}},
		{name: "directory loop to the root", nodes: with(tnode{path: "loop", link: "."}),
			want: []error{ErrLoop, errs.ErrCorrupt}},
		{name: "unknown file type", nodes: with(tnode{path: "u", typ: TypeUnknown, perm: 0o644}),
			want: []error{errs.ErrUnsupported}, match: `"u"`},
		{name: "device number too wide", nodes: with(tnode{path: "z", typ: TypeChar, perm: 0o600, major: 1 << 12}),
			want: []error{errs.ErrUnsupported}, match: `"z".*4096:0`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ti := buildTestImage(t, c.nodes)
			if c.damage != nil {
				c.damage(t, ti)
			}
			parent := t.TempDir()
			_, err := ti.im.Extract(filepath.Join(parent, "out"), ExtractOptions{})
			for _, w := range c.want {
				if !errors.Is(err, w) {
					t.Errorf("Extract = %v, want %v", err, w)
				}
			}
			if err != nil && c.match != "" && !regexpMatch(c.match, err.Error()) {
				t.Errorf("error %q does not match %q", err, c.match)
			}
			assertEmptyDir(t, parent)
		})
	}
}

// TestExtractCancel: a cancelled context stops the extraction, which
// leaves nothing behind.
func TestExtractCancel(t *testing.T) {
	ti := buildTestImage(t, []tnode{
		{path: "a", typ: TypeFile, perm: 0o644, data: "first"},
		{path: "b", typ: TypeFile, perm: 0o644, data: "second"},
	})
	ctx, cancel := context.WithCancel(context.Background())
	parent := t.TempDir()
	_, err := ti.im.ExtractContext(ctx, filepath.Join(parent, "out"), ExtractOptions{
		Progress: func(done, total uint64) { cancel() }, // after the first write
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("ExtractContext = %v, want context.Canceled", err)
	}
	assertEmptyDir(t, parent)
}

// TestExtractBadNames bypasses the decoder (which refuses these names) to
// show that Extract checks them again.
func TestExtractBadNames(t *testing.T) {
	for _, name := range []string{"..", ".", "", "a/b", "../../etc", "nul\x00"} {
		ti := buildTestImage(t, []tnode{{path: "ok", typ: TypeFile, perm: 0o644, data: "x"}})
		root := ti.im.Rootfs.Inode(RootIno)
		root.Dir.Entries = append(root.Dir.Entries, DirEntry{Ino: 2, Name: []byte(name)})
		parent := t.TempDir()
		if _, err := ti.im.Extract(filepath.Join(parent, "out"), ExtractOptions{}); !errors.Is(err, ErrBadName) || !errors.Is(err, errs.ErrCorrupt) {
			t.Errorf("name %q: Extract = %v, want ErrBadName", name, err)
		}
		assertEmptyDir(t, parent)
	}
}

// TestExtractUnprivileged runs as uid 65534 in a child process: no
// ownership restored, trusted.* xattrs skipped with a warning, devices a
// clear error (or skipped on request), forced ownership an error, and a
// failed extraction still cleans up directories of mode 0555 and 0000.
func TestExtractUnprivileged(t *testing.T) {
	if os.Getenv("SEALFS_TEST_EXTRACT_CHILD") == "1" {
		extractUnprivilegedChild(t)
		return
	}
	if os.Geteuid() != 0 {
		extractUnprivilegedChild(t) // unprivileged already
		return
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A directory nobody can use: world-writable, sticky, like /tmp.
	shared, err := os.MkdirTemp("", "sealfs-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(shared)
	if err := os.Chmod(shared, 0o1777); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(shared, "image.test")
	if err := copyFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestExtractUnprivileged$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "SEALFS_TEST_EXTRACT_CHILD=1", "TMPDIR="+shared)
	cmd.Dir = shared
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		// The binary could not even start (a noexec or private TMPDIR).
		if os.Getenv("CI") == "true" {
			t.Fatalf("cannot run the test binary as uid 65534: %v", err)
		}
		t.Skipf("cannot run the test binary as uid 65534: %v", err)
	}
	if err != nil || !strings.Contains(string(out), "--- PASS: TestExtractUnprivileged") {
		t.Fatalf("child as uid 65534: %v\n%s", err, out)
	}
}

func extractUnprivilegedChild(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Fatal("child runs as root")
	}
	me, mygid := uint32(os.Geteuid()), uint32(os.Getegid())
	nodes := []tnode{
		{path: "d", typ: TypeDir, perm: 0o555},
		{path: "d/f", typ: TypeFile, perm: 0o4755, data: "setuid, owned by root in the image",
			xattrs: []Xattr{{Key: []byte("user.ok"), Value: []byte("1")}, {Key: []byte("trusted.no"), Value: []byte("2")}}},
		{path: "d/l", link: "d/f"},
		{path: "fifo", typ: TypeFifo, perm: 0o600},
	}
	ti := buildTestImage(t, nodes)
	parent := privTempDir(t)
	out := filepath.Join(parent, "out")
	var warnings []string
	st, err := ti.im.Extract(out, ExtractOptions{Warn: func(p string, err error) { warnings = append(warnings, p+": "+err.Error()) }})
	if err != nil {
		t.Fatal(err)
	}
	want := ExtractStats{Files: 1, Dirs: 2, Hardlinks: 1, Others: 1, Bytes: 34, SkippedXattrs: 1}
	if st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], `d/f: xattr "trusted.no" not restored`) {
		t.Errorf("warnings %q", warnings)
	}
	fi, err := os.Lstat(filepath.Join(out, "d/f"))
	if err != nil {
		t.Fatal(err)
	}
	if s := fi.Sys().(*syscall.Stat_t); s.Uid != me || s.Gid != mygid || fi.Mode() != fs.ModeSetuid|0o755 || s.Nlink != 2 {
		t.Errorf("d/f: %d:%d %v nlink %d; want ours, -rwsr-xr-x, 2 links", s.Uid, s.Gid, fi.Mode(), s.Nlink)
	}
	if x := xattrList(t, filepath.Join(out, "d/f")); !slices.Equal(x, []string{"user.ok=1"}) {
		t.Errorf("d/f xattrs %q", x)
	}
	if fi, err := os.Lstat(filepath.Join(out, "d")); err != nil || fi.Mode() != fs.ModeDir|0o555 {
		t.Errorf("d: %v %v", fi.Mode(), err)
	}

	// A device: a clear error naming it, and nothing left; or skipped.
	dev := buildTestImage(t, append(slices.Clone(nodes), tnode{path: "null", typ: TypeChar, perm: 0o666, major: 1, minor: 3}))
	parent = privTempDir(t)
	_, err = dev.im.Extract(filepath.Join(parent, "out"), ExtractOptions{})
	if err == nil || !strings.Contains(err.Error(), `"null"`) || !strings.Contains(err.Error(), "needs privilege") || !errors.Is(err, unix.EPERM) {
		t.Errorf("device as non-root: %v", err)
	}
	assertEmptyDir(t, parent)
	st, err = dev.im.Extract(filepath.Join(parent, "out"), ExtractOptions{SkipDevices: true})
	if err != nil || st.SkippedDevices != 1 {
		t.Errorf("SkipDevices: %+v, %v", st, err)
	}
	if _, err := os.Lstat(filepath.Join(parent, "out/null")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("skipped device exists: %v", err)
	}

	// Forced ownership cannot give files to root.
	parent = privTempDir(t)
	if _, err := ti.im.Extract(filepath.Join(parent, "out"), ExtractOptions{Owners: OwnersRestore}); !errors.Is(err, unix.EPERM) {
		t.Errorf("OwnersRestore as non-root: %v, want EPERM", err)
	}
	assertEmptyDir(t, parent)

	// A failure after a 0000 directory inside a 0555 one was finished.
	bad := buildTestImage(t, []tnode{
		{path: "b", typ: TypeDir, perm: 0o555},
		{path: "b/c", typ: TypeDir, perm: 0o000},
		{path: "b/c/f", typ: TypeFile, perm: 0o400, data: "deep"},
		{path: "z", typ: TypeFile, perm: 0o644, data: "last"},
	})
	flipBlobByte(t, bad, bad.chunks[len(bad.chunks)-1])
	parent = privTempDir(t)
	if _, err := bad.im.Extract(filepath.Join(parent, "out"), ExtractOptions{}); !errors.Is(err, errs.ErrAuthentication) {
		t.Errorf("tampered: %v", err)
	}
	assertEmptyDir(t, parent)
}

func flipBlobByte(t *testing.T, ti testImage, d Digest) {
	t.Helper()
	p := filepath.Join(ti.layout, "blobs/sha256", d.String())
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 0x40
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// assertEmptyDir fails unless dir exists and is empty: no target, no
// temporary directory left behind.
func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	assertOnly(t, dir)
}

func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, names) {
		t.Errorf("%s holds %q, want %q", dir, got, names)
	}
}

// snapshot describes every entry under dir (names, modes, sizes, contents).
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, _ := os.Lstat(p)
		fmt.Fprintf(&b, "%s %v %d", p, fi.Mode(), fi.Size())
		if fi.Mode().IsRegular() {
			c, _ := os.ReadFile(p)
			fmt.Fprintf(&b, " %q", c)
		}
		b.WriteByte('\n')
		return nil
	})
	return b.String()
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

// privTempDir is t.TempDir for a test that leaves directories of mode
// 0555 or 0000 behind, which a process that is not root cannot remove
// without first opening them up.
func privTempDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	t.Cleanup(func() { _ = removeExtractTemp(d) })
	return d
}
