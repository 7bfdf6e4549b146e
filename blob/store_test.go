package blob

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/merkle"
)

// newStore creates an empty store in a per-test directory.
func newStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "store"), &Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ff(n int) []byte { return bytes.Repeat([]byte{0xff}, n) }

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func mustDigest(t testing.TB, s string) merkle.Digest {
	t.Helper()
	d, err := merkle.ParseDigest(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// install writes data through Create and Close.
func install(t testing.TB, s *Store, data []byte) merkle.Digest {
	t.Helper()
	name := merkle.FuchsiaRoot(data)
	w, err := s.Create(name, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return name
}

func readAll(t testing.TB, s *Store, name merkle.Digest) []byte {
	t.Helper()
	b, err := s.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// checkNoTemp fails if the store has temporary files left.
func checkNoTemp(t testing.TB, s *Store) {
	t.Helper()
	tmp, err := s.tempFiles()
	if err != nil {
		t.Fatal(err)
	}
	if len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
}

// fuchsiaVectors are merkle-formats.md 1.4: N bytes of 0xFF unless noted.
var fuchsiaVectors = []struct {
	name string
	data func() []byte
	root string
}{
	{"0", func() []byte { return nil }, "15ec7bf0b50732b49f8228e07d24365338f9e3ab994b00af08e5a3bffe55fd8b"},
	{"1", func() []byte { return ff(1) }, "0967e0f62a104d1595610d272dfab3d2fa2fe07be0eebce13ef5d79db142610e"},
	{"4096", func() []byte { return ff(4096) }, "0a90612c255555469dead72c8fdc41eec06dfe04a30a1f2b7c480ff95d20c5ec"},
	{"8191", func() []byte { return ff(8191) }, "f2abd690381bab3ce485c814d05c310b22c34a7441418b5c1a002c344a80e730"},
	{"8192", func() []byte { return ff(8192) }, "68d131bc271f9c192d4f6dcd8fe61bef90004856da19d0f2f514a7f4098b0737"},
	{"8193", func() []byte { return ff(8193) }, "374781f7d770b6ee9c1a63e186d2d0ccdad10d6aef4fd027e82b1be5b70a2a0c"},
	{"65536", func() []byte { return ff(65536) }, "f75f59a944d2433bc6830ec243bfefa457704d2aed12f30539cd4f18bf1d62cf"},
	{"2097152", func() []byte { return ff(2097152) }, "1e6e9c870e2fade25b1b0288ac7c216f6fae31c1599c0c57fb7030c15d385a8d"},
	{"2105344", func() []byte { return ff(2105344) }, "7d75dfb18bfd48e03b5be4e8e9aeea2f89880cb81c1551df855e0d0a0cc59a67"},
	{"2109440", func() []byte { return ff(2109440) }, "7577266aa98ce587922fdc668c186e27f3c742fb1b732737153b70ae46973e43"},
	{"fuchsia", func() []byte {
		b := make([]byte, 0xFF0080)
		for i := range b {
			b[i] = [3]byte{0xff, 0x00, 0x80}[i%3]
		}
		return b
	}, "2feb488cffc976061998ac90ce7292241dfa86883c0edc279433b5c4370d0f30"},
	{"zero1", func() []byte { return []byte{0} }, "0c9eefda90e39f8de79af6fe069eda5d43205f7d3e626d5bd80edf7463f3f4a5"},
	{"zero8192", func() []byte { return make([]byte, 8192) }, "01d6133647a9a89cb47ee2631b8e5f5748468a32c7fc5ff7dd3b180fc55b13ec"},
	{"hello", func() []byte { return []byte("hello") }, "36e43c7b39beea113ab5070a979023db0b1a47cb9da622169d10660d4f4ad263"},
	{"abc", func() []byte { return []byte("abc") }, "5ded54f18d5d062e6cab5a3a8b2d87127947ec4e67e9c4dfec764d5c17fe23ce"},
}

// TestFuchsiaVectors installs every vector input under its published name
// (Create), again through Put (which must compute the same name), and reads
// each back verified.
func TestFuchsiaVectors(t *testing.T) {
	s := newStore(t)
	s2 := newStore(t)
	for _, v := range fuchsiaVectors {
		t.Run(v.name, func(t *testing.T) {
			data := v.data()
			name := mustDigest(t, v.root)
			w, err := s.Create(name, int64(len(data)))
			if err != nil {
				t.Fatal(err)
			}
			// Stream in awkward pieces.
			for p := data; len(p) > 0; {
				n := min(len(p), 8193)
				if _, err := w.Write(p[:n]); err != nil {
					t.Fatal(err)
				}
				p = p[n:]
			}
			if err := w.Close(); err != nil {
				t.Fatalf("install under the vector's name: %v", err)
			}
			got, err := s2.Put(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if got != name {
				t.Fatalf("Put named the blob %s, want %s", got, name)
			}
			for _, st := range []*Store{s, s2} {
				if b := readAll(t, st, name); !bytes.Equal(b, data) {
					t.Fatalf("read back %d bytes, want %d (contents differ)", len(b), len(data))
				}
				if err := st.Verify(name); err != nil {
					t.Fatal(err)
				}
				info, err := st.Stat(name)
				if err != nil {
					t.Fatal(err)
				}
				if info.Size != int64(len(data)) || info.TreeBytes != merkle.FuchsiaTreeSize(int64(len(data))) {
					t.Fatalf("Stat = %+v", info)
				}
			}
		})
	}
	names, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != len(fuchsiaVectors) {
		t.Fatalf("List: %d blobs, want %d", len(names), len(fuchsiaVectors))
	}
	for i := 1; i < len(names); i++ {
		if names[i-1].String() >= names[i].String() {
			t.Fatalf("List not sorted: %s before %s", names[i-1], names[i])
		}
	}
	checkNoTemp(t, s)
	checkNoTemp(t, s2)
}

// TestWrongName: bytes that do not hash to the name are refused with
// ErrIntegrity and nothing becomes visible.
func TestWrongName(t *testing.T) {
	s := newStore(t)
	data := randBytes(1, 3*blockSize+5)
	wrong := merkle.FuchsiaRoot(ff(len(data)))
	w, err := s.Create(wrong, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	err = w.Close()
	if !errors.Is(err, ErrIntegrity) || !errors.Is(err, merkle.ErrIntegrity) || !errors.Is(err, errs.ErrAuthentication) {
		t.Fatalf("Close = %v, want ErrIntegrity", err)
	}
	if _, err := s.Open(wrong); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open after failed install = %v, want fs.ErrNotExist", err)
	}
	if names, _ := s.List(); len(names) != 0 {
		t.Fatalf("List = %v, want empty", names)
	}
	checkNoTemp(t, s)
	if err := w.Close(); err == nil {
		t.Fatal("second Close succeeded")
	}
	// The right name still installs afterwards.
	install(t, s, data)
}

func TestSizeMismatch(t *testing.T) {
	s := newStore(t)
	data := randBytes(2, 10000)
	name := merkle.FuchsiaRoot(data)

	w, _ := s.Create(name, int64(len(data))-1)
	if _, err := w.Write(data); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("writing past the size: %v, want ErrSizeMismatch", err)
	}
	if err := w.Close(); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("Close of a failed writer: %v, want it to stay failed", err)
	}

	w, _ = s.Create(name, int64(len(data))+1)
	w.Write(data)
	if err := w.Close(); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("short install: %v, want ErrSizeMismatch", err)
	}

	if _, err := s.Create(name, -1); !errors.Is(err, fs.ErrInvalid) {
		t.Fatalf("negative size: %v", err)
	}
	w, _ = s.Create(name, int64(len(data)))
	w.Write(data[:100])
	w.Abort()
	if _, err := w.Write(data); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Abort: %v", err)
	}
	if names, _ := s.List(); len(names) != 0 {
		t.Fatalf("List = %v, want empty", names)
	}
	checkNoTemp(t, s)
}

// TestExists: installing an installed blob is fs.ErrExist, from Create and
// from Put (which also returns the name); the blob is unchanged.
func TestExists(t *testing.T) {
	s := newStore(t)
	data := randBytes(3, 20000)
	name := install(t, s, data)
	if _, err := s.Create(name, int64(len(data))); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Create of an existing blob: %v, want fs.ErrExist", err)
	}
	got, err := s.Put(bytes.NewReader(data))
	if !errors.Is(err, fs.ErrExist) || got != name {
		t.Fatalf("Put of an existing blob: %s, %v; want %s, fs.ErrExist", got, err, name)
	}
	// A writer that started before the blob appeared loses at Close.
	w, err := s.Create(merkle.FuchsiaRoot(data[:100]), 100)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data[:100])
	install(t, s, data[:100])
	if err := w.Close(); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("racing Close: %v, want fs.ErrExist", err)
	}
	if !bytes.Equal(readAll(t, s, name), data) {
		t.Fatal("blob changed")
	}
	checkNoTemp(t, s)
}

