package image

import (
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	capnp "capnproto.org/go/capnp/v3"

	"github.com/sealfs/sealfs/image/internal/metadata"
)

// encodeRootfs is a test-only encoder of a Rootfs (with the given
// manifestVersion), so that tests can build hostile metadata.
func encodeRootfs(t testing.TB, r *Rootfs) []byte {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	must(err)
	root, err := metadata.NewRootRootfs(seg)
	must(err)
	root.SetManifestVersion(r.ManifestVersion)
	layers, err := root.NewMetadatas(int32(len(r.Layers)))
	must(err)
	for li, l := range r.Layers {
		inodes, err := layers.At(li).NewInodes(int32(len(l.Inodes)))
		must(err)
		for i, in := range l.Inodes {
			o := inodes.At(i)
			o.SetIno(in.Ino)
			o.SetUid(in.UID)
			o.SetGid(in.GID)
			o.SetPermissions(in.Permissions)
			m := o.Mode()
			switch in.Type {
			case TypeUnknown:
				m.SetUnknown()
			case TypeFifo:
				m.SetFifo()
			case TypeSymlink:
				m.SetLnk()
			case TypeSocket:
				m.SetSock()
			case TypeWhiteout:
				m.SetWht()
			case TypeChar:
				c, err := m.NewChr()
				must(err)
				c.SetMajor(in.Major)
				c.SetMinor(in.Minor)
			case TypeBlock:
				c, err := m.NewBlk()
				must(err)
				c.SetMajor(in.Major)
				c.SetMinor(in.Minor)
			case TypeDir:
				d, err := m.NewDir()
				must(err)
				d.SetLookBelow(in.Dir.LookBelow)
				es, err := d.NewEntries(int32(len(in.Dir.Entries)))
				must(err)
				for k, e := range in.Dir.Entries {
					es.At(k).SetIno(e.Ino)
					must(es.At(k).SetName(e.Name))
				}
			case TypeFile:
				cs, err := m.NewFile(int32(len(in.Chunks)))
				must(err)
				for k, c := range in.Chunks {
					cs.At(k).SetLen(c.Len)
					b, err := cs.At(k).NewBlob()
					must(err)
					must(b.SetDigest(c.Blob.Digest[:]))
					b.SetOffset(c.Blob.Offset)
					b.SetCompressed(c.Blob.Compressed)
				}
			}
			if in.HasAdditional {
				a, err := o.NewAdditional()
				must(err)
				xs, err := a.NewXattrs(int32(len(in.Xattrs)))
				must(err)
				for k, x := range in.Xattrs {
					must(xs.At(k).SetKey(x.Key))
					must(xs.At(k).SetVal(x.Value))
				}
				if in.SymlinkTarget != nil {
					must(a.SetSymlinkTarget(in.SymlinkTarget))
				}
			}
		}
	}
	vd, err := root.NewFsVerityData(int32(len(r.Verity)))
	must(err)
	for i, e := range r.Verity {
		must(vd.At(i).SetDigest(e.Digest[:]))
		must(vd.At(i).SetVerity(e.Verity[:]))
	}
	b, err := msg.Marshal()
	must(err)
	return b
}

// copyDir copies a vector layout into a writable temporary directory.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		o, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		if _, err := io.Copy(o, in); err != nil {
			o.Close()
			return err
		}
		return o.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// putBlob stores b under its sha256 in layout dir.
func putBlob(t testing.TB, dir string, b []byte) Digest {
	t.Helper()
	d := Digest(sha256.Sum256(b))
	p := filepath.Join(dir, "blobs", "sha256", d.String())
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

func putJSON(t testing.TB, dir string, v any) Descriptor {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	d := putBlob(t, dir, b)
	return Descriptor{MediaType: MediaTypeImageManifest, Digest: d.OCI(), Size: int64(len(b))}
}

// newLayout writes a layout in a temporary directory whose tag "t" has the
// given rootfs blob and chunk blobs (with chunkType), and returns it.
func newLayout(t testing.TB, rootfs []byte, chunkType string, chunks ...[]byte) (*Layout, string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := putBlob(t, dir, []byte("{}"))
	rd := putBlob(t, dir, rootfs)
	man := ImageManifest{
		SchemaVersion: 2,
		Config:        Descriptor{MediaType: MediaTypeEmpty, Digest: cfg.OCI(), Size: 2, Data: []byte("{}")},
		Layers:        []Descriptor{{MediaType: MediaTypeRootfs, Digest: rd.OCI(), Size: int64(len(rootfs))}},
	}
	for _, c := range chunks {
		d := putBlob(t, dir, c)
		man.Layers = append(man.Layers, Descriptor{MediaType: chunkType, Digest: d.OCI(), Size: int64(len(c))})
	}
	writeIndex(t, dir, "t", putJSON(t, dir, man))
	l, err := OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	return l, dir
}

func writeIndex(t testing.TB, dir, tag string, desc Descriptor) {
	t.Helper()
	desc.Annotations = map[string]string{AnnotationRefName: tag}
	b, err := json.Marshal(Index{SchemaVersion: 2, Manifests: []Descriptor{desc}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// minimalRootfs is a valid one-layer rootfs: a root directory with the given
// entries, and the given other inodes.
func minimalRootfs(entries []DirEntry, inodes ...Inode) *Rootfs {
	all := append([]Inode{{Ino: RootIno, Type: TypeDir, Permissions: 0o755, Dir: &Dir{Entries: entries}}}, inodes...)
	return &Rootfs{ManifestVersion: ManifestVersion, Layers: []Layer{{Inodes: all}}}
}
