package fusefs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/fstest"

	"golang.org/x/sys/unix"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs"
)

// sampleFiles are the files the read tests start from.
func sampleFiles() map[uint64][]byte {
	return map[uint64][]byte{
		16:        []byte("the first user inode"),
		42:        pattern(51, 42),
		43:        pattern(100<<10, 43),
		1000:      {},
		7777777:   pattern(3<<20+17, 7),
		1 << 40:   pattern(4096, 40),
		1<<64 - 2: []byte("the last inode FUSE can carry"),
	}
}

func names(files map[uint64][]byte) []string {
	var out []string
	for ino := range files {
		out = append(out, fmt.Sprint(ino))
	}
	slices.Sort(out)
	return out
}

// TestFSTest runs testing/fstest over the mount, read-only and read-write,
// and compares every file with the image's.
func TestFSTest(t *testing.T) {
	files := sampleFiles()
	for _, ro := range []bool{false, true} {
		t.Run(fmt.Sprintf("readonly=%v", ro), func(t *testing.T) {
			f := newImage(t, 32<<20, files)
			m := mountFS(t, f, Options{ReadOnly: ro})
			if err := fstest.TestFS(os.DirFS(m.dir), names(files)...); err != nil {
				t.Fatal(err)
			}
			for ino, want := range files {
				got, err := os.ReadFile(m.path(fmt.Sprint(ino)))
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("inode %d: %d bytes, %v; want %d bytes", ino, len(got), err, len(want))
				}
			}
			ents, err := os.ReadDir(m.dir)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range ents {
				got = append(got, e.Name())
			}
			if !slices.Equal(got, names(files)) {
				t.Fatalf("ReadDir = %v, want %v", got, names(files))
			}
		})
	}
}

// TestReadOnlyMount refuses every change.
func TestReadOnlyMount(t *testing.T) {
	f := newImage(t, 16<<20, map[uint64][]byte{42: []byte("x")})
	m := mountFS(t, f, Options{ReadOnly: true})
	for what, err := range map[string]error{
		"create": os.WriteFile(m.path("43"), []byte("y"), 0o600),
		"write":  os.WriteFile(m.path("42"), []byte("y"), 0o600),
		"remove": os.Remove(m.path("42")),
		"rename": os.Rename(m.path("42"), m.path("44")),
		"trunc":  os.Truncate(m.path("42"), 0),
	} {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s on a read-only mount: %v, want EROFS", what, err)
		}
	}
	if got := mustRead(t, f, 42); string(got) != "x" {
		t.Fatalf("file changed to %q", got)
	}
}

