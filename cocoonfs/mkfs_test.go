package cocoonfs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

func randomFiles(r *rand.Rand, n int, maxSize int) map[uint64][]byte {
	files := map[uint64][]byte{}
	for len(files) < n {
		ino := FirstUserInode + r.Uint64N(1<<20)
		data := make([]byte, r.IntN(maxSize+1))
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		files[ino] = data
	}
	return files
}

// TestMkfsRoundTrip: images made by Mkfs open, verify (every block, the
// bitmap cross-check) and read back, across algorithm families, strengths
// and layouts, with index trees of one to three levels.
func TestMkfsRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct {
		name  string
		size  int64
		opts  MkfsOptions
		files int
		max   int
	}{
		{"default-empty", 1 << 20, MkfsOptions{}, 0, 0},
		{"default", 8 << 20, MkfsOptions{}, 20, 40 << 10},
		{"sha3-camellia", 4 << 20, MkfsOptions{Hash: "sha3", Cipher: "camellia"}, 5, 20 << 10},
		{"sm3-sm4", 4 << 20, MkfsOptions{Hash: "sm3", Cipher: "sm4"}, 5, 20 << 10},
		{"sha2-aes256", 4 << 20, MkfsOptions{Strength: 256}, 5, 20 << 10},
		{"sha3-aes192", 4 << 20, MkfsOptions{Hash: "sha3", Strength: 192}, 5, 20 << 10},
		{"io4k", 8 << 20, MkfsOptions{IOBlock: 4096}, 10, 100 << 10},
		{"bigalloc", 8 << 20, MkfsOptions{AllocationBlock: 512, AuthTreeNode: 4096, IndexNode: 1024}, 10, 100 << 10},
		{"many-inodes", 8 << 20, MkfsOptions{}, 300, 200},
		{"no-aux", 2 << 20, MkfsOptions{NoAuxReserve: true, NoRandomizeUnallocated: true}, 3, 1000},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.opts.Files = randomFiles(r, c.files, c.max)
			dev := blockdev.NewMemory(c.size, 512)
			f, err := Mkfs(dev, []byte("a key of sufficient length!!"), &c.opts)
			if err != nil {
				t.Fatalf("Mkfs: %v", err)
			}
			rep, err := f.Verify(t.Context(), nil)
			if err != nil {
				t.Fatalf("Verify: %v %v", err, rep.Problems)
			}
			if rep.Inodes != c.files {
				t.Errorf("verify read %d inodes, want %d", rep.Inodes, c.files)
			}
			n := 0
			for ino, err := range f.Inodes() {
				if err != nil {
					t.Fatal(err)
				}
				n++
				got, err := f.ReadFile(ino.Ino)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, c.opts.Files[ino.Ino]) {
					t.Fatalf("inode %d differs", ino.Ino)
				}
			}
			if n != c.files {
				t.Errorf("listed %d inodes, want %d", n, c.files)
			}
			// A second open from the bytes alone.
			g, err := Open(blockdev.NewMemoryFrom(dev.Bytes(), 512), []byte("a key of sufficient length!!"), nil)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			in, _ := g.Info()
			t.Logf("%s: tree height %d, %d/%d blocks allocated, index of %d inodes", c.name, in.AuthTree.Height, in.AllocatedBlocks, in.TotalBlocks, in.Files)
		})
	}
}

func TestMkfsAlgorithmSelection(t *testing.T) {
	for _, c := range []struct {
		hash, cipher string
		strength     int
		want         string
	}{
		{"sha2", "aes", 128, "SHA256 SHA256 SHA256 SHA256 SHA256 AES 128"},
		{"sha2", "aes", 192, "SHA384 SHA384 SHA256 SHA256 SHA256 AES 192"},
		{"sha2", "camellia", 256, "SHA512 SHA512 SHA256 SHA256 SHA256 CAMELLIA 256"},
		{"sha3", "camellia", 128, "SHA3_256 SHA3_256 SHA3_256 SHA3_256 SHA3_256 CAMELLIA 128"},
		{"sm3", "sm4", 128, "SM3_256 SM3_256 SM3_256 SM3_256 SM3_256 SM4 128"},
		{"sm3", "aes", 256, "error"},
		{"sha2", "sm4", 192, "error"},
		{"md5", "aes", 128, "error"},
	} {
		n, d, r, p, k, ci, kb, err := SelectAlgorithms(c.hash, c.cipher, c.strength)
		got := "error"
		if err == nil {
			got = fmt.Sprintf("%v %v %v %v %v %v %d", name(n), name(d), name(r), name(p), name(k), name(ci), kb)
		} else if !errors.Is(err, ErrUnsupportedAlgorithm) {
			t.Errorf("%v: error %v does not match ErrUnsupportedAlgorithm", c, err)
		}
		if got != c.want {
			t.Errorf("%s/%s/%d = %s, want %s", c.hash, c.cipher, c.strength, got, c.want)
		}
	}
}