// TestRead exercises ReadAt, Read and Seek at awkward offsets and sizes.
func TestRead(t *testing.T) {
	s := newStore(t)
	for _, size := range []int{0, 1, blockSize - 1, blockSize, blockSize + 1, 5*blockSize + 123, 300 * blockSize} {
		data := randBytes(uint64(size), size)
		name := install(t, s, data)
		b, err := s.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		if b.Size() != int64(size) || b.Name() != name {
			t.Fatalf("Size %d Name %s", b.Size(), b.Name())
		}
		if err := iotest.TestReader(b, data); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		r := rand.New(rand.NewPCG(uint64(size), 1))
		for range 200 {
			off := r.IntN(size + 2)
			n := r.IntN(3*blockSize + 2)
			p := make([]byte, n)
			got, err := b.ReadAt(p, int64(off))
			wantN := max(0, min(n, size-off))
			if got != wantN {
				t.Fatalf("size %d ReadAt(%d, %d) = %d, want %d (%v)", size, n, off, got, wantN, err)
			}
			if wantN < n && err != io.EOF {
				t.Fatalf("short ReadAt without io.EOF: %v", err)
			}
			if wantN == n && err != nil {
				t.Fatalf("full ReadAt with error %v", err)
			}
			if got > 0 && !bytes.Equal(p[:got], data[off:off+got]) {
				t.Fatalf("ReadAt(%d, %d): wrong bytes", n, off)
			}
		}
		if _, err := b.ReadAt(make([]byte, 1), -1); err == nil {
			t.Fatal("negative offset accepted")
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := b.ReadAt(make([]byte, 1), 0); size > 0 && !errors.Is(err, ErrClosed) {
			t.Fatalf("ReadAt after Close: %v", err)
		}
	}
}

// flipByte flips one byte of a file.
func flipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

// TestTamperData: a flipped data byte fails exactly the reads that touch
// its 8 KiB block; every other block stays readable, and no unverified
// byte is returned.
func TestTamperData(t *testing.T) {
	s := newStore(t)
	const nblocks = 6
	data := randBytes(4, nblocks*blockSize-1000)
	name := install(t, s, data)
	other := install(t, s, randBytes(5, 3*blockSize))
	const bad = 2
	flipByte(t, s.path(name), headerSize+bad*blockSize+77)

	b, err := s.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i := int64(0); i < nblocks; i++ {
		off := i * blockSize
		n := min(blockSize, int64(len(data))-off)
		p := bytes.Repeat([]byte{0xee}, int(n))
		got, err := b.ReadAt(p, off)
		if i == bad {
			if !errors.Is(err, ErrIntegrity) || got != 0 {
				t.Fatalf("block %d: ReadAt = %d, %v; want 0, ErrIntegrity", i, got, err)
			}
			if bytes.Contains(p, data[off+70:off+80]) {
				t.Fatal("tampered read left blob bytes in the buffer")
			}
			continue
		}
		if err != nil || !bytes.Equal(p, data[off:off+n]) {
			t.Fatalf("block %d: %v", i, err)
		}
	}
	// A range that straddles the bad block fails; one ending just before
	// it and one starting just after it do not.
	if _, err := b.ReadAt(make([]byte, 100), bad*blockSize-50); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("straddling read: %v", err)
	}
	if _, err := b.ReadAt(make([]byte, 100), bad*blockSize-100); err != nil {
		t.Fatalf("read before the bad block: %v", err)
	}
	if _, err := b.ReadAt(make([]byte, 100), (bad+1)*blockSize); err != nil {
		t.Fatalf("read after the bad block: %v", err)
	}
	// Sequential reading stops at the bad block with ErrIntegrity.
	got, err := io.ReadAll(io.NewSectionReader(b, 0, b.Size()))
	if !errors.Is(err, ErrIntegrity) || len(got) > bad*blockSize || !bytes.Equal(got, data[:len(got)]) {
		t.Fatalf("ReadAll: %d bytes, %v", len(got), err)
	}
	if err := s.Verify(name); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("Verify = %v", err)
	}
	if err := s.Verify(other); err != nil {
		t.Fatalf("Verify(other) = %v", err)
	}
	checkVerifyAll(t, s, 2, name)
}

