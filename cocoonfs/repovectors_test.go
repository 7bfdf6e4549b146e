package cocoonfs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"testing"
	"testing/fstest"

	"github.com/sealfs/sealfs/blockdev"
)

// featureVectors are 1 MiB reference images the repository carries
// (testdata/vectors/README.md): what the 8 MiB random-filled v06, v02 and
// v11 in ../shared show, so that a clone without ../shared still reads each
// feature from an image the reference wrote. Every hash family and strength
// is covered by strengthVectors (s01–s07).
var featureVectors = []struct {
	image   string
	ioBlock uint64
	files   map[uint64]string
	gone    []uint64 // inodes written, then removed
	aux     bool     // v11's two aux metadata entries
}{
	{"f01-sha2-aes128-io4k-1m.img", 4096, map[uint64]string{42: "small.bin", 43: "rand100k.bin", 45: "empty.bin"}, nil, false},
	{"f02-sha2-aes128-removed42-1m.img", 512, map[uint64]string{43: "rand100k.bin"}, []uint64{42}, false},
	{"f03-sha2-aes128-auxmeta-1m.img", 512, map[uint64]string{42: "small.bin"}, nil, true},
}

func TestFeatureVectors(t *testing.T) {
	for _, v := range featureVectors {
		t.Run(v.image, func(t *testing.T) {
			f, err := Open(openVector(t, v.image), vectorKey, nil)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer f.Close()
			if got := f.layout.IOBlockSize(); got != v.ioBlock {
				t.Errorf("IO block %d, want %d", got, v.ioBlock)
			}
			n := 0
			for ino, err := range f.Inodes() {
				if err != nil {
					t.Fatalf("Inodes: %v", err)
				}
				if _, ok := v.files[ino.Ino]; !ok {
					t.Errorf("unexpected inode %d", ino.Ino)
				}
				n++
			}
			if n != len(v.files) {
				t.Errorf("%d inodes listed, want %d", n, len(v.files))
			}
			for ino, name := range v.files {
				data, err := f.ReadFile(ino)
				if err != nil {
					t.Fatalf("ReadFile(%d): %v", ino, err)
				}
				if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != plainSHA[name] {
					t.Errorf("inode %d: sha256 %x, want %s (%s)", ino, sum, plainSHA[name], name)
				}
			}
			for _, ino := range v.gone {
				if _, err := f.ReadFile(ino); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("removed inode %d: err = %v, want fs.ErrNotExist", ino, err)
				}
			}
			rep, err := f.Verify(t.Context(), nil)
			if err != nil {
				t.Fatalf("Verify: %v\n%v", err, rep.Problems)
			}
			if rep.Inodes != len(v.files) {
				t.Errorf("Verify saw %d inodes, want %d", rep.Inodes, len(v.files))
			}
			var names []string
			for ino := range v.files {
				names = append(names, formatIno(ino))
			}
			if err := fstest.TestFS(f.FS(), names...); err != nil {
				t.Error(err)
			}
			if _, err := Open(openVector(t, v.image), []byte{0x00, 0x11, 0x22}, nil); !errors.Is(err, ErrWrongKey) {
				t.Errorf("wrong key: err = %v, want ErrWrongKey", err)
			}

			// Aux metadata reads the same with the key and without it.
			keyless, err := ReadAuxMetadata(openVector(t, v.image))
			if err != nil {
				t.Fatalf("ReadAuxMetadata: %v", err)
			}
			withKey, err := f.AuxMetadata()
			if err != nil {
				t.Fatalf("FS.AuxMetadata: %v", err)
			}
			if !sameAux(keyless, withKey) {
				t.Errorf("ReadAuxMetadata %s, FS.AuxMetadata %s", describeAux(keyless), describeAux(withKey))
			}
			want := &AuxMetadata{Reserve: u64(1024)}
			if v.aux {
				want.Entries = []AuxEntry{{v11UUID, auxPlain(t, "aux-online.bin")}, {v11UUID, auxPlain(t, "aux-offline.bin")}}
			}
			if !sameAux(keyless, want) || keyless.ReallocationNeeded {
				t.Errorf("aux metadata %s, want %s", describeAux(keyless), describeAux(want))
			}
		})
	}
}

// TestFeatureVectorAuxUpdates updates the reference-written aux metadata of
// f03 offline (without the key) and online: each result reads back and the
// image still opens, verifies and reads.
func TestFeatureVectorAuxUpdates(t *testing.T) {
	const image = "f03-sha2-aes128-auxmeta-1m.img"
	files := map[uint64]string{42: "small.bin"}
	raw, err := os.ReadFile(vectorPath(t, image))
	if err != nil {
		t.Fatal(err)
	}
	extra := []byte("added by sealfs")

	t.Run("offline remove and add", func(t *testing.T) {
		dev := blockdev.NewMemoryFrom(bytes.Clone(raw), 512)
		err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error {
			if !m.Remove(v11UUID, 0) {
				t.Error("entry #0 not found")
			}
			return m.Add(otherUUID, extra)
		})
		if err != nil {
			t.Fatal(err)
		}
		md, err := ReadAuxMetadata(dev)
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := md.Get(otherUUID, 0); !ok || !bytes.Equal(d, extra) {
			t.Errorf("added entry: %q, %v", d, ok)
		}
		if d, ok := md.Get(v11UUID, 0); !ok || !bytes.Equal(d, auxPlain(t, "aux-offline.bin")) {
			t.Errorf("remaining entry: %q, %v", d, ok)
		}
		checkOpenVerify(t, dev, files)
	})

	t.Run("online add in a transaction", func(t *testing.T) {
		dev := blockdev.NewMemoryFrom(bytes.Clone(raw), 512)
		f, err := Open(dev, vectorKey, &Options{ReadWrite: true})
		if err != nil {
			t.Fatal(err)
		}
		m, err := f.AuxMetadata()
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Add(otherUUID, extra); err != nil {
			t.Fatal(err)
		}
		tx, err := f.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.SetAuxMetadata(m); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		md, err := ReadAuxMetadata(dev)
		if err != nil {
			t.Fatal(err)
		}
		if len(md.Entries) != 3 {
			t.Errorf("after the online add: %s", describeAux(md))
		}
		checkOpenVerify(t, dev, files)
	})
}

// TestMkfsInfoVectorsFormat formats copies of the reference's creation info
// images (in the repository) with the vectors' key: the part of
// TestFormatMkfsInfoVectors that does not compare with v01, so that it
// runs without ../shared too.
func TestMkfsInfoVectorsFormat(t *testing.T) {
	for _, name := range []string{v08, v09} {
		t.Run(name, func(t *testing.T) {
			dev, _ := copyVector(t, name)
			f, err := FormatMkfsInfo(dev, vectorKey, false)
			if err != nil {
				t.Fatal(err)
			}
			checkFormatted(t, f, dev, vectorKey, nil, "1024")
			if in, err := f.Info(); err != nil || in.ImageSize != 8<<20 || in.Salt != "ddeeff" {
				t.Errorf("formatted as %+v, %v", in, err)
			}
		})
	}
}
