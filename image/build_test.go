package image

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
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