func checkVerifyAll(t *testing.T, s *Store, blobs int, bad merkle.Digest) {
	t.Helper()
	var calls int
	r, err := s.VerifyAll(t.Context(), func(done, total int) {
		calls++
		if done != calls || total != blobs {
			t.Errorf("progress(%d, %d), call %d", done, total, calls)
		}
	})
	if !errors.Is(err, ErrIntegrity) {
		t.Fatalf("VerifyAll = %v, want ErrIntegrity", err)
	}
	if r == nil || r.Blobs != blobs || len(r.Problems) != 1 || r.Problems[0].Name != bad.String() || !errors.Is(r.Problems[0].Err(), ErrIntegrity) {
		t.Fatalf("report %+v", r)
	}
}

// TestTamperTree: the tree is checked against the name when a blob is
// opened; every byte of it (padding included) is covered, and every read
// depends on it, so a flipped tree byte makes the whole blob fail with
// ErrIntegrity while other blobs stay readable.
func TestTamperTree(t *testing.T) {
	data := randBytes(6, 300*blockSize+10) // two level-0 hash blocks and a level 1
	treeSize := merkle.FuchsiaTreeSize(int64(len(data)))
	for _, off := range []int64{0, 31, 32 * 299, 8192 - 1, treeSize - 1} {
		s := newStore(t)
		name := install(t, s, data)
		other := install(t, s, []byte("other"))
		flipByte(t, s.path(name), headerSize+int64(len(data))+off)
		if _, err := s.Open(name); !errors.Is(err, ErrIntegrity) {
			t.Fatalf("tree byte %d: Open = %v, want ErrIntegrity", off, err)
		}
		if err := s.Verify(other); err != nil {
			t.Fatal(err)
		}
		checkVerifyAll(t, s, 2, name)
	}
}

