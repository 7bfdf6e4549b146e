package image

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// referenceTree recreates a vector source tree as the reference images were
// built from it (README of the vectors): git keeps neither the hard link,
// the xattr nor the symlink, so they are put back, and the owner and modes
// are set as they were (root, 0644 files, 0755 directories).
func referenceTree(t testing.TB, name string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the reference images are owned by root; byte-identical builds need root")
	}
	dst := filepath.Join(t.TempDir(), name)
	src := filepath.Join(vectorDir, "src", name)
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			if err := os.Mkdir(out, 0o755); err != nil {
				return err
			}
			return os.Chmod(out, 0o755)
		case rel == "hardlink-hello.txt" || rel == "link-to-hello":
			return nil // recreated below
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if err := os.WriteFile(out, b, 0o644); err != nil {
				return err
			}
			return os.Chmod(out, 0o644)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Link(filepath.Join(dst, "hello.txt"), filepath.Join(dst, "hardlink-hello.txt")))
	must(os.Symlink("hello.txt", filepath.Join(dst, "link-to-hello")))
	if err := unix.Setxattr(filepath.Join(dst, "hello.txt"), "user.puzzlefs", []byte("interop"), 0); err != nil {
		t.Skipf("user xattrs not supported here: %v", err)
	}
	must(filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, 0, 0)
	}))
	return dst
}

// TestBuildMatchesReference builds the reference trees and gets the digests
// `puzzlefs build` printed for them: the same manifest, rootfs and chunks,
// byte for byte, including the delta build on top of v1.
func TestBuildMatchesReference(t *testing.T) {
	needVectors(t)
	tree1, tree2 := referenceTree(t, "tree1"), referenceTree(t, "tree2")
	oci := filepath.Join(t.TempDir(), "oci")
	ctx := context.Background()

	r1, err := Build(ctx, tree1, oci, "v1", BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := r1.RootDigest.String(); got != vectors[0].printed {
		t.Errorf("v1 root digest %s, puzzlefs printed %s", got, vectors[0].printed)
	}
	if r1.Chunks != 3 || r1.NewChunks != 3 || r1.ReusedChunks != 0 {
		t.Errorf("v1: %d chunks, %d new, %d reused; want 3, 3, 0", r1.Chunks, r1.NewChunks, r1.ReusedChunks)
	}
	r2, err := Build(ctx, tree2, oci, "v2", BuildOptions{Base: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := r2.RootDigest.String(); got != vectors[1].printed {
		t.Errorf("v2 root digest %s, puzzlefs printed %s", got, vectors[1].printed)
	}
	// tree2 rewrote hello.txt and 8 bytes of random.bin: the chunk holding
	// the change and the first chunk are new, the last one is reused.
	if r2.Chunks != 3 || r2.ReusedChunks != 1 || r2.NewChunks != 2 {
		t.Errorf("v2: %d chunks, %d new, %d reused; want 3, 2, 1", r2.Chunks, r2.NewChunks, r2.ReusedChunks)
	}
	// The whole layout equals the reference one, file for file.
	ref, err := os.ReadFile(filepath.Join(vectorDir, "oci", "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(oci, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(ref) {
		t.Errorf("index.json differs:\n got %s\nwant %s", got, ref)
	}
	refBlobs, _ := os.ReadDir(filepath.Join(vectorDir, "oci", "blobs", "sha256"))
	ourBlobs, _ := os.ReadDir(filepath.Join(oci, "blobs", "sha256"))
	if len(refBlobs) != len(ourBlobs) {
		t.Errorf("%d blobs, reference has %d", len(ourBlobs), len(refBlobs))
	}
	for _, b := range refBlobs {
		if _, err := os.Stat(filepath.Join(oci, "blobs", "sha256", b.Name())); err != nil {
			t.Errorf("reference blob %s missing: %v", b.Name(), err)
		}
	}
}

// TestBuildCompressedFixesVerity: with compression, puzzlefs records the
// fs-verity digest of discarded compressed bytes for chunks it stores raw;
// sealfs records the stored bytes', so a verity-checked read succeeds.
func TestBuildCompressedFixesVerity(t *testing.T) {
	needVectors(t)
	tree1 := referenceTree(t, "tree1")
	oci := filepath.Join(t.TempDir(), "oci")
	r, err := Build(context.Background(), tree1, oci, "v3", BuildOptions{Compress: true})
	if err != nil {
		t.Fatal(err)
	}
	l, err := OpenLayout(oci)
	if err != nil {
		t.Fatal(err)
	}
	im, err := l.OpenImage("v3", &r.RootDigest)
	if err != nil {
		t.Fatal(err)
	}
	err = im.Walk(func(p string, in *Inode) error {
		if in.Type == TypeFile {
			_, err := im.ReadFile(in)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The reference's chunks did not shrink, so they are the same raw blobs.
	for d := range vectors[2].badVerity {
		if _, err := os.Stat(filepath.Join(oci, "blobs", "sha256", d)); err != nil {
			t.Errorf("chunk %s: %v", d, err)
		}
	}
}

func TestBuildBadInput(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range []struct {
		name, src, oci, tag string
		opts                BuildOptions
		want                error
	}{
		{"bad tag", dir, filepath.Join(dir, "o1"), "a/b", BuildOptions{}, fs.ErrInvalid},
		{"tag starting with dot", dir, filepath.Join(dir, "o2"), ".x", BuildOptions{}, fs.ErrInvalid},
		{"source missing", filepath.Join(dir, "nope"), filepath.Join(dir, "o3"), "t", BuildOptions{}, fs.ErrNotExist},
		{"source is a file", file, filepath.Join(dir, "o4"), "t", BuildOptions{}, fs.ErrInvalid},
		{"missing base", dir, filepath.Join(dir, "o5"), "t", BuildOptions{Base: "nope"}, fs.ErrNotExist},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Build(ctx, c.src, c.oci, c.tag, c.opts)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
}

// everyTypeTree makes a tree with every file type PuzzleFS stores; names
// are created in the given order so two trees can differ in directory order.
func everyTypeTree(t *testing.T, reverse bool, mtime int64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tree")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(dir, 0o755))
	big := make([]byte, 700<<10)
	for i := range big {
		big[i] = byte(i*7 + i>>9) // deterministic, several chunks
	}
	steps := []func(){
		func() { must(os.WriteFile(filepath.Join(dir, "big.bin"), big, 0o644)) },
		func() { must(os.WriteFile(filepath.Join(dir, "empty"), nil, 0o600)) },
		func() { must(os.MkdirAll(filepath.Join(dir, "sub", "deeper"), 0o750)) },
		func() { must(os.WriteFile(filepath.Join(dir, "small.txt"), []byte("hello\n"), 0o644)) },
		func() { must(os.Symlink("small.txt", filepath.Join(dir, "link"))) },
		func() { must(unix.Mkfifo(filepath.Join(dir, "fifo"), 0o640)) },
		func() { must(os.WriteFile(filepath.Join(dir, "suid"), []byte("#!/bin/sh\n"), 0o755)) },
	}
	if reverse {
		for i, j := 0, len(steps)-1; i < j; i, j = i+1, j-1 {
			steps[i], steps[j] = steps[j], steps[i]
		}
	}
	for _, s := range steps {
		s()
	}
	must(os.WriteFile(filepath.Join(dir, "sub", "deeper", "nested"), big[:1000], 0o644))
	must(os.Link(filepath.Join(dir, "small.txt"), filepath.Join(dir, "sub", "hardlink")))
	must(os.Chmod(filepath.Join(dir, "suid"), 0o4755|os.ModeSetuid))
	must(unix.Chmod(filepath.Join(dir, "suid"), 0o4755))
	must(unix.Chmod(filepath.Join(dir, "sub"), 0o1777))
	if os.Geteuid() == 0 {
		must(unix.Mknod(filepath.Join(dir, "chr"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))))
		must(unix.Mknod(filepath.Join(dir, "blk"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 0))))
		must(os.Lchown(filepath.Join(dir, "small.txt"), 1234, 5678))
	}
	// xattrs set in non-sorted order
	for _, kv := range [][2]string{{"user.zeta", "z"}, {"user.alpha", "a"}, {"user.mid", ""}} {
		if err := unix.Setxattr(filepath.Join(dir, "small.txt"), kv[0], []byte(kv[1]), 0); err != nil {
			t.Skipf("user xattrs not supported: %v", err)
		}
	}
	must(filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		ts := []unix.Timespec{{Sec: mtime}, {Sec: mtime}}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	}))
	return dir
}

// TestBuildReproducible: the same tree built from different places, with
// different directory order and timestamps, gives the same digest.
func TestBuildReproducible(t *testing.T) {
	ctx := context.Background()
	var digests []Digest
	for i, c := range []struct {
		reverse bool
		mtime   int64
	}{{false, 1}, {true, 1700000000}} {
		src := everyTypeTree(t, c.reverse, c.mtime)
		oci := filepath.Join(t.TempDir(), "layout"+string(rune('a'+i)))
		r, err := Build(ctx, src, oci, "t", BuildOptions{})
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, r.RootDigest)
		if r.Chunks < 3 {
			t.Errorf("%d chunks, want the 700 KiB file cut into several", r.Chunks)
		}
	}
	if digests[0] != digests[1] {
		t.Errorf("digests differ: %s vs %s", digests[0], digests[1])
	}
}

// TestBuildEveryType reads back what Build stored for each file type.
func TestBuildEveryType(t *testing.T) {
	src := everyTypeTree(t, false, 0)
	oci := filepath.Join(t.TempDir(), "oci")
	r, err := Build(context.Background(), src, oci, "t", BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := OpenLayout(oci)
	if err != nil {
		t.Fatal(err)
	}
	im, err := l.OpenImage("t", &r.RootDigest)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*Inode{}
	if err := im.Walk(func(p string, in *Inode) error { got[p] = in; return nil }); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]InodeType{
		".": TypeDir, "big.bin": TypeFile, "empty": TypeFile, "sub": TypeDir, "sub/deeper": TypeDir,
		"sub/deeper/nested": TypeFile, "small.txt": TypeFile, "link": TypeSymlink, "fifo": TypeFifo,
		"suid": TypeFile, "sub/hardlink": TypeFile,
	} {
		if got[p] == nil || got[p].Type != want {
			t.Errorf("%s: %v, want a %s", p, got[p], want)
		}
	}
	for p, in := range got {
		st, err := os.Lstat(filepath.Join(src, p))
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		if uint32(sys.Mode&0o7777) != uint32(in.Permissions) || sys.Uid != in.UID || sys.Gid != in.GID {
			t.Errorf("%s: mode %o uid %d gid %d, want %o %d %d", p, in.Permissions, in.UID, in.GID, sys.Mode&0o7777, sys.Uid, sys.Gid)
		}
		switch in.Type {
		case TypeFile:
			b, err := im.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := os.ReadFile(filepath.Join(src, p))
			if !bytes.Equal(b, want) {
				t.Errorf("%s: contents differ", p)
			}
		case TypeSymlink:
			if string(in.SymlinkTarget) != "small.txt" {
				t.Errorf("link target %q", in.SymlinkTarget)
			}
		case TypeChar, TypeBlock:
			if uint64(unix.Major(sys.Rdev)) != in.Major || uint64(unix.Minor(sys.Rdev)) != in.Minor {
				t.Errorf("%s: device %d:%d", p, in.Major, in.Minor)
			}
		}
	}
	if got["sub/hardlink"].Ino != got["small.txt"].Ino {
		t.Error("hard links got different inodes")
	}
	var keys []string
	for _, x := range got["small.txt"].Xattrs {
		keys = append(keys, string(x.Key)+"="+string(x.Value))
	}
	if strings.Join(keys, ",") != "user.alpha=a,user.mid=,user.zeta=z" {
		t.Errorf("xattrs %v, want sorted by name", keys)
	}
	if os.Geteuid() == 0 && (got["chr"] == nil || got["chr"].Type != TypeChar || got["blk"] == nil || got["blk"].Type != TypeBlock) {
		t.Error("device nodes missing")
	}
}

// TestBuildBaseReuse stacks versions: unchanged data is reused, removed
// names become whiteouts, kept paths keep their inode numbers, and a
// removed hard link whose other name survives does not collide.
func TestBuildBaseReuse(t *testing.T) {
	ctx := context.Background()
	src := everyTypeTree(t, false, 0)
	oci := filepath.Join(t.TempDir(), "oci")
	r1, err := Build(ctx, src, oci, "v1", BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l, _ := OpenLayout(oci)
	im1, err := l.OpenImage("v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	ino := func(im *Image, p string) uint64 {
		var n uint64
		im.Walk(func(q string, in *Inode) error {
			if q == p {
				n = in.Ino
			}
			return nil
		})
		return n
	}
	// v2: remove one name of the hard link and the empty file, add a file.
	if err := os.Remove(filepath.Join(src, "small.txt")); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(src, "empty"))
	os.WriteFile(filepath.Join(src, "new.txt"), []byte("new"), 0o644)
	r2, err := Build(ctx, src, oci, "v2", BuildOptions{Base: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	if r2.ReusedChunks == 0 || r2.NewChunks > 2 {
		t.Errorf("v2: %d new, %d reused chunks; want the big file's chunks reused", r2.NewChunks, r2.ReusedChunks)
	}
	if r2.ReusedBytes < r1.NewBytes/2 {
		t.Errorf("v2 reused %d bytes of v1's %d", r2.ReusedBytes, r1.NewBytes)
	}
	im2, err := l.OpenImage("v2", &r2.RootDigest)
	if err != nil {
		t.Fatal(err)
	}
	if len(im2.Rootfs.Layers) != 2 {
		t.Errorf("%d layers, want 2", len(im2.Rootfs.Layers))
	}
	for _, p := range []string{"big.bin", "sub", "sub/hardlink", "link"} {
		if a, b := ino(im1, p), ino(im2, p); a != b || a == 0 {
			t.Errorf("%s: inode %d in v1, %d in v2", p, a, b)
		}
	}
	for _, p := range []string{"small.txt", "empty"} {
		if _, err := im2.Lookup(im2.Root(), []byte(p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still visible in v2: %v", p, err)
		}
	}
	if ino(im2, "new.txt") <= ino(im1, "suid") {
		t.Error("new file did not get a fresh inode number")
	}
	// Inode numbers of the top layer are unique (ReadRootfs checks the
	// order strictly), and the whiteout for small.txt has its own number.
	hl := ino(im2, "sub/hardlink")
	for _, e := range im2.Root().Dir.Entries {
		if string(e.Name) == "small.txt" && e.Ino == hl {
			t.Error("whiteout shares the surviving hard link's inode")
		}
	}
	// The same tree on top of itself adds nothing.
	r3, err := Build(ctx, src, oci, "v3", BuildOptions{Base: "v2"})
	if err != nil {
		t.Fatal(err)
	}
	if r3.RootDigest != r2.RootDigest || r3.NewChunks != 0 {
		t.Errorf("rebuild on itself: digest %s (v2 %s), %d new chunks", r3.RootDigest, r2.RootDigest, r3.NewChunks)
	}
}

// TestEncodeMultiSegment: a rootfs larger than capnproto-rust's first
// segment spreads over segments with far pointers; it must decode to the
// same values and re-encode to the same bytes.
func TestEncodeMultiSegment(t *testing.T) {
	src := filepath.Join(t.TempDir(), "many")
	os.Mkdir(src, 0o755)
	for i := range 3000 {
		name := filepath.Join(src, fmt.Sprintf("file-%05d-with-a-longer-name", i))
		if err := os.WriteFile(name, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	oci := filepath.Join(t.TempDir(), "oci")
	if _, err := Build(context.Background(), src, oci, "t", BuildOptions{}); err != nil {
		t.Fatal(err)
	}
	l, _ := OpenLayout(oci)
	m, err := l.Manifest("t")
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := l.ReadDescriptor(m.Rootfs)
	if err != nil {
		t.Fatal(err)
	}
	if segs := binary.LittleEndian.Uint32(raw) + 1; segs < 3 {
		t.Fatalf("%d segments, want several", segs)
	}
	r, err := ReadRootfs(raw)
	if err != nil {
		t.Fatal(err)
	}
	again, err := EncodeRootfs(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, raw) {
		t.Error("re-encoding a multi-segment rootfs changed it")
	}
	if n := len(r.Inode(RootIno).Dir.Entries); n != 3000 {
		t.Errorf("%d entries", n)
	}
}

// TestBuildExtractDiff: build a tree with every file type, extract it with
// the fs-verity chain checked, and compare the two trees (types, modes,
// owners, devices, hard links, xattrs, contents, link targets, diff -r).
func TestBuildExtractDiff(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to restore owners and device nodes")
	}
	src := everyTypeTree(t, false, 0)
	oci := filepath.Join(t.TempDir(), "oci")
	r, err := Build(context.Background(), src, oci, "t", BuildOptions{Compress: true})
	if err != nil {
		t.Fatal(err)
	}
	l, err := OpenLayout(oci)
	if err != nil {
		t.Fatal(err)
	}
	im, err := l.OpenImage("t", &r.RootDigest)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	if _, err := im.Extract(out, ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, src, out)
}
