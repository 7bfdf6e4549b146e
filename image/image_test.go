package image

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealfs/sealfs/errs"
)

// TestOpenImageVerity opens every reference image with its printed root
// digest and reads every file through the checked chain. The -c image's
// chunks carry upstream's wrong fsVerityData entries, so reading it with
// verity must fail on the first chunk, while sha256-only reads succeed.
func TestOpenImageVerity(t *testing.T) {
	needVectors(t)
	for _, v := range vectors {
		t.Run(v.oci+":"+v.tag, func(t *testing.T) {
			l, err := OpenLayout(filepath.Join(vectorDir, v.oci))
			if err != nil {
				t.Fatal(err)
			}
			root, err := ParseVerityDigest(v.printed)
			if err != nil {
				t.Fatal(err)
			}
			for _, useVerity := range []bool{false, true} {
				var rd *Digest
				if useVerity {
					rd = &root
				}
				im, err := l.OpenImage(v.tag, rd)
				if err != nil {
					t.Fatal(err)
				}
				files := 0
				err = im.Walk(func(p string, in *Inode) error {
					if in.Type != TypeFile {
						return nil
					}
					b, err := im.ReadFile(in)
					if err != nil {
						return err
					}
					want, err := os.ReadFile(filepath.Join(vectorDir, "src", v.tree, p))
					if err != nil {
						return err
					}
					if sha256.Sum256(b) != sha256.Sum256(want) {
						t.Errorf("%s: contents differ from src/%s", p, v.tree)
					}
					files++
					return nil
				})
				if useVerity && v.badVerity != nil {
					if !errors.Is(err, errs.ErrAuthentication) || !strings.Contains(err.Error(), "fs-verity") {
						t.Fatalf("verity walk of upstream's -c image: %v, want an fs-verity mismatch", err)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if files == 0 {
					t.Fatal("no files walked")
				}
			}
		})
	}
}

func TestOpenImageWrongDigest(t *testing.T) {
	needVectors(t)
	l, err := OpenLayout(filepath.Join(vectorDir, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	// v2's digest does not open v1.
	d, _ := ParseVerityDigest(vectors[1].printed)
	if _, err := l.OpenImage("v1", &d); !errors.Is(err, errs.ErrAuthentication) {
		t.Fatalf("OpenImage(v1, digest of v2) = %v, want ErrAuthentication", err)
	}
	for _, bad := range []string{"", "00", strings.Repeat("g", 64), strings.Repeat("0", 66)} {
		if _, err := ParseVerityDigest(bad); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("ParseVerityDigest(%q) = %v, want fs.ErrInvalid", bad, err)
		}
	}
}

// TestWhiteoutHidden: in oci:v2 "empty" was deleted; the walk must not show it
// and Lookup must say it does not exist.
func TestWhiteoutHidden(t *testing.T) {
	needVectors(t)
	l, err := OpenLayout(filepath.Join(vectorDir, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	im, err := l.OpenImage("v2", nil)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	if err := im.Walk(func(p string, in *Inode) error { paths = append(paths, p); return nil }); err != nil {
		t.Fatal(err)
	}
	want := ".,hardlink-hello.txt,hello.txt,link-to-hello,random.bin,subdir,subdir/added.txt,subdir/nested.txt"
	if got := strings.Join(paths, ","); got != want {
		t.Errorf("walk = %s\nwant   %s", got, want)
	}
	if _, err := im.Lookup(im.Root(), []byte("empty")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lookup(empty) = %v, want fs.ErrNotExist", err)
	}
}

func TestReadAt(t *testing.T) {
	needVectors(t)
	l, err := OpenLayout(filepath.Join(vectorDir, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	im, err := l.OpenImage("v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	in, err := im.Lookup(im.Root(), []byte("random.bin"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(vectorDir, "src/tree1/random.bin"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ off, n int }{{0, 10}, {0, len(want)}, {65000, 200000}, {len(want) - 5, 100}, {len(want), 1}} {
		p := make([]byte, c.n)
		n, err := im.ReadAt(in, p, int64(c.off))
		end := min(c.off+c.n, len(want))
		if n != end-c.off || hex.EncodeToString(p[:n]) != hex.EncodeToString(want[c.off:end]) {
			t.Errorf("ReadAt(%d, %d) = %d bytes, wrong data", c.off, c.n, n)
		}
		if (end < c.off+c.n) != (err == io.EOF) {
			t.Errorf("ReadAt(%d, %d) err = %v", c.off, c.n, err)
		}
	}
}

// TestLookBelow: a directory flagged lookBelow shows the entries of the same
// directory in lower layers too, except names it shadows or whites out.
func TestLookBelow(t *testing.T) {
	r := &Rootfs{ManifestVersion: ManifestVersion, Layers: []Layer{
		{Inodes: []Inode{
			{Ino: RootIno, Type: TypeDir, Permissions: 0o755, Dir: &Dir{LookBelow: true, Entries: []DirEntry{{5, []byte("top")}, {6, []byte("gone")}}}},
			{Ino: 5, Type: TypeFifo, Permissions: 0o644},
			{Ino: 6, Type: TypeWhiteout, Permissions: 0o644},
		}},
		{Inodes: []Inode{
			{Ino: RootIno, Type: TypeDir, Permissions: 0o755, Dir: &Dir{Entries: []DirEntry{{2, []byte("gone")}, {3, []byte("lower")}, {5, []byte("top")}}}},
			{Ino: 2, Type: TypeFifo, Permissions: 0o644},
			{Ino: 3, Type: TypeFifo, Permissions: 0o644},
		}},
	}}
	l, _ := newLayout(t, encodeRootfs(t, r), MediaTypeChunk)
	im, err := l.OpenImage("t", nil)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := im.ReadDir(im.Root())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, fmt.Sprintf("%s=%d", e.Name, e.Ino))
	}
	if got := strings.Join(names, ","); got != "lower=3,top=5" {
		t.Errorf("entries %s, want lower=3,top=5", got)
	}
}
