package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/sealfs/sealfs/errs"
)

func vectorLayout(t *testing.T) (*Layout, string) {
	t.Helper()
	needVectors(t)
	dir := copyDir(t, filepath.Join(vectorDir, "oci"))
	l, err := OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	return l, dir
}

func flipByte(t *testing.T, p string, off int) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[off%len(b)] ^= 0x40
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err error, target error, mention string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want one matching %v", err, target)
	}
	if mention != "" && !strings.Contains(err.Error(), mention) {
		t.Fatalf("error %q does not mention %s", err, mention)
	}
}

func TestTamperedRootfs(t *testing.T) {
	l, _ := vectorLayout(t)
	m, err := l.Manifest("v1")
	if err != nil {
		t.Fatal(err)
	}
	flipByte(t, l.BlobPath(m.RootfsDigest), 100)
	_, err = l.Rootfs(m)
	wantErr(t, err, errs.ErrAuthentication, m.RootfsDigest.String())
}

func TestTamperedChunk(t *testing.T) {
	l, _ := vectorLayout(t)
	m, err := l.Manifest("v1")
	if err != nil {
		t.Fatal(err)
	}
	r, err := l.Rootfs(m)
	if err != nil {
		t.Fatal(err)
	}
	in := r.Inode(6) // random.bin
	d := in.Chunks[1].Blob.Digest
	flipByte(t, l.BlobPath(d), 5000)
	_, err = l.ReadFile(in)
	wantErr(t, err, errs.ErrAuthentication, d.String())
	// A shortened blob is refused the same way.
	if err := os.Truncate(l.BlobPath(d), 100); err != nil {
		t.Fatal(err)
	}
	_, err = l.ReadChunk(in.Chunks[1])
	wantErr(t, err, errs.ErrAuthentication, d.String())
	// A missing blob is fs.ErrNotExist.
	if err := os.Remove(l.BlobPath(d)); err != nil {
		t.Fatal(err)
	}
	_, err = l.ReadFile(in)
	wantErr(t, err, fs.ErrNotExist, d.String())
}

func TestTamperedManifest(t *testing.T) {
	l, _ := vectorLayout(t)
	m, err := l.Manifest("v1")
	if err != nil {
		t.Fatal(err)
	}
	flipByte(t, l.BlobPath(m.Digest), 30)
	_, err = l.Manifest("v1")
	wantErr(t, err, errs.ErrAuthentication, m.Digest.String())
}

