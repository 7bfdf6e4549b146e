package image

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/sealfs/sealfs/errs"
)

// expectedRefs recomputes, the plain way, which blobs each tag of a layout
// references: manifest, config, rootfs, manifest chunk layers, and every
// chunk of every inode of every layer.
func expectedRefs(t *testing.T, l *Layout) map[string]map[Digest]bool {
	t.Helper()
	tags, err := l.Tags()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[Digest]bool{}
	for _, tag := range tags {
		m, err := l.Manifest(tag)
		if err != nil {
			t.Fatal(err)
		}
		set := map[Digest]bool{m.Digest: true, m.RootfsDigest: true}
		cfg, _ := ParseDigest(m.JSON.Config.Digest)
		set[cfg] = true
		for _, c := range m.Chunks {
			d, _ := ParseDigest(c.Digest)
			set[d] = true
		}
		r, err := l.Rootfs(m)
		if err != nil {
			t.Fatal(err)
		}
		// The chunks of the files the image shows: from the root through
		// the stored entries, each inode from the top layer that has it.
		var visit func(ino uint64)
		visit = func(ino uint64) {
			in := r.Inode(ino)
			switch in.Type {
			case TypeDir:
				for _, e := range in.Dir.Entries {
					visit(e.Ino)
				}
			case TypeFile:
				for _, c := range in.Chunks {
					set[c.Blob.Digest] = true
				}
			}
		}
		visit(RootIno)
		out[tag] = set
	}
	return out
}

func blobSize(t *testing.T, l *Layout, d Digest) int64 {
	t.Helper()
	fi, err := os.Lstat(l.BlobPath(d))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestUsageVectors(t *testing.T) {
	needVectors(t)
	// Logical contents of the source trees, hard links once.
	logical := map[string][2]uint64{ // tree → files, bytes
		"tree1": {4, 15 + 0 + 300*1024 + 0},
		"tree2": {4, 28 + 300*1024 + 0},
	}
	for _, tree := range []string{"tree1", "tree2"} {
		v := logical[tree]
		for _, f := range []string{"subdir/nested.txt", "subdir/added.txt"} {
			if fi, err := os.Stat(filepath.Join(vectorDir, "src", tree, f)); err == nil {
				v[1] += uint64(fi.Size())
			}
		}
		logical[tree] = v
	}
	for _, c := range []struct {
		oci   string
		trees map[string]string // tag → tree
	}{
		{"oci", map[string]string{"v1": "tree1", "v2": "tree2"}},
		{"oci-compressed-tree1", map[string]string{"v3": "tree1"}},
	} {
		t.Run(c.oci, func(t *testing.T) {
			l, err := OpenLayout(filepath.Join(vectorDir, c.oci))
			if err != nil {
				t.Fatal(err)
			}
			u, err := l.Usage()
			if err != nil {
				t.Fatal(err)
			}
			refs := expectedRefs(t, l)
			count := map[Digest]int{}
			for _, set := range refs {
				for d := range set {
					count[d]++
				}
			}
			var shared, unique BlobSet
			for d, n := range count {
				if n > 1 {
					shared.add(blobSize(t, l, d))
				} else {
					unique.add(blobSize(t, l, d))
				}
			}
			if u.Shared != shared || u.Unique != unique {
				t.Errorf("shared %+v unique %+v, want %+v %+v", u.Shared, u.Unique, shared, unique)
			}
			if u.Garbage != (BlobSet{}) || u.Missing != 0 {
				t.Errorf("garbage %+v, missing %d in a clean vector", u.Garbage, u.Missing)
			}
			if u.Total.Count != shared.Count+unique.Count || u.Total.Bytes != shared.Bytes+unique.Bytes {
				t.Errorf("total %+v is not shared + unique", u.Total)
			}
			if len(u.Tags) != len(c.trees) {
				t.Fatalf("%d tags, want %d", len(u.Tags), len(c.trees))
			}
			for _, tu := range u.Tags {
				tree, ok := c.trees[tu.Tag]
				if !ok {
					t.Fatalf("unexpected tag %q", tu.Tag)
				}
				m, _ := l.Manifest(tu.Tag)
				cfg, _ := ParseDigest(m.JSON.Config.Digest)
				var stored, uniq int64
				chunks := 0
				for d := range refs[tu.Tag] {
					stored += blobSize(t, l, d)
					if count[d] == 1 {
						uniq += blobSize(t, l, d)
					}
					if d != m.Digest && d != m.RootfsDigest && d != cfg {
						chunks++
					}
				}
				want := TagUsage{Tag: tu.Tag, Manifest: m.Digest, RootfsSize: m.Rootfs.Size,
					Files: int(logical[tree][0]), LogicalBytes: logical[tree][1],
					Chunks: chunks, StoredBytes: stored, UniqueBytes: uniq}
				if tu != want {
					t.Errorf("%s: %+v\nwant %+v", tu.Tag, tu, want)
				}
				// A delta's top layer holds the whole tree, and its manifest
				// lists that layer's chunks: the base's chunks are not needed.
				if tu.Tag == "v2" && tu.Chunks != len(m.Chunks) {
					t.Errorf("v2 references %d chunks, its manifest lists %d", tu.Chunks, len(m.Chunks))
				}
			}
		})
	}
}

// TestUsageDamaged: garbage, missing blobs and tampered metadata.
func TestUsageDamaged(t *testing.T) {
	needVectors(t)
	dir := copyDir(t, filepath.Join(vectorDir, "oci"))
	l, err := OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	before, err := l.Usage()
	if err != nil {
		t.Fatal(err)
	}
	// An unreferenced blob and a leftover temporary file are garbage.
	g := putBlob(t, dir, []byte("nobody references me"))
	if err := os.WriteFile(filepath.Join(dir, "blobs/sha256/.tmp-upload"), []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	u, err := l.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if u.Garbage != (BlobSet{2, 20 + 7}) || u.Total.Count != before.Total.Count+2 || u.Total.Bytes != before.Total.Bytes+27 {
		t.Errorf("garbage %+v total %+v (before %+v)", u.Garbage, u.Total, before.Total)
	}
	if err := os.Remove(l.BlobPath(g)); err != nil {
		t.Fatal(err)
	}
	// A missing chunk is counted, not fatal.
	m, _ := l.Manifest("v2")
	d, _ := ParseDigest(m.Chunks[0].Digest)
	size := blobSize(t, l, d)
	if err := os.Remove(l.BlobPath(d)); err != nil {
		t.Fatal(err)
	}
	u, err = l.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if u.Missing != 1 || u.Tags[1].Missing != 1 || u.Tags[1].StoredBytes != before.Tags[1].StoredBytes-size {
		t.Errorf("missing %d, v2 %+v (before %+v)", u.Missing, u.Tags[1], before.Tags[1])
	}
	// A tampered rootfs is an authentication failure naming the tag.
	flip := func(p string) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 1
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	flip(l.BlobPath(m.RootfsDigest))
	if _, err := l.Usage(); !errors.Is(err, errs.ErrAuthentication) {
		t.Errorf("Usage with a tampered rootfs = %v, want ErrAuthentication", err)
	}
}