// TestWriteCommitsAtClose writes new files of several sizes (in memory,
// streamed) and checks each is committed when close returns.
func TestWriteCommitsAtClose(t *testing.T) {
	f := newImage(t, 64<<20, nil)
	m := mountFS(t, f, Options{})
	for i, size := range []int{0, 1, 4095, 4096, 100 << 10, 256 << 10, 256<<10 + 1, 5<<20 + 3} {
		ino := uint64(100 + i)
		data := pattern(size, uint64(size))
		fh, err := os.OpenFile(m.path(fmt.Sprint(ino)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(data); off += 100000 {
			if _, err := fh.Write(data[off:min(off+100000, len(data))]); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := f.Stat(ino); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("inode %d committed before close (%v)", ino, err)
		}
		if err := fh.Close(); err != nil {
			t.Fatal(err)
		}
		if got := mustRead(t, f, ino); !bytes.Equal(got, data) {
			t.Fatalf("inode %d: committed %d bytes, want %d", ino, len(got), len(data))
		}
		st, err := os.Stat(m.path(fmt.Sprint(ino)))
		if err != nil || st.Size() != int64(size) || st.Mode() != 0o600 {
			t.Fatalf("stat %d: %v, %v", ino, st, err)
		}
		if sys := st.Sys().(*syscall.Stat_t); sys.Ino != ino {
			t.Errorf("st_ino %d, want %d", sys.Ino, ino)
		}
	}
	checkImage(t, f)
}

func checkImage(t testing.TB, f *cocoonfs.FS) {
	t.Helper()
	rep, err := f.Verify(t.Context(), nil)
	if err != nil {
		t.Fatalf("Verify: %v %v", err, rep.Problems)
	}
}

// TestFsync: an fsync commits a file that stays open.
func TestFsync(t *testing.T) {
	f := newImage(t, 32<<20, nil)
	m := mountFS(t, f, Options{})
	fh, err := os.Create(m.path("77"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	for _, part := range [][]byte{[]byte("one "), pattern(1<<20, 1), []byte(" three")} {
		before, _ := f.ReadFile(77)
		if _, err := fh.Write(part); err != nil {
			t.Fatal(err)
		}
		if got, _ := f.ReadFile(77); !bytes.Equal(got, before) {
			t.Fatal("a write was committed before fsync")
		}
		if err := fh.Sync(); err != nil {
			t.Fatal(err)
		}
		st, _ := fh.Stat()
		if got := mustRead(t, f, 77); int64(len(got)) != st.Size() || !bytes.HasSuffix(got, part) {
			t.Fatalf("after fsync the image holds %d bytes, want %d ending with the last write", len(got), st.Size())
		}
	}
}

// TestOverwriteAndTruncate changes existing files in place, through a
// handle and through truncate(2) on the path.
func TestOverwriteAndTruncate(t *testing.T) {
	big := pattern(2<<20, 2)
	f := newImage(t, 32<<20, map[uint64][]byte{20: []byte("hello, world"), 21: big, 22: pattern(9000, 22)})
	m := mountFS(t, f, Options{})

	fh, err := os.OpenFile(m.path("20"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt([]byte("HELLO"), 0); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := fh.ReadAt(buf, 0)
	if string(buf[:n]) != "HELLO, world" || err != io.EOF {
		t.Fatalf("read after write: %q, %v", buf[:n], err)
	}
	if _, err := fh.WriteAt([]byte("!"), 20); err != nil { // a hole up to 20
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, f, 20); string(got) != "HELLO, world\x00\x00\x00\x00\x00\x00\x00\x00!" {
		t.Fatalf("inode 20: %q", got)
	}

	// A large file: a change in the middle, then shrink and grow through
	// the handle.
	fh, err = os.OpenFile(m.path("21"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt([]byte("middle"), 1<<20); err != nil {
		t.Fatal(err)
	}
	copy(big[1<<20:], "middle")
	if err := fh.Truncate(1<<20 + 3); err != nil {
		t.Fatal(err)
	}
	if err := fh.Truncate(1<<20 + 10); err != nil {
		t.Fatal(err)
	}
	want := append(slices.Clone(big[:1<<20+3]), make([]byte, 7)...)
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, f, 21); !bytes.Equal(got, want) {
		t.Fatalf("inode 21: %d bytes, differs from the expected %d at %d", len(got), len(want), firstDiff(got, want))
	}

	// truncate(2) without a handle commits at once.
	if err := os.Truncate(m.path("22"), 100); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, f, 22); !bytes.Equal(got, pattern(9000, 22)[:100]) {
		t.Fatalf("inode 22: %d bytes after truncate", len(got))
	}
	// O_TRUNC empties the file; the close commits it empty.
	fh, err = os.OpenFile(m.path("22"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, f, 22); len(got) != 0 {
		t.Fatalf("inode 22: %d bytes after O_TRUNC", len(got))
	}
	checkImage(t, f)
}

// TestRenameAndUnlink: rename is one transaction moving the contents,
// over an existing file or not; unlink removes; open handles of an
// unlinked or replaced file keep its contents.
func TestRenameAndUnlink(t *testing.T) {
	a, b := pattern(600<<10, 1), []byte("small b")
	f := newImage(t, 32<<20, map[uint64][]byte{30: a, 31: b, 32: []byte("victim")})
	m := mountFS(t, f, Options{})

	if err := os.Rename(m.path("30"), m.path("40")); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, f, 40); !bytes.Equal(got, a) {
		t.Fatal("renamed file differs")
	}
	if _, err := f.Stat(30); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("old number still there: %v", err)
	}
	if _, err := os.Stat(m.path("30")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat old name: %v", err)
	}
	if got, err := os.ReadFile(m.path("40")); err != nil || !bytes.Equal(got, a) {
		t.Fatalf("read new name: %v", err)
	}

	// Over an existing file, with the target open: its handle keeps the
	// old contents.
	victim, err := os.Open(m.path("32"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m.path("31"), m.path("32")); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, f, 32); !bytes.Equal(got, b) {
		t.Fatalf("inode 32 is %q after the rename", got)
	}
	old, err := io.ReadAll(victim)
	if err != nil || string(old) != "victim" {
		t.Fatalf("replaced file's handle reads %q, %v", old, err)
	}
	victim.Close()

	// A file renamed while open and being written: the rename commits
	// what it holds, and later writes land under the new number.
	fh, err := os.Create(m.path("50"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.Write([]byte("before ")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m.path("50"), m.path("51")); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, f, 51); string(got) != "before " {
		t.Fatalf("inode 51 after rename: %q", got)
	}
	if _, err := fh.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, f, 51); string(got) != "before after" {
		t.Fatalf("inode 51 after close: %q", got)
	}
	if _, err := f.Stat(50); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("inode 50 exists: %v", err)
	}

	// RENAME_NOREPLACE and invalid names.
	if err := unix.Renameat2(unix.AT_FDCWD, m.path("40"), unix.AT_FDCWD, m.path("32"), unix.RENAME_NOREPLACE); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("RENAME_NOREPLACE over an existing file: %v", err)
	}
	for _, bad := range []string{"abc", "040", "15", "18446744073709551615"} {
		if err := os.Rename(m.path("40"), m.path(bad)); !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("rename to %q: %v, want EINVAL", bad, err)
		}
	}

	// Unlink, with a handle open: the handle still reads and writes.
	fh, err = os.OpenFile(m.path("40"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(m.path("40")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Stat(40); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("unlinked inode still in the image: %v", err)
	}
	// Reuse the freed blocks, then read the old contents through the handle.
	if err := os.WriteFile(m.path("60"), pattern(700<<10, 60), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteAt([]byte("scratch"), 10); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(io.NewSectionReader(fh, 0, 1<<30))
	want := slices.Clone(a)
	copy(want[10:], "scratch")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("unlinked file's handle: %d bytes, %v", len(got), err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Stat(40); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("closing an unlinked file brought it back: %v", err)
	}
	if err := os.Remove(m.path("40")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("second remove: %v", err)
	}
	checkImage(t, f)
}

// TestNames: creating anything but a user inode number in canonical
// decimal is EINVAL; directories, links and nodes are EPERM.
func TestNames(t *testing.T) {
	f := newImage(t, 16<<20, nil)
	m := mountFS(t, f, Options{})
	for _, bad := range []string{"abc", "042", "+42", "0", "15", "18446744073709551615", "18446744073709551616", "4 2"} {
		err := os.WriteFile(m.path(bad), []byte("x"), 0o600)
		if !errors.Is(err, syscall.EINVAL) {
			t.Errorf("create %q: %v, want EINVAL", bad, err)
		}
	}
	if !strings.Contains(m.logs.String(), `refused to create "abc"`) {
		t.Errorf("no log line for the refused name:\n%s", m.logs)
	}
	if err := os.Mkdir(m.path("99"), 0o700); !errors.Is(err, syscall.EPERM) {
		t.Errorf("mkdir: %v, want EPERM", err)
	}
	if err := os.Symlink("16", m.path("99")); !errors.Is(err, syscall.EPERM) {
		t.Errorf("symlink: %v, want EPERM", err)
	}
	if err := os.WriteFile(m.path("16"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(m.path("16"), m.path("99")); !errors.Is(err, syscall.EPERM) {
		t.Errorf("link: %v, want EPERM", err)
	}
	if fh, err := os.OpenFile(m.path("16"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600); !errors.Is(err, os.ErrExist) {
		fh.Close()
		t.Errorf("O_EXCL create of an existing file: %v", err)
	}
	if err := os.WriteFile(m.path("18446744073709551614"), []byte("max"), 0o600); err != nil {
		t.Errorf("create the largest number FUSE carries: %v", err)
	}
}

// TestTwoWriters: handles of one file share its contents; each close
// commits what the file holds, so the last close wins with both writes.
func TestTwoWriters(t *testing.T) {
	f := newImage(t, 16<<20, nil)
	m := mountFS(t, f, Options{})
	a, err := os.Create(m.path("70"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.OpenFile(m.path("70"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteAt([]byte("aaaa"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteAt([]byte("bb"), 2); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, f, 70); string(got) != "aabb" {
		t.Fatalf("after the first close: %q", got)
	}
	if _, err := b.WriteAt([]byte("c"), 4); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, f, 70); string(got) != "aabbc" {
		t.Fatalf("after the last close: %q", got)
	}
}

// TestStatfs reports the image's size and free space.
func TestStatfs(t *testing.T) {
	f := newImage(t, 16<<20, map[uint64][]byte{20: pattern(1<<20, 1)})
	m := mountFS(t, f, Options{})
	in, err := f.Info()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(m.dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks != in.TotalBlocks || st.Bfree != in.TotalBlocks-in.AllocatedBlocks || uint64(st.Bsize) != in.Layout.AllocationBlock || st.Files != 1 {
		t.Fatalf("statfs %+v; image %d blocks of %d, %d allocated", st, in.TotalBlocks, in.Layout.AllocationBlock, in.AllocatedBlocks)
	}
	if err := os.WriteFile(m.path("21"), pattern(2<<20, 2), 0o600); err != nil {
		t.Fatal(err)
	}
	var st2 unix.Statfs_t
	if err := unix.Statfs(m.dir, &st2); err != nil {
		t.Fatal(err)
	}
	if st2.Bfree >= st.Bfree || st2.Files != 2 {
		t.Fatalf("free blocks %d -> %d, files %d after writing 2 MiB", st.Bfree, st2.Bfree, st2.Files)
	}
}

// countingDevice counts the bytes read from the medium.
type countingDevice struct {
	blockdev.Device
	read atomic.Int64
}

func (d *countingDevice) ReadAt(p []byte, off int64) (int, error) {
	d.read.Add(int64(len(p)))
	return d.Device.ReadAt(p, off)
}

// TestStatDoesNotRead: stat of a large file reads a few blocks, not the
// file.
func TestStatDoesNotRead(t *testing.T) {
	dev := blockdev.NewMemory(64<<20, 512)
	if _, err := cocoonfs.Mkfs(dev, testKey, &cocoonfs.MkfsOptions{NoRandomizeUnallocated: true, IOBlock: 4096, Files: map[uint64][]byte{20: pattern(20<<20, 1)}}); err != nil {
		t.Fatal(err)
	}
	cd := &countingDevice{Device: dev}
	f, err := cocoonfs.Open(cd, testKey, &cocoonfs.Options{ReadWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := mountFS(t, f, Options{})
	before := cd.read.Load()
	st, err := os.Stat(m.path("20"))
	if err != nil || st.Size() != 20<<20 {
		t.Fatalf("stat: %v, %v", st, err)
	}
	if n := cd.read.Load() - before; n > 256<<10 {
		t.Fatalf("stat of a 20 MiB file read %d bytes", n)
	}
}

// TestTamperedBlockIsEIO flips bytes of the image under a file: every read
// returns the right bytes or EIO (logged), never others.
func TestTamperedBlockIsEIO(t *testing.T) {
	data := pattern(3<<20, 3)
	dev := blockdev.NewMemory(8<<20, 512)
	if _, err := cocoonfs.Mkfs(dev, testKey, &cocoonfs.MkfsOptions{NoRandomizeUnallocated: true, IOBlock: 4096, Files: map[uint64][]byte{20: data}}); err != nil {
		t.Fatal(err)
	}
	f, err := cocoonfs.Open(dev, testKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := mountFS(t, f, Options{ReadOnly: true})
	eio := 0
	for off := int64(1 << 20); off < 6<<20; off += 777 << 10 {
		b := make([]byte, 1)
		dev.ReadAt(b, off)
		b[0] ^= 0x40
		dev.WriteAt(b, off)
		fh, err := os.Open(m.path("20"))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64<<10)
		for pos := int64(0); pos < int64(len(data)); pos += int64(len(buf)) {
			n, err := fh.ReadAt(buf, pos)
			switch {
			case errors.Is(err, syscall.EIO):
				eio++
			case err != nil && err != io.EOF:
				t.Fatalf("read at %d: %v", pos, err)
			case !bytes.Equal(buf[:n], data[pos:pos+int64(n)]):
				t.Fatalf("read at %d returned wrong data after a flip at %d", pos, off)
			}
		}
		fh.Close()
		b[0] ^= 0x40
		dev.WriteAt(b, off)
	}
	if eio == 0 {
		t.Fatal("no flip was detected")
	}
	if !strings.Contains(m.logs.String(), "returning EIO") || !strings.Contains(m.logs.String(), "authentication") {
		t.Fatalf("no log line for the failed reads:\n%s", m.logs)
	}
}

// TestConcurrent writes, reads, renames and removes many files at once
// (run it with -race) and checks the image afterwards.
func TestConcurrent(t *testing.T) {
	f := newImage(t, 128<<20, map[uint64][]byte{20: pattern(2<<20, 20)})
	m := mountFS(t, f, Options{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	want := map[uint64][]byte{20: pattern(2<<20, 20)}
	errs := make(chan error, 64)
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 8 {
				ino := uint64(1000 + w*100 + i)
				size := (i*w*97 + 1) * 1000
				if i%4 == 3 {
					size = 3<<20 + i
				}
				data := pattern(size, ino)
				if err := os.WriteFile(m.path(fmt.Sprint(ino)), data, 0o600); err != nil {
					errs <- err
					return
				}
				switch i % 3 {
				case 1:
					if err := os.Rename(m.path(fmt.Sprint(ino)), m.path(fmt.Sprint(ino+50))); err != nil {
						errs <- err
						return
					}
					ino += 50
				case 2:
					if err := os.Remove(m.path(fmt.Sprint(ino))); err != nil {
						errs <- err
						return
					}
					continue
				}
				mu.Lock()
				want[ino] = data
				mu.Unlock()
			}
		}()
	}
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				got, err := os.ReadFile(m.path("20"))
				if err != nil || !bytes.Equal(got, want20()) {
					errs <- fmt.Errorf("concurrent read of 20: %d bytes, %v", len(got), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	m.unmount(t)
	for ino, data := range want {
		if got := mustRead(t, f, ino); !bytes.Equal(got, data) {
			t.Fatalf("inode %d differs", ino)
		}
	}
	n := 0
	for _, err := range f.Inodes() {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != len(want) {
		t.Fatalf("%d files in the image, want %d", n, len(want))
	}
	checkImage(t, f)
}

func want20() []byte { return pattern(2<<20, 20) }

// TestUnmountCommitsOpenFiles: a file still open at a lazy unmount is
// committed when the server stops, as its last close would.
func TestLazyUnmountCommits(t *testing.T) {
	f := newImage(t, 16<<20, nil)
	m := mountFS(t, f, Options{})
	fh, err := os.Create(m.path("90"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.Write([]byte("open at unmount")); err != nil {
		t.Fatal(err)
	}
	if out, err := execCommand("fusermount3", "-u", "-z", m.dir); err != nil {
		t.Fatalf("fusermount3 -u -z: %v: %s", err, out)
	}
	fh.Close()
	m.srv.Wait()
	if got := mustRead(t, f, 90); string(got) != "open at unmount" {
		t.Fatalf("inode 90: %q", got)
	}
}

func execCommand(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

// TestNoSpace: a file that does not fit fails its writes or its close with
// ENOSPC; the image keeps the old contents and verifies.
func TestNoSpace(t *testing.T) {
	f := newImage(t, 8<<20, map[uint64][]byte{20: []byte("old contents")})
	m := mountFS(t, f, Options{})
	fh, err := os.OpenFile(m.path("20"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	chunk := pattern(1<<20, 1)
	for i := 0; i < 16 && err == nil; i++ {
		_, err = fh.Write(chunk)
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing 16 MiB into an 8 MiB image: %v, want ENOSPC", err)
	}
	if got := mustRead(t, f, 20); string(got) != "old contents" {
		t.Fatalf("inode 20 holds %d bytes after the failed write", len(got))
	}
	checkImage(t, f)
	// The space is free again.
	if err := os.WriteFile(m.path("21"), pattern(3<<20, 2), 0o600); err != nil {
		t.Fatalf("after the failure: %v", err)
	}
}

// TestMmap: files are served with direct I/O, and mmap still reads them.
func TestMmap(t *testing.T) {
	data := pattern(300<<10, 9)
	f := newImage(t, 16<<20, map[uint64][]byte{20: data})
	m := mountFS(t, f, Options{})
	fh, err := os.Open(m.path("20"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	b, err := syscall.Mmap(int(fh.Fd()), 0, len(data), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	defer syscall.Munmap(b)
	if !bytes.Equal(b, data) {
		t.Fatal("mapped contents differ")
	}
}
