package ext2img

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// memImage is an image in memory that refuses access past its end, so a
// stray offset shows as an error rather than a silent write.
type memImage struct {
	b      []byte
	writes int
}

func (m *memImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memImage) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, errors.New("write past the end")
	}
	m.writes++
	return copy(m.b[off:], p), nil
}

// smallImage is a 64 KiB ext2 image of a few files made by mke2fs without
// normalization, or nil without mke2fs.
func smallImage(tb testing.TB) []byte {
	tb.Helper()
	mke2fs, err := exec.LookPath("mke2fs")
	if err != nil {
		return nil
	}
	dir := tb.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(filepath.Join(src, "d"), 0o755); err != nil {
		tb.Fatal(err)
	}
	for _, p := range []string{"a", "d/b"} {
		if err := os.WriteFile(filepath.Join(src, p), []byte(p), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	img := filepath.Join(dir, "img")
	if err := os.WriteFile(img, make([]byte, 64<<10), 0o600); err != nil {
		tb.Fatal(err)
	}
	if out, err := exec.Command(mke2fs, "-q", "-F", "-t", "ext2", "-b", "1024", "-I", "256", "-N", "16", "-d", src, img).CombinedOutput(); err != nil {
		tb.Fatalf("mke2fs: %v: %s", err, out)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestNormalizeInodes: on a plain mke2fs image, the used inodes' times and
// owners change and nothing outside the inode tables does.
func TestNormalizeInodes(t *testing.T) {
	orig := smallImage(t)
	if orig == nil {
		t.Skip("mke2fs is not installed")
	}
	m := &memImage{b: bytes.Clone(orig)}
	if err := normalizeInodes(m, int64(len(m.b)), 12345, false); err != nil {
		t.Fatal(err)
	}
	if m.writes == 0 {
		t.Fatal("nothing written")
	}
	// Inode 12 (the first file, "a") now has the pinned times and owner.
	le := binary.LittleEndian
	sb := m.b[1024:]
	itable := int(le.Uint32(m.b[2048+8:])) * 1024 // group 0's table, 1 KiB blocks
	in := m.b[itable+11*256 : itable+12*256]
	for _, off := range []int{8, 12, 16, 0x90} {
		if got := le.Uint32(in[off:]); got != 12345 {
			t.Errorf("inode 12 time at %#x: %d", off, got)
		}
	}
	if le.Uint16(in[2:]) != 0 || le.Uint16(in[24:]) != 0 {
		t.Error("inode 12 owner not root")
	}
	// Only bytes inside the inode table changed.
	tableLen := int(le.Uint32(sb[40:])) * 256
	for i := range orig {
		if orig[i] != m.b[i] && (i < itable || i >= itable+tableLen) {
			t.Fatalf("byte %d outside the inode table changed", i)
		}
	}
	// Running it again changes nothing.
	again := &memImage{b: bytes.Clone(m.b)}
	if err := normalizeInodes(again, int64(len(again.b)), 12345, false); err != nil || !bytes.Equal(again.b, m.b) {
		t.Errorf("second run: %v, changed %v", err, !bytes.Equal(again.b, m.b))
	}
}

// TestNormalizeRefuses: images that are not what Build makes are refused
// with ErrLayout, untouched.
func TestNormalizeRefuses(t *testing.T) {
	orig := smallImage(t)
	if orig == nil {
		t.Skip("mke2fs is not installed")
	}
	le := binary.LittleEndian
	for _, c := range []struct {
		name string
		edit func(b []byte) []byte
	}{
		{"empty", func(b []byte) []byte { return nil }},
		{"no magic", func(b []byte) []byte { b[1024+56] = 0; return b }},
		{"revision 0", func(b []byte) []byte { le.PutUint32(b[1024+76:], 0); return b }},
		{"extents", func(b []byte) []byte { le.PutUint32(b[1024+96:], 0x42); return b }},
		{"metadata_csum", func(b []byte) []byte { le.PutUint32(b[1024+100:], 0x403); return b }},
		{"huge block size", func(b []byte) []byte { le.PutUint32(b[1024+24:], 30); return b }},
		{"inode size 100", func(b []byte) []byte { le.PutUint16(b[1024+88:], 100); return b }},
		{"more blocks than bytes", func(b []byte) []byte { le.PutUint32(b[1024+4:], 1<<30); return b }},
		{"zero inodes per group", func(b []byte) []byte { le.PutUint32(b[1024+40:], 0); return b }},
		{"inode count", func(b []byte) []byte { le.PutUint32(b[1024:], 7); return b }},
		{"first inode 1", func(b []byte) []byte { le.PutUint32(b[1024+84:], 1); return b }},
		{"inode table past the end", func(b []byte) []byte { le.PutUint32(b[2048+8:], 1<<20); return b }},
		{"truncated", func(b []byte) []byte { return b[:4096] }},
	} {
		b := c.edit(bytes.Clone(orig))
		m := &memImage{b: b}
		err := normalizeInodes(m, int64(len(b)), 1, false)
		if !errors.Is(err, ErrLayout) {
			t.Errorf("%s: err = %v, want ErrLayout", c.name, err)
		}
		if m.writes != 0 {
			t.Errorf("%s: %d writes", c.name, m.writes)
		}
	}
}

// FuzzNormalizeInodes damages an ext2 image: normalizing must never panic,
// access the image outside its size, or allocate more than a few blocks.
func FuzzNormalizeInodes(f *testing.F) {
	if b := smallImage(f); b != nil {
		for _, off := range []uint32{1024, 1024 + 40, 2048, 2048 + 4, 2048 + 8} {
			f.Add(b, off, []byte{0xff})
		}
	}
	f.Fuzz(func(t *testing.T, img []byte, off uint32, patch []byte) {
		if len(img) > 1<<20 {
			return
		}
		for i, p := range patch {
			if o := int(off) + i; o < len(img) {
				img[o] ^= p
			}
		}
		m := &memImage{b: img}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if err := normalizeInodes(m, int64(len(img)), 1, false); err != nil && !errors.Is(err, ErrLayout) {
			t.Fatalf("error %v is not ErrLayout", err)
		}
		runtime.ReadMemStats(&after)
		// A superblock, a descriptor and two blocks of at most 64 KiB.
		if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
			t.Fatalf("%d bytes allocated", n)
		}
	})
}

// TestBuildCancelled: a cancelled context stops Build.
func TestBuildCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Build(ctx, src, filepath.Join(t.TempDir(), "img"), &Options{Size: 4 << 20, Time: time.Unix(1e9, 0)})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}