// TestMkfsMatchesReferenceLayout: with the reference's defaults, Mkfs picks
// the layout and algorithms of the reference's vector images.
func TestMkfsMatchesReferenceLayout(t *testing.T) {
	for _, c := range []struct {
		image string
		opts  MkfsOptions
	}{
		{"v01-sha2-aes128.img", MkfsOptions{}},
		{"v04-sha3-camellia128.img", MkfsOptions{Hash: "sha3", Cipher: "camellia"}},
		{"v05-sm3-sm4.img", MkfsOptions{Hash: "sm3", Cipher: "sm4"}},
		{"v06-sha2-aes128-io4k.img", MkfsOptions{IOBlock: 4096}},
	} {
		ref, err := ReadHeaderInfo(openVector(t, c.image))
		if err != nil {
			t.Fatal(err)
		}
		c.opts.Salt = []byte{0xdd, 0xee, 0xff}
		dev := blockdev.NewMemory(8<<20, 512)
		if _, err := Mkfs(dev, vectorKey, &c.opts); err != nil {
			t.Fatal(err)
		}
		ours, err := ReadHeaderInfo(dev)
		if err != nil {
			t.Fatal(err)
		}
		ours.Journal, ref.Journal = "", ""
		if fmt.Sprint(*ours) != fmt.Sprint(*ref) {
			t.Errorf("%s:\n ours %+v\n ref  %+v", c.image, *ours, *ref)
		}
		// The metadata lands where the reference puts it.
		mine, err := Open(dev, vectorKey, nil)
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := Open(openVector(t, c.image), vectorKey, nil)
		if err != nil {
			t.Fatal(err)
		}
		place := func(f *FS) string {
			return fmt.Sprint(f.treeExtents, f.bitmapExtents, f.auxExtents, f.header.EntryLeaf.Start(), f.bootChains, f.journalHead)
		}
		if place(mine) != place(theirs) {
			t.Errorf("%s: placement\n ours %s\n ref  %s", c.image, place(mine), place(theirs))
		}
	}
}

func TestMkfsBadInput(t *testing.T) {
	key := []byte("k")
	for _, c := range []struct {
		name string
		dev  *blockdev.Memory
		opts MkfsOptions
		want error
	}{
		{"reserved inode", blockdev.NewMemory(1<<20, 512), MkfsOptions{Files: map[uint64][]byte{3: nil}}, fs.ErrInvalid},
		{"too small", blockdev.NewMemory(2048, 512), MkfsOptions{}, ErrNoSpace},
		{"file larger than image", blockdev.NewMemory(1<<20, 512), MkfsOptions{Files: map[uint64][]byte{16: make([]byte, 2<<20)}}, ErrNoSpace},
		{"unaligned size", blockdev.NewMemory(1<<20, 512), MkfsOptions{Size: 1000}, nil},
		{"sm4 at 256", blockdev.NewMemory(1<<20, 512), MkfsOptions{Cipher: "sm4", Strength: 256}, ErrUnsupportedAlgorithm},
		{"IO block not a power of two", blockdev.NewMemory(1<<20, 512), MkfsOptions{IOBlock: 1000}, nil},
		{"device block larger than IO block", blockdev.NewMemory(1<<20, 4096), MkfsOptions{}, ErrIOBlockTooSmall},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := c.dev.Bytes()
			_, err := Mkfs(c.dev, key, &c.opts)
			if err == nil || c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if !bytes.Equal(before, c.dev.Bytes()) {
				t.Error("a refused Mkfs wrote to the device")
			}
		})
	}
	ro := blockdev.NewMemory(1<<20, 512)
	ro.SetReadOnly(true)
	if _, err := Mkfs(ro, key, nil); !errors.Is(err, blockdev.ErrReadOnly) {
		t.Errorf("read-only device: %v", err)
	}
}