// TestTamperHeader: a changed, truncated or extended blob file is refused.
func TestTamperHeader(t *testing.T) {
	data := randBytes(7, 4*blockSize)
	cases := map[string]func(p string){
		"magic": func(p string) { flipByte(t, p, 0) },
		"size":  func(p string) { flipByte(t, p, 16) },
		"tree":  func(p string) { flipByte(t, p, 24) },
		"truncated": func(p string) {
			if err := os.Truncate(p, headerSize+int64(len(data))); err != nil {
				t.Fatal(err)
			}
		},
		"extended": func(p string) {
			if err := os.Truncate(p, headerSize+int64(len(data))+merkle.FuchsiaTreeSize(int64(len(data)))+1); err != nil {
				t.Fatal(err)
			}
		},
		"short": func(p string) {
			if err := os.Truncate(p, 10); err != nil {
				t.Fatal(err)
			}
		},
	}
	for what, tamper := range cases {
		s := newStore(t)
		name := install(t, s, data)
		tamper(s.path(name))
		if _, err := s.Open(name); !errors.Is(err, ErrIntegrity) {
			t.Errorf("%s: Open = %v, want ErrIntegrity", what, err)
		}
		if _, err := s.Stat(name); !errors.Is(err, ErrIntegrity) {
			t.Errorf("%s: Stat = %v, want ErrIntegrity", what, err)
		}
	}
	s := newStore(t)
	name := install(t, s, data)
	flipByte(t, s.path(name), 8) // version
	if _, err := s.Open(name); !errors.Is(err, errs.ErrUnsupported) {
		t.Errorf("version: Open = %v, want errs.ErrUnsupported", err)
	}
	// A blob file copied under another name fails against that name.
	data2 := randBytes(8, 4*blockSize)
	name2 := install(t, s, data2)
	raw, _ := os.ReadFile(s.path(name2))
	if err := os.WriteFile(s.path(merkle.FuchsiaRoot(data[:4*blockSize-1])), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(merkle.FuchsiaRoot(data[:4*blockSize-1])); !errors.Is(err, ErrIntegrity) {
		t.Errorf("renamed blob: Open = %v, want ErrIntegrity", err)
	}
}

func TestRemoveStatUsage(t *testing.T) {
	s := newStore(t)
	base, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if base <= 0 {
		t.Fatalf("Usage of an empty store = %d", base)
	}
	data := randBytes(9, 100*blockSize+3)
	name := install(t, s, data)
	info, err := s.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	fileLen := headerSize + int64(len(data)) + info.TreeBytes
	if info.Size != int64(len(data)) || info.TreeBytes != 8192 || info.DiskBytes < fileLen-4096 {
		t.Fatalf("Stat = %+v (file %d bytes)", info, fileLen)
	}
	u, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	// The blobs directory may grow a block too; the file is the rest.
	if u-base < info.DiskBytes || u-base > info.DiskBytes+64*1024 {
		t.Fatalf("Usage grew by %d for a blob of %d disk bytes", u-base, info.DiskBytes)
	}
	b, err := s.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(name); err != nil {
		t.Fatal(err)
	}
	// An open blob stays readable.
	if got, err := io.ReadAll(b); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after Remove: %v", err)
	}
	b.Close()
	if err := s.Remove(name); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("second Remove = %v", err)
	}
	if _, err := s.Stat(name); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat after Remove = %v", err)
	}
	if err := s.Verify(name); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Verify after Remove = %v", err)
	}
	if u2, _ := s.Usage(); u2-base > 64*1024 {
		t.Fatalf("Usage after Remove = %d, empty store %d", u2, base)
	}
}

