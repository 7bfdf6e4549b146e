package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sealfs/sealfs/bd"
	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/internal/testutil"
)

// writeBdTree makes the same small tree under root in the given order, then
// sets every time stamp to mtime.
func writeBdTree(t *testing.T, root string, reverse bool, mtime time.Time) {
	t.Helper()
	files := []struct{ path, body string }{
		{"hello.txt", "hello, sealed world\n"},
		{"sub/data.bin", string(bytes.Repeat([]byte{7}, 50000))},
		{"sub/more.txt", "more"},
		{"z.txt", "last"},
		{"a.txt", "first"},
	}
	if reverse {
		slices.Reverse(files)
	}
	for _, f := range files {
		p := filepath.Join(root, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tv := unix.NsecToTimeval(mtime.UnixNano())
	err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return unix.Lutimes(p, []unix.Timeval{tv, tv})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestBdMakefsReproducible builds each variant twice, from two copies of a
// tree made in opposite orders with different time stamps: the images, the
// root hashes and the filesystem UUIDs are the same, and the filesystem
// inside fsck's clean and holds the files.
func TestBdMakefsReproducible(t *testing.T) {
	testutil.RequireTool(t, "mke2fs")
	e2fsck := testutil.RequireTool(t, "e2fsck")
	debugfs := testutil.RequireTool(t, "debugfs")
	f := newBdFixture(t)
	a, b := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	writeBdTree(t, a, false, time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC))
	time.Sleep(1100 * time.Millisecond) // different ctimes too
	writeBdTree(t, b, true, time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC))
	ctx := context.Background()

	for _, variant := range []string{"std", "verity", "crypt", "vericrypt"} {
		t.Run(variant, func(t *testing.T) {
			var images [][]byte
			var reports []bdReport
			for _, src := range []string{a, b} {
				img := filepath.Join(t.TempDir(), "disk.img")
				o := &bdMakefsOptions{Size: "4M", bdOptions: bdOptions{JSON: true, Variant: variant, BlockSize: 4096, KeyFile: f.xtsKey, MACKeyFile: f.macKey}}
				r, err := runJSON(t, func(out *bytes.Buffer) error { return runBdMakefs(ctx, o, []string{img, src}, out, &bytes.Buffer{}) })
				if err != nil {
					t.Fatalf("makefs %s: %v", src, err)
				}
				data, err := os.ReadFile(img)
				if err != nil {
					t.Fatal(err)
				}
				images, reports = append(images, data), append(reports, r)
			}
			if !bytes.Equal(images[0], images[1]) {
				t.Error("the same tree gave different images")
			}
			if reports[0].RootHash != reports[1].RootHash || reports[0].FSUUID != reports[1].FSUUID || reports[0].FSUUID == "" {
				t.Errorf("reports differ: %+v and %+v", reports[0], reports[1])
			}
			if (reports[0].RootHash != "") != (variant == "verity" || variant == "vericrypt") {
				t.Errorf("root hash %q for %s", reports[0].RootHash, variant)
			}

			// The filesystem inside: decrypted where needed, fsck'd, read back.
			plain := images[0]
			if variant == "crypt" || variant == "vericrypt" {
				key, err := os.ReadFile(f.xtsKey)
				if err != nil {
					t.Fatal(err)
				}
				c, err := bd.NewCrypt(blockdev.NewMemoryFrom(plain, 512), key, nil)
				if err != nil {
					t.Fatal(err)
				}
				plain = bdMust(blockdev.ReadAll(c))
			}
			p := filepath.Join(t.TempDir(), "plain.img")
			if err := os.WriteFile(p, plain, 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(e2fsck, "-fn", p).CombinedOutput(); err != nil {
				t.Fatalf("e2fsck -fn: %v\n%s", err, out)
			}
			for path, want := range map[string]string{"/hello.txt": "hello, sealed world\n", "/sub/more.txt": "more", "/a.txt": "first"} {
				if out, err := exec.Command(debugfs, "-R", "cat "+path, p).Output(); err != nil || string(out) != want {
					t.Errorf("debugfs cat %s = %q, %v", path, out, err)
				}
			}
			if got := formatUUID([16]byte(plain[1024+104 : 1024+120])); got != reports[0].FSUUID {
				t.Errorf("superblock UUID %s, reported %s", got, reports[0].FSUUID)
			}
		})
	}
}

// TestBdMakefsUUIDAndTime: --uuid and SOURCE_DATE_EPOCH land in the image
// and change its root hash; bad values are usage errors.
func TestBdMakefsUUIDAndTime(t *testing.T) {
	testutil.RequireTool(t, "mke2fs")
	debugfs := testutil.RequireTool(t, "debugfs")
	f := newBdFixture(t)
	ctx := context.Background()
	makefs := func(uuid, epoch string) (bdReport, []byte, error) {
		img := filepath.Join(t.TempDir(), "disk.img")
		o := &bdMakefsOptions{Size: "4M", UUID: uuid, SourceDateEpoch: epoch, bdOptions: bdOptions{JSON: true, Variant: "verity", BlockSize: 4096, MACKeyFile: f.macKey}}
		r, err := runJSON(t, func(out *bytes.Buffer) error { return runBdMakefs(ctx, o, []string{img, f.src}, out, &bytes.Buffer{}) })
		b, _ := os.ReadFile(img)
		return r, b, err
	}
	def, _, err := makefs("", "")
	if err != nil {
		t.Fatal(err)
	}
	const uuid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
	r, img, err := makefs(uuid, "1700000000")
	if err != nil {
		t.Fatal(err)
	}
	if r.FSUUID != uuid || r.RootHash == def.RootHash {
		t.Errorf("report %+v (default: %+v)", r, def)
	}
	if got := formatUUID([16]byte(img[1024+104 : 1024+120])); got != uuid {
		t.Errorf("superblock UUID %s", got)
	}
	p := filepath.Join(t.TempDir(), "plain.img")
	if err := os.WriteFile(p, img, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(debugfs, "-R", "stat /hello.txt", p).Output(); err != nil || !bytes.Contains(out, []byte("mtime: 0x6553f100:00000000")) {
		t.Errorf("hello.txt not stamped 1700000000 (0x6553f100): %v\n%s", err, out)
	}
	for _, c := range []struct{ uuid, epoch string }{
		{"nope", ""}, {"00000000-0000-0000-0000-000000000000", ""}, {"", "yesterday"}, {"", "0"}, {"", "4294967296"},
	} {
		if _, _, err := makefs(c.uuid, c.epoch); exitCode(err) != ExitUsage {
			t.Errorf("--uuid %q SOURCE_DATE_EPOCH %q: %v (exit %d), want a usage error", c.uuid, c.epoch, err, exitCode(err))
		}
	}
}