// auxGroupsShape describes an image's aux metadata update groups: per
// extent its length, whether it heads a group, the group state and whether
// its payload is all zero.
func auxGroupsShape(t *testing.T, f *FS) string {
	t.Helper()
	var out []string
	for _, e := range f.auxExtents {
		raw, err := f.readRawExtent(e)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := disk.NewExtentPtr(e.Start, e.Len, false)
		head := p == f.header.AuxHeads[0] || p == f.header.AuxHeads[1]
		protOff := 16
		if head {
			protOff = 17
		}
		if err := disk.VerifyAndRemoveIntegrity(raw, 0, protOff, f.layout); err != nil {
			t.Fatal(err)
		}
		payload := raw[auxExtentHeaderLen(f.layout, head):]
		zero := !slices.ContainsFunc(payload, func(b byte) bool { return b != 0 })
		out = append(out, fmt.Sprintf("%d blocks head=%v state=%d zero=%v", e.Len, head, raw[16]*boolByte(head), zero))
	}
	return strings.Join(out, "; ")
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// TestMkfsAuxGroupsMatchReference: the reference's mkfs writes update group
// 0 active with the metadata and group 1 inactive and zero-filled (v01);
// Mkfs does the same.
func TestMkfsAuxGroupsMatchReference(t *testing.T) {
	ref, err := Open(openVector(t, "v01-sha2-aes128.img"), vectorKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := auxGroupsShape(t, ref)
	if want != "12 blocks head=true state=1 zero=false; 12 blocks head=true state=0 zero=true" {
		t.Fatalf("v01 aux groups: %s", want)
	}
	dev := blockdev.NewMemory(8<<20, 512)
	f, err := Mkfs(dev, vectorKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := auxGroupsShape(t, f); got != want {
		t.Errorf("aux groups\n ours %s\n v01  %s", got, want)
	}
	e, r, err := readAuxMetadata(f)
	if err != nil || len(e) != 0 || r == nil || *r != 1024 {
		t.Errorf("aux metadata %v %v: %v", e, r, err)
	}
	g, err := Mkfs(blockdev.NewMemory(1<<20, 512), vectorKey, &MkfsOptions{NoAuxReserve: true})
	if err != nil {
		t.Fatal(err)
	}
	if !g.header.AuxHeads[0].IsNil() || len(g.auxExtents) != 0 {
		t.Errorf("NoAuxReserve: aux heads %#x, extents %v", uint64(g.header.AuxHeads[0]), g.auxExtents)
	}
}

// TestMkfsRefusedDoesNotGrow: Mkfs validates everything before it grows the
// device.
func TestMkfsRefusedDoesNotGrow(t *testing.T) {
	dev := blockdev.NewMemory(1<<20, 512)
	if _, err := Mkfs(dev, vectorKey, &MkfsOptions{Size: 2 << 20, AuxReserve: 4 << 20}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("err = %v, want ErrNoSpace", err)
	}
	if dev.Size() != 1<<20 || slices.ContainsFunc(dev.Bytes(), func(b byte) bool { return b != 0 }) {
		t.Errorf("a refused Mkfs changed the device (now %d bytes)", dev.Size())
	}
	if _, err := Mkfs(dev, vectorKey, &MkfsOptions{Size: 2 << 20}); err != nil || dev.Size() != 2<<20 {
		t.Errorf("Mkfs growing the device: %v, %d bytes", err, dev.Size())
	}
}

// TestMkfsInterrupted cuts the power after every write of a Mkfs, and tears
// every write: the medium then either holds no filesystem (Open fails with a
// clear error, no panic) or, only once the static header is complete, a
// filesystem that opens and verifies.
func TestMkfsInterrupted(t *testing.T) {
	mem := blockdev.NewMemory(1<<20, 512)
	faulty := blockdev.NewFaulty(mem)
	if _, err := Mkfs(faulty, txKey, &MkfsOptions{Files: map[uint64][]byte{16: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	var img []byte = make([]byte, 1<<20)
	opened, refused := 0, 0
	check := func(b []byte, what string) {
		f, err := Open(blockdev.NewMemoryFrom(b, 512), txKey, nil)
		if err != nil {
			if !errors.Is(err, ErrNotCocoonFS) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s: unexpected error class: %v", what, err)
			}
			refused++
			return
		}
		if rep, err := f.Verify(t.Context(), nil); err != nil {
			t.Fatalf("%s: a filesystem that opens must verify: %v %v", what, err, rep.Problems)
		}
		opened++
	}
	k := 0
	for _, op := range faulty.Log() {
		if op.Kind != blockdev.OpWrite {
			continue
		}
		k++
		for _, pivot := range []int{128, len(op.Data) / 256 * 128} {
			if pivot <= 0 || pivot >= len(op.Data) {
				continue
			}
			torn := bytes.Clone(img)
			copy(torn[op.Off:], op.Data[:pivot])
			check(torn, fmt.Sprintf("write %d torn at %d", k, pivot))
		}
		copy(img[op.Off:], op.Data)
		check(bytes.Clone(img), fmt.Sprintf("power cut after write %d", k))
	}
	if opened == 0 {
		t.Fatal("the complete Mkfs never opened")
	}
	t.Logf("%d writes: %d crash states refused cleanly, %d opened and verified", k, refused, opened)
}