func TestBadNames(t *testing.T) {
	for _, n := range []string{
		"", "abc", strings.Repeat("a", 63), strings.Repeat("a", 65),
		strings.Repeat("g", 64), strings.Repeat("A", 64), " " + strings.Repeat("a", 63),
	} {
		if _, err := merkle.ParseDigest(n); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ParseDigest(%q) = %v, want ErrInvalidName", n, err)
		}
	}
	// A file in blobs/ that is not a blob name is not listed.
	s := newStore(t)
	install(t, s, []byte("x"))
	os.WriteFile(filepath.Join(s.blobs, "README"), []byte("hi"), 0o644)
	if names, err := s.List(); err != nil || len(names) != 1 {
		t.Fatalf("List = %v, %v", names, err)
	}
}

func TestOpenStore(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	if _, err := Open(missing, nil); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing without Create: %v", err)
	}
	empty := filepath.Join(dir, "empty")
	os.Mkdir(empty, 0o755)
	if _, err := Open(empty, nil); !errors.Is(err, ErrNotStore) {
		t.Fatalf("empty without Create: %v", err)
	}
	s, err := Open(empty, &Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	name := install(t, s, []byte("hello"))
	s.Close()
	s, err = Open(empty, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, name); string(got) != "hello" {
		t.Fatalf("got %q", got)
	}

	other := filepath.Join(dir, "other")
	os.Mkdir(other, 0o755)
	os.WriteFile(filepath.Join(other, "photo.jpg"), []byte("x"), 0o644)
	if _, err := Open(other, &Options{Create: true}); !errors.Is(err, ErrNotStore) {
		t.Fatalf("directory with other files: %v", err)
	}
	if _, err := os.Stat(filepath.Join(other, blobsDir)); err == nil {
		t.Fatal("Open wrote into a directory that is not a store")
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o644)
	if _, err := Open(file, &Options{Create: true}); !errors.Is(err, ErrNotStore) {
		t.Fatalf("a file: %v", err)
	}
	for content, want := range map[string]error{
		"something else\n":      ErrNotStore,
		"":                      ErrNotStore,
		"sealfs-blob-store x\n": ErrNotStore,
		"sealfs-blob-store 2\n": errs.ErrUnsupported,
		"sealfs-blob-store 1\nfeatures: sharded\n": errs.ErrUnsupported,
	} {
		d := filepath.Join(t.TempDir(), "s")
		os.Mkdir(d, 0o755)
		os.WriteFile(filepath.Join(d, markerName), []byte(content), 0o644)
		if _, err := Open(d, &Options{Create: true}); !errors.Is(err, want) {
			t.Errorf("marker %q: %v, want %v", content, err, want)
		}
	}
}

// TestCleanup: Open removes temporary files of dead writers and leaves
// those of running writers alone.
func TestCleanup(t *testing.T) {
	s := newStore(t)
	leftover := filepath.Join(s.tmp, tmpPrefix+"12345")
	os.WriteFile(leftover, []byte("partial"), 0o600)

	data := randBytes(10, 50000)
	w, err := s.Create(merkle.FuchsiaRoot(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data[:1000])
	s2, err := Open(s.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("leftover not removed: %v", err)
	}
	tmp, _ := s2.tempFiles()
	if len(tmp) != 1 {
		t.Fatalf("temp files after Open: %v, want the running writer's", tmp)
	}
	w.Write(data[1000:])
	if err := w.Close(); err != nil {
		t.Fatalf("install after a concurrent Open: %v", err)
	}
	if got := readAll(t, s2, merkle.FuchsiaRoot(data)); !bytes.Equal(got, data) {
		t.Fatal("wrong data")
	}
	checkNoTemp(t, s2)
}
