package blockdev

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestCreateFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "new.img")
	d, err := CreateFile(path, 12345, &FileOptions{BlockSize: 1024})
	if err != nil {
		t.Fatalf("CreateFile: %v", err)
	}
	defer d.Close()
	if d.Size() != 12345 || d.BlockSize() != 1024 || d.ReadOnly() || d.Name() != path {
		t.Fatalf("got size %d, block size %d, read-only %v, name %q", d.Size(), d.BlockSize(), d.ReadOnly(), d.Name())
	}
	checkImage(t, d, make([]byte, 12345))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("image mode %v is accessible to others", perm)
	}

	for _, tc := range []struct {
		name string
		path string
		size int64
		opts *FileOptions
		want error
	}{
		{"exists", path, 10, nil, fs.ErrExist},
		{"negative size", filepath.Join(dir, "neg.img"), -1, nil, ErrOutOfRange},
		{"read-only", filepath.Join(dir, "ro.img"), 10, &FileOptions{ReadOnly: true}, fs.ErrInvalid},
		{"bad block size", filepath.Join(dir, "bs.img"), 10, &FileOptions{BlockSize: 1000}, nil},
		{"missing dir", filepath.Join(dir, "nodir", "x.img"), 10, nil, fs.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := CreateFile(tc.path, tc.size, tc.opts)
			if err == nil {
				d.Close()
				t.Fatal("CreateFile succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("CreateFile = %v; want %v", err, tc.want)
			}
			if tc.path != path {
				if _, err := os.Stat(tc.path); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("failed CreateFile left %s behind", tc.path)
				}
			}
		})
	}
	// The failed attempt on the existing path must not have touched it.
	if fi, err := os.Stat(path); err != nil || fi.Size() != 12345 {
		t.Errorf("existing image changed: %v, %v", fi, err)
	}
}

func TestOpenFileErrors(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	if err := os.WriteFile(img, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string
		opts *FileOptions
		want error
	}{
		{"missing", filepath.Join(dir, "missing"), nil, fs.ErrNotExist},
		{"directory", dir, &FileOptions{ReadOnly: true}, nil},
		{"block size not power of two", img, &FileOptions{BlockSize: 3000}, nil},
		{"block size too small", img, &FileOptions{BlockSize: 256}, nil},
		{"negative block size", img, &FileOptions{BlockSize: -4096}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := OpenFile(tc.path, tc.opts)
			if err == nil {
				d.Close()
				t.Fatal("OpenFile succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("OpenFile = %v; want %v", err, tc.want)
			}
		})
	}
}

func TestFilePersistence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	d, err := CreateFile(path, 8192, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(3000, 9)
	if _, err := d.WriteAt(data, 1000); err != nil {
		t.Fatal(err)
	}
	if err := d.Resize(10000); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// Everything fails cleanly after Close, rather than touching a reused
	// descriptor.
	if _, err := d.WriteAt(data, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("WriteAt after Close = %v; want os.ErrClosed", err)
	}
	if _, err := d.ReadAt(data, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("ReadAt after Close = %v; want os.ErrClosed", err)
	}
	if err := d.Sync(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Sync after Close = %v; want os.ErrClosed", err)
	}
	if err := d.Trim(0, 512); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Trim after Close = %v; want os.ErrClosed", err)
	}
	if err := d.Resize(512); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Resize after Close = %v; want os.ErrClosed", err)
	}
	if err := d.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Close = %v; want os.ErrClosed", err)
	}

	ro, err := OpenFile(path, &FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	want := make([]byte, 10000)
	copy(want[1000:], data)
	checkImage(t, ro, want)
}

func TestFileBlockSizeOverride(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, bs := range []int{512, 4096, 1 << 16} {
		d, err := OpenFile(path, &FileOptions{BlockSize: bs})
		if err != nil {
			t.Fatal(err)
		}
		if d.BlockSize() != bs {
			t.Errorf("BlockSize = %d; want override %d", d.BlockSize(), bs)
		}
		d.Close()
	}
}

func TestNormalizeBlockSize(t *testing.T) {
	for _, tc := range []struct {
		in   int64
		want int
	}{
		{-1, 512}, {0, 512}, {1, 512}, {511, 512}, {512, 512}, {513, 1024},
		{4096, 4096}, {4097, 8192}, {65536, 65536}, {3 << 20, 4 << 20},
		{1 << 40, 1 << 30},
	} {
		if got := normalizeBlockSize(tc.in); got != tc.want {
			t.Errorf("normalizeBlockSize(%d) = %d; want %d", tc.in, got, tc.want)
		}
	}
}

func TestFileTrimKeepsNeighbours(t *testing.T) {
	// Trim must not change the file size (FALLOC_FL_KEEP_SIZE) nor bytes
	// outside the range, even when the hole is not block aligned.
	path := filepath.Join(t.TempDir(), "img")
	init := pattern(1<<16, 10)
	if err := os.WriteFile(path, init, 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := OpenFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Trim(8192, 1<<15); err != nil {
		t.Fatal(err)
	}
	if err := d.Trim(50000, 1000); err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), init...)
	clear(want[8192 : 8192+1<<15])
	clear(want[50000:51000])
	checkImage(t, d, want)
	if fi, err := os.Stat(path); err != nil || fi.Size() != 1<<16 {
		t.Fatalf("file size after trim: %v, %v", fi, err)
	}
	raw, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(raw, want) {
		t.Fatalf("file on disk differs after trim: %v", err)
	}
}