func TestMissingTag(t *testing.T) {
	needVectors(t)
	l, err := OpenLayout(filepath.Join(vectorDir, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.Manifest("nope")
	wantErr(t, err, fs.ErrNotExist, `"nope"`)
	_, err = OpenLayout(t.TempDir())
	wantErr(t, err, fs.ErrNotExist, "oci-layout")
}

func TestTruncatedRootfs(t *testing.T) {
	needVectors(t)
	l, err := OpenLayout(filepath.Join(vectorDir, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := l.Manifest("v2")
	if err != nil {
		t.Fatal(err)
	}
	blob, err := l.ReadBlob(m.RootfsDigest)
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(blob); n++ {
		if _, err := ReadRootfs(blob[:n]); !errors.Is(err, errs.ErrCorrupt) {
			t.Fatalf("ReadRootfs of %d of %d bytes: %v, want ErrCorrupt", n, len(blob), err)
		}
	}
	// Through a layout: the truncated blob has a correct sha256, so the
	// error comes from the decoder.
	l2, _ := newLayout(t, blob[:len(blob)/2], MediaTypeChunk)
	m2, err := l2.Manifest("t")
	if err != nil {
		t.Fatal(err)
	}
	_, err = l2.Rootfs(m2)
	wantErr(t, err, errs.ErrCorrupt, m2.RootfsDigest.String())
	t.Log(err)
}

// TestCorruptRootfsBytes flips every byte of a rootfs blob: each result is
// decoded or refused, never a panic.
func TestCorruptRootfsBytes(t *testing.T) {
	needVectors(t)
	l, err := OpenLayout(filepath.Join(vectorDir, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := l.Manifest("v1")
	if err != nil {
		t.Fatal(err)
	}
	blob, err := l.ReadBlob(m.RootfsDigest)
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for i := range blob {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			b := bytes.Clone(blob)
			b[i] ^= x
			if _, err := ReadRootfs(b); err != nil {
				if !errors.Is(err, errs.ErrCorrupt) && !errors.Is(err, errs.ErrUnsupported) {
					t.Fatalf("byte %d ^ %#x: error %v is neither ErrCorrupt nor ErrUnsupported", i, x, err)
				}
				refused++
			}
		}
	}
	t.Logf("%d of %d flips refused", refused, 3*len(blob))
}

func rewriteManifest(t *testing.T, l *Layout, dir, tag string, edit func(*ImageManifest)) {
	t.Helper()
	m, err := l.Manifest(tag)
	if err != nil {
		t.Fatal(err)
	}
	j := m.JSON
	j.Layers = append([]Descriptor(nil), j.Layers...)
	edit(&j)
	writeIndex(t, dir, tag, putJSON(t, dir, j))
}

func TestUnknownMediaTypes(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*ImageManifest)
	}{
		{"rootfs", func(j *ImageManifest) { j.Layers[0].MediaType = "application/vnd.puzzlefs.image.rootfs.v2" }},
		{"chunk", func(j *ImageManifest) { j.Layers[2].MediaType = "application/vnd.oci.image.layer.v1.tar" }},
		{"config", func(j *ImageManifest) { j.Config.MediaType = "application/vnd.oci.image.config.v1+json" }},
		{"manifest", func(j *ImageManifest) { j.MediaType = "application/vnd.oci.image.index.v1+json" }},
		{"rootfs not first", func(j *ImageManifest) { j.Layers[0], j.Layers[1] = j.Layers[1], j.Layers[0] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, dir := vectorLayout(t)
			rewriteManifest(t, l, dir, "v1", tc.edit)
			_, err := l.Manifest("v1")
			wantErr(t, err, errs.ErrUnsupported, "media type")
		})
	}
	t.Run("index entry", func(t *testing.T) {
		l, dir := vectorLayout(t)
		m, err := l.Manifest("v1")
		if err != nil {
			t.Fatal(err)
		}
		writeIndex(t, dir, "v1", Descriptor{MediaType: "application/vnd.docker.distribution.manifest.v2+json", Digest: m.Digest.OCI(), Size: int64(len(m.Raw))})
		_, err = l.Manifest("v1")
		wantErr(t, err, errs.ErrUnsupported, "docker")
	})
	t.Run("digest algorithm", func(t *testing.T) {
		l, dir := vectorLayout(t)
		rewriteManifest(t, l, dir, "v1", func(j *ImageManifest) { j.Layers[0].Digest = "sha512:" + strings.Repeat("0", 128) })
		_, err := l.Manifest("v1")
		wantErr(t, err, errs.ErrUnsupportedAlgorithm, "sha512")
	})
	t.Run("size mismatch", func(t *testing.T) {
		l, dir := vectorLayout(t)
		rewriteManifest(t, l, dir, "v1", func(j *ImageManifest) { j.Layers[0].Size++ })
		m, err := l.Manifest("v1")
		if err != nil {
			t.Fatal(err)
		}
		_, err = l.Rootfs(m)
		wantErr(t, err, errs.ErrAuthentication, m.RootfsDigest.String())
	})
}

func TestBadMetadata(t *testing.T) {
	file := Inode{Ino: 2, Type: TypeFile, Permissions: 0o644}
	bad := func(name string) *Rootfs {
		return minimalRootfs([]DirEntry{{Ino: 2, Name: []byte(name)}}, file)
	}
	for _, tc := range []struct {
		name   string
		r      *Rootfs
		target error
		msg    string
	}{
		{"slash", bad("a/b"), ErrBadName, `"a/b"`},
		{"dotdot", bad(".."), ErrBadName, `".."`},
		{"dot", bad("."), ErrBadName, `"."`},
		{"empty name", bad(""), ErrBadName, `""`},
		{"nul", bad("a\x00"), ErrBadName, "name"},
		{"version 2", func() *Rootfs { r := bad("ok"); r.ManifestVersion = 2; return r }(), errs.ErrUnsupported, "manifestVersion 2"},
		{"duplicate name", minimalRootfs([]DirEntry{{2, []byte("x")}, {2, []byte("x")}}, file), errs.ErrCorrupt, "twice"},
		{"dangling entry", minimalRootfs([]DirEntry{{9, []byte("x")}}, file), errs.ErrCorrupt, "inode 9"},
		{"unsorted", minimalRootfs(nil, Inode{Ino: 3, Type: TypeFifo}, Inode{Ino: 2, Type: TypeFifo}), errs.ErrCorrupt, "strictly increasing"},
		{"duplicate ino", minimalRootfs(nil, Inode{Ino: 2, Type: TypeFifo}, Inode{Ino: 2, Type: TypeFifo}), errs.ErrCorrupt, "strictly increasing"},
		{"no root", &Rootfs{ManifestVersion: 3, Layers: []Layer{{Inodes: []Inode{file}}}}, errs.ErrCorrupt, "not a directory"},
		{"no layers", &Rootfs{ManifestVersion: 3}, errs.ErrCorrupt, "no layers"},
		{"symlink without target", minimalRootfs([]DirEntry{{2, []byte("l")}}, Inode{Ino: 2, Type: TypeSymlink}), errs.ErrCorrupt, "symlink"},
		{"permissions", minimalRootfs(nil, Inode{Ino: 2, Type: TypeFifo, Permissions: 0o10644}), errs.ErrCorrupt, "permissions"},
		{"chunk overflow", minimalRootfs([]DirEntry{{2, []byte("f")}}, Inode{Ino: 2, Type: TypeFile,
			Chunks: []FileChunk{{Blob: BlobRef{Offset: 1 << 63}, Len: 1 << 63}}}), errs.ErrCorrupt, "overflows"},
		{"size overflow", minimalRootfs([]DirEntry{{2, []byte("f")}}, Inode{Ino: 2, Type: TypeFile,
			Chunks: []FileChunk{{Len: 1 << 63}, {Len: 1 << 63}}}), errs.ErrCorrupt, "overflows"},
		{"duplicate verity", func() *Rootfs {
			r := bad("ok")
			r.Verity = []VerityEntry{{}, {}}
			return r
		}(), errs.ErrCorrupt, "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadRootfs(encodeRootfs(t, tc.r))
			wantErr(t, err, tc.target, tc.msg)
			if tc.target == ErrBadName && !errors.Is(err, errs.ErrCorrupt) {
				t.Fatalf("%v does not match ErrCorrupt", err)
			}
		})
	}
}

func TestBadDigestLength(t *testing.T) {
	// Encode a rootfs with one fsVerityData entry, then shorten the first
	// 32-byte Data list in it (the entry's digest) to 31 bytes by editing
	// the element count of its list pointer (bits 35..63).
	r := minimalRootfs(nil)
	r.Verity = []VerityEntry{{}}
	b := encodeRootfs(t, r)
	found := false
	for off := 8; off+8 <= len(b); off += 8 {
		p := binary.LittleEndian.Uint64(b[off:])
		if p&3 == 1 && (p>>32)&7 == 2 && p>>35 == 32 {
			binary.LittleEndian.PutUint64(b[off:], p&^(uint64(0x1fffffff)<<35)|31<<35)
			found = true
			break
		}
	}
	if !found {
		t.Fatal("no 32-byte list pointer found")
	}
	_, err := ReadRootfs(b)
	wantErr(t, err, errs.ErrCorrupt, "want 32")
}

func TestRoundTripEveryType(t *testing.T) {
	r := minimalRootfs([]DirEntry{
		{2, []byte("blk")}, {3, []byte("chr")}, {4, []byte("fifo")}, {5, []byte("file")},
		{6, []byte("link")}, {7, []byte("sock")}, {8, []byte("gone")}, {9, []byte("odd")},
	},
		Inode{Ino: 2, Type: TypeBlock, Major: 8, Minor: 1, UID: 1, GID: 6, Permissions: 0o660},
		Inode{Ino: 3, Type: TypeChar, Major: 1, Minor: 3, Permissions: 0o666},
		Inode{Ino: 4, Type: TypeFifo, Permissions: 0o600},
		Inode{Ino: 5, Type: TypeFile, Permissions: 0o4755, UID: 1000, GID: 1000,
			Chunks:        []FileChunk{{Blob: BlobRef{Digest: Digest{1}, Offset: 7, Compressed: true}, Len: 9}, {Blob: BlobRef{Digest: Digest{2}}, Len: 1}},
			HasAdditional: true, Xattrs: []Xattr{{Key: []byte("user.a"), Value: []byte{0, 1, 2}}, {Key: []byte("security.b"), Value: []byte{}}}},
		Inode{Ino: 6, Type: TypeSymlink, Permissions: 0o777, HasAdditional: true, Xattrs: []Xattr{}, SymlinkTarget: []byte("../x")},
		Inode{Ino: 7, Type: TypeSocket, Permissions: 0o755},
		Inode{Ino: 8, Type: TypeWhiteout},
		Inode{Ino: 9, Type: TypeUnknown},
	)
	r.Layers[0].Inodes[0].Dir.LookBelow = true
	r.Verity = []VerityEntry{{Digest: Digest{1}, Verity: Digest{3}}, {Digest: Digest{2}, Verity: Digest{4}}}
	got, err := ReadRootfs(encodeRootfs(t, r))
	if err != nil {
		t.Fatal(err)
	}
	// Normalise what the encoding cannot tell apart.
	for i := range r.Layers[0].Inodes {
		in := &r.Layers[0].Inodes[i]
		if in.Type == TypeFile && in.Chunks == nil {
			in.Chunks = []FileChunk{}
		}
		if in.HasAdditional && in.Xattrs == nil {
			in.Xattrs = []Xattr{}
		}
	}
	if !reflect.DeepEqual(got, r) {
		a, _ := json.MarshalIndent(got, "", " ")
		b, _ := json.MarshalIndent(r, "", " ")
		t.Fatalf("round trip:\n%s\nwant\n%s", a, b)
	}
	modes := map[uint64]fs.FileMode{2: fs.ModeDevice | 0o660, 3: fs.ModeDevice | fs.ModeCharDevice | 0o666, 4: fs.ModeNamedPipe | 0o600,
		5: fs.ModeSetuid | 0o755, 6: fs.ModeSymlink | 0o777, 7: fs.ModeSocket | 0o755, 1: fs.ModeDir | 0o755}
	for ino, want := range modes {
		if m := got.Inode(ino).Mode(); m != want {
			t.Errorf("inode %d Mode() = %v, want %v", ino, m, want)
		}
	}
	if got.Inode(5).Size() != 10 {
		t.Errorf("Size() = %d", got.Inode(5).Size())
	}
	if v, ok := got.VerityOf(Digest{2}); !ok || v != (Digest{4}) {
		t.Errorf("VerityOf = %v %v", v, ok)
	}
	if got.Inode(42) != nil {
		t.Error("Inode(42) found")
	}
}

func TestCompressedChunks(t *testing.T) {
	plain := bytes.Repeat([]byte("puzzlefs chunk data "), 1000) // 20000 bytes
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	z := seekableZstd(enc, plain)
	raw := []byte("raw tail")
	zd, rd := Digest(sha256Sum(z)), Digest(sha256Sum(raw))
	r := minimalRootfs([]DirEntry{{2, []byte("f")}}, Inode{Ino: 2, Type: TypeFile, Permissions: 0o644, Chunks: []FileChunk{
		{Blob: BlobRef{Digest: zd, Offset: 5000, Compressed: true}, Len: 15000},
		{Blob: BlobRef{Digest: rd, Offset: 4}, Len: 4},
	}})
	l, _ := newLayout(t, encodeRootfs(t, r), MediaTypeChunkZstd, z, raw)
	m, err := l.Manifest("t")
	if err != nil {
		t.Fatal(err)
	}
	got, err := l.Rootfs(m)
	if err != nil {
		t.Fatal(err)
	}
	data, err := l.ReadFile(got.Inode(2))
	if err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Clone(plain[5000:]), "tail"...)
	if !bytes.Equal(data, want) {
		t.Fatalf("ReadFile: %d bytes, want %d", len(data), len(want))
	}
	// Past the end of the uncompressed blob.
	_, err = l.ReadChunk(FileChunk{Blob: BlobRef{Digest: zd, Offset: 19000, Compressed: true}, Len: 1001})
	wantErr(t, err, errs.ErrCorrupt, zd.String())
	_, err = l.ReadChunk(FileChunk{Blob: BlobRef{Digest: rd, Offset: 5}, Len: 4})
	wantErr(t, err, errs.ErrCorrupt, "past")
	_, err = l.ReadChunk(FileChunk{Blob: BlobRef{Digest: zd, Compressed: true}, Len: MaxChunkSize + 1})
	wantErr(t, err, errs.ErrCorrupt, "exceeds")
	// A blob flagged compressed that is not zstd (sha256 correct).
	_, err = l.ReadChunk(FileChunk{Blob: BlobRef{Digest: rd, Compressed: true}, Len: 1})
	wantErr(t, err, errs.ErrCorrupt, rd.String())
	// Not a regular file.
	if _, err := l.ReadFile(got.Inode(1)); err == nil {
		t.Fatal("ReadFile of a directory succeeded")
	}
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }
