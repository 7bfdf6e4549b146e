package cocoonfs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// The UUID both v11 entries carry: 12345678-9abc-def0-1122-334455667788.
var v11UUID = [16]byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}

var otherUUID = [16]byte{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x47, 0x08, 0x89, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10}

// sha256s of the aux plaintexts, from the vectors' README.
var auxPlainSHA = map[string]string{
	"aux-online.bin":  "652cfe6d43f1955d157cd514886b095d20a0283fe536699b533ba5c3a5d11c5d",
	"aux-offline.bin": "e3b2695d8e8621f61e92058041fc102227c2514b80d795f29168efc9a95a26f6",
}

func auxPlain(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(vectorPath(t, "plaintext/"+name))
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != auxPlainSHA[name] {
		t.Fatalf("%s: sha256 %x, want %s", name, sum, auxPlainSHA[name])
	}
	return b
}

// memVector returns a writable in-memory copy of a vector with 512-byte
// device blocks (the default layout's IO block).
func memVector(t testing.TB, name string) *blockdev.Memory {
	t.Helper()
	b, err := readVector(t, name)
	if err != nil {
		t.Fatal(err)
	}
	return blockdev.NewMemoryFrom(b, 512)
}

func u64(v uint64) *uint64 { return &v }

// sameAux compares the contents (entries and reserve) of two aux metadata sets.
func sameAux(a, b *AuxMetadata) bool {
	if len(a.Entries) != len(b.Entries) || (a.Reserve == nil) != (b.Reserve == nil) ||
		a.Reserve != nil && *a.Reserve != *b.Reserve {
		return false
	}
	for i := range a.Entries {
		if a.Entries[i].UUID != b.Entries[i].UUID || !bytes.Equal(a.Entries[i].Data, b.Entries[i].Data) {
			return false
		}
	}
	return true
}

func describeAux(m *AuxMetadata) string {
	var s strings.Builder
	fmt.Fprintf(&s, "group %d, capacity %d, realloc %v, reserve ", m.Group, m.Capacity, m.ReallocationNeeded)
	if m.Reserve == nil {
		s.WriteString("none")
	} else {
		fmt.Fprint(&s, *m.Reserve)
	}
	for _, e := range m.Entries {
		fmt.Fprintf(&s, "; %x: %d bytes", e.UUID, len(e.Data))
	}
	return s.String()
}

// setAux returns an idempotent update that sets the contents to want.
func setAux(want *AuxMetadata) func(*AuxMetadata) error {
	return func(m *AuxMetadata) error {
		c := want.clone()
		m.Entries, m.Reserve = c.Entries, c.Reserve
		return nil
	}
}

// checkOpenVerify opens dev with the vectors' key, verifies it in full and
// reads every file back against its plaintext hash.
func checkOpenVerify(t testing.TB, dev blockdev.Device, files map[uint64]string) {
	t.Helper()
	f, err := Open(dev, vectorKey, nil)
	if err != nil {
		t.Fatalf("Open: %v (Open must tolerate the one torn aux extent the format allows, group 0's head included: read.go's walkAuxExtents should return f.auxChainExtents())", err)
	}
	defer f.Close()
	rep, err := f.Verify(t.Context(), nil)
	if err != nil {
		t.Fatalf("Verify: %v\n%v", err, rep.Problems)
	}
	for ino, name := range files {
		data, err := f.ReadFile(ino)
		if err != nil {
			t.Fatalf("ReadFile(%d): %v", ino, err)
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != plainSHA[name] {
			t.Fatalf("inode %d: sha256 %x, want %s", ino, sum, plainSHA[name])
		}
	}
}

func filesOf(image string) map[uint64]string {
	for _, v := range formatted {
		if v.image == image {
			return v.files
		}
	}
	return nil
}

func TestAuxReadVectors(t *testing.T) {
	online, offline := auxPlain(t, "aux-online.bin"), auxPlain(t, "aux-offline.bin")
	md, err := ReadAuxMetadata(openVector(t, "v11-sha2-aes128-auxmeta.img"))
	if err != nil {
		t.Fatal(err)
	}
	want := &AuxMetadata{Entries: []AuxEntry{{v11UUID, online}, {v11UUID, offline}}, Reserve: u64(1024)}
	if !sameAux(md, want) || md.Group != 0 || md.ReallocationNeeded {
		t.Fatalf("v11: %s, want the online then the offline entry, reserve 1024, group 0", describeAux(md))
	}
	if d, ok := md.Get(v11UUID, 1); !ok || !bytes.Equal(d, offline) {
		t.Errorf("Get(#1) = %q, %v", d, ok)
	}
	// Each group's single 12-block extent: 1536 - 16 - 1 - 25 bytes.
	if md.Capacity != 1494 {
		t.Errorf("v11 capacity %d, want 1494", md.Capacity)
	}

	for _, v := range []string{"v01-sha2-aes128.img", "v02-sha2-aes128-removed42.img", "v04-sha3-camellia128.img", "v05-sm3-sm4.img", "v06-sha2-aes128-io4k.img",
		"v08-mkfsinfo-header-sha2-aes128.img", "v09-mkfsinfo-header-trimmed.img"} {
		md, err := ReadAuxMetadata(openVector(t, v))
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		if len(md.Entries) != 0 || md.Reserve == nil || *md.Reserve != 1024 {
			t.Errorf("%s: %s, want no entries and a 1024-byte reserve", v, describeAux(md))
		}
		if strings.Contains(v, "mkfsinfo") != (md.Group == -1) {
			t.Errorf("%s: group %d", v, md.Group)
		}
	}

	// An open filesystem reports the same.
	for _, v := range formatted {
		f, err := Open(openVector(t, v.image), vectorKey, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := f.AuxMetadata()
		if err != nil {
			t.Fatalf("%s: FS.AuxMetadata: %v", v.image, err)
		}
		keyless, err := ReadAuxMetadata(openVector(t, v.image))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, keyless) {
			t.Errorf("%s: FS.AuxMetadata %s, ReadAuxMetadata %s", v.image, describeAux(got), describeAux(keyless))
		}
		// The chain walker agrees with Open's on intact images.
		if ext, err := f.auxChainExtents(); err != nil || !slices.Equal(ext, f.auxExtents) {
			t.Errorf("%s: auxChainExtents = %v, %v; Open found %v", v.image, ext, err, f.auxExtents)
		}
		f.Close()
	}
}

func TestAuxMetadataEdit(t *testing.T) {
	m := &AuxMetadata{}
	b := [16]byte{2}
	a := [16]byte{1}
	for _, step := range []struct {
		uuid [16]byte
		data string
	}{{b, "b0"}, {a, "a0"}, {b, "b1"}, {a, "a1"}} {
		if err := m.Add(step.uuid, []byte(step.data)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, e := range m.Entries {
		got = append(got, string(e.Data))
	}
	if !slices.Equal(got, []string{"a0", "a1", "b0", "b1"}) {
		t.Fatalf("order %v", got)
	}
	if m.Add([16]byte{}, nil) == nil {
		t.Error("zero UUID accepted")
	}
	if !m.Remove(b, 1) || m.Remove(b, 1) {
		t.Error("Remove(b, 1)")
	}
	if d, ok := m.Get(b, 0); !ok || string(d) != "b0" {
		t.Errorf("Get(b, 0) = %q", d)
	}
	if m.EncodedLen() != 3*20+6+20 {
		t.Errorf("EncodedLen %d", m.EncodedLen())
	}
}

// TestAuxOfflineRoundTrip runs sequences of offline updates on copies of the
// vectors: each result reads back, and the image still opens and verifies
// with its key, every file intact.
func TestAuxOfflineRoundTrip(t *testing.T) {
	offline := auxPlain(t, "aux-offline.bin")
	online := auxPlain(t, "aux-online.bin")
	for _, image := range []string{"v01-sha2-aes128.img", "v11-sha2-aes128-auxmeta.img", "v06-sha2-aes128-io4k.img", "v01 multi-extent"} {
		t.Run(image, func(t *testing.T) {
			var dev *blockdev.Memory
			files := filesOf(image)
			if image == "v01 multi-extent" {
				dev = multiExtentV01(t)
				files = filesOf("v01-sha2-aes128.img")
			} else {
				dev = memVector(t, image)
			}
			cur, err := ReadAuxMetadata(dev)
			if err != nil {
				t.Fatal(err)
			}
			steps := []struct {
				name string
				edit func(*AuxMetadata) error
			}{
				{"add same UUID", func(m *AuxMetadata) error { return m.Add(v11UUID, offline) }},
				{"add other UUID", func(m *AuxMetadata) error { return m.Add(otherUUID, online) }},
				{"add appended, sorted on write", func(m *AuxMetadata) error {
					m.Entries = append(m.Entries, AuxEntry{UUID: [16]byte{0xff}, Data: []byte("last")}, AuxEntry{UUID: [16]byte{0x00, 1}, Data: []byte("first")})
					return nil
				}},
				{"remove", func(m *AuxMetadata) error {
					if !m.Remove(v11UUID, 0) {
						return errors.New("nothing to remove")
					}
					return nil
				}},
				{"set reserve", func(m *AuxMetadata) error { m.Reserve = u64(100); return nil }},
				{"no reserve", func(m *AuxMetadata) error { m.Reserve = nil; return nil }},
				{"reserve back", func(m *AuxMetadata) error { m.Reserve = u64(1024); return nil }},
			}
			for _, s := range steps {
				want := cur.clone()
				if err := s.edit(want); err != nil {
					t.Fatalf("%s: %v", s.name, err)
				}
				if _, err := encodeAux(want); err != nil { // sorts like the update does
					t.Fatal(err)
				}
				if err := UpdateAuxMetadataOffline(dev, s.edit); err != nil {
					t.Fatalf("%s: %v", s.name, err)
				}
				got, err := ReadAuxMetadata(dev)
				if err != nil {
					t.Fatalf("%s: read back: %v", s.name, err)
				}
				if !sameAux(got, want) {
					t.Fatalf("%s: read back %s, want %s", s.name, describeAux(got), describeAux(want))
				}
				if got.Group != 0 {
					t.Errorf("%s: contents read from group %d", s.name, got.Group)
				}
				cur = got
			}
			if strings.HasPrefix(image, "v01") && len(cur.Entries) == 0 {
				t.Fatal("steps left no entries")
			}
			checkOpenVerify(t, dev, files)
			f, err := Open(dev, vectorKey, nil)
			if err != nil {
				t.Fatal(err)
			}
			viaFS, err := f.AuxMetadata()
			if err != nil || !reflect.DeepEqual(viaFS, cur) {
				t.Errorf("FS.AuxMetadata = %v, %v; want %s", viaFS, err, describeAux(cur))
			}
		})
	}
}

// TestAuxOfflineOrderMatchesV11 removes v11's offline entry and adds it
// again offline: the entry lands after the online one with the same UUID,
// and group 0's payload matches the reference's byte for byte.
func TestAuxOfflineOrderMatchesV11(t *testing.T) {
	online, offline := auxPlain(t, "aux-online.bin"), auxPlain(t, "aux-offline.bin")
	dev := memVector(t, "v11-sha2-aes128-auxmeta.img")
	// Drop the offline entry, then add it again offline: v11's contents.
	if err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { m.Remove(v11UUID, 1); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { return m.Add(v11UUID, offline) }); err != nil {
		t.Fatal(err)
	}
	got, err := ReadAuxMetadata(dev)
	if err != nil {
		t.Fatal(err)
	}
	want := &AuxMetadata{Entries: []AuxEntry{{v11UUID, online}, {v11UUID, offline}}, Reserve: u64(1024)}
	if !sameAux(got, want) || got.ReallocationNeeded {
		t.Fatalf("got %s", describeAux(got))
	}
	// The payload bytes of group 0 are those the reference wrote.
	ref, err := readVector(t, "v11-sha2-aes128-auxmeta.img")
	if err != nil {
		t.Fatal(err)
	}
	mine, _ := blockdev.ReadAll(dev)
	plain := func(img []byte) []byte {
		b := bytes.Clone(img[4096*128 : 4108*128])
		if err := disk.VerifyAndRemoveIntegrity(b, 0, 17, disk.Layout{AllocBlockLog2128: 0, IOBlockLog2: 2}); err != nil {
			t.Fatal(err)
		}
		return b[42:]
	}
	if !bytes.Equal(plain(ref), plain(mine)) {
		t.Error("group 0's payload differs from the reference's")
	}
}

func TestAuxOfflineRefusals(t *testing.T) {
	t.Run("no room", func(t *testing.T) {
		dev := memVector(t, "v01-sha2-aes128.img")
		before, _ := blockdev.ReadAll(dev)
		err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { return m.Add(otherUUID, make([]byte, 1500)) })
		if !errors.Is(err, ErrAuxOnlineUpdateNeeded) || !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "online update with the key") {
			t.Fatalf("err = %v", err)
		}
		if after, _ := blockdev.ReadAll(dev); !bytes.Equal(before, after) {
			t.Error("a refused update wrote to the device")
		}
		// What fits exactly is accepted: 1494 - 28 - 20 bytes of data.
		if err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { return m.Add(otherUUID, make([]byte, 1494-48)) }); err != nil {
			t.Fatal(err)
		}
		got, err := ReadAuxMetadata(dev)
		if err != nil || !got.ReallocationNeeded {
			t.Fatalf("full groups: %v, %v; want the reallocation hint", got, err)
		}
		checkOpenVerify(t, dev, filesOf("v01-sha2-aes128.img"))
	})
	t.Run("reallocation hint", func(t *testing.T) {
		dev := memVector(t, "v01-sha2-aes128.img")
		// 28 + 20 + 430 + 1024 > 1494: the reserve is partly used up.
		if err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { return m.Add(otherUUID, make([]byte, 430)) }); err != nil {
			t.Fatal(err)
		}
		if got, err := ReadAuxMetadata(dev); err != nil || !got.ReallocationNeeded {
			t.Fatalf("got %v, %v; want the hint", got, err)
		}
		// Back to 28 + 1024 bytes: no hint.
		if err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { m.Entries = nil; return nil }); err != nil {
			t.Fatal(err)
		}
		if got, err := ReadAuxMetadata(dev); err != nil || got.ReallocationNeeded {
			t.Fatalf("got %v, %v; want no hint", got, err)
		}
		// A reserve of 0 leaves a whole IO block unused: hint.
		if err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { m.Reserve = u64(0); return nil }); err != nil {
			t.Fatal(err)
		}
		if got, err := ReadAuxMetadata(dev); err != nil || !got.ReallocationNeeded {
			t.Fatalf("got %v, %v; want the hint", got, err)
		}
	})
	t.Run("no update group 1", func(t *testing.T) {
		dev := memVector(t, "v01-sha2-aes128.img")
		// Both extents as one group: no group 1.
		rechainAux(t, dev, []disk.Extent{{Start: 3996, Len: 12}, {Start: 4008, Len: 12}}, 2, nil)
		if _, err := ReadAuxMetadata(dev); err != nil {
			t.Fatal(err)
		}
		err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { return m.Add(otherUUID, nil) })
		if !errors.Is(err, ErrAuxOnlineUpdateNeeded) || !strings.Contains(err.Error(), "no update group 1") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("pending journal", func(t *testing.T) {
		b, _ := readVector(t, "v11-sha2-aes128-auxmeta.img")
		sh, err := disk.DecodeStaticHeader(b[:512])
		if err != nil {
			t.Fatal(err)
		}
		off := disk.JournalLogHeadOffset(sh, 32, 16, 32)
		n, _ := disk.JournalLogHeadLen(sh.Layout, 16, 32)
		head := b[off : off+n]
		clear(head[:128])
		heads := [2]disk.ExtentPtr{disk.ReadExtentPtr(b[512:]), disk.ReadExtentPtr(b[520:])}
		if err := disk.EncodeJournalLogHeadPlaintext(head, sh.Layout, heads); err != nil {
			t.Fatal(err)
		}
		// Make the mutable header's pointers useless: the journal's count.
		putPtr(b[512:], uint64(disk.NilExtentPtr))
		putPtr(b[520:], uint64(disk.NilExtentPtr))
		dev := blockdev.NewMemoryFrom(b, 512)
		md, err := ReadAuxMetadata(dev)
		if err != nil || len(md.Entries) != 2 {
			t.Fatalf("read with a pending journal: %v, %v", md, err)
		}
		err = UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { return nil })
		if !errors.Is(err, ErrPendingJournal) {
			t.Fatalf("err = %v, want ErrPendingJournal", err)
		}
	})
	t.Run("invalid state in the inactive head", func(t *testing.T) {
		// As the reference: reading stops at the active group 0, an update
		// examines both heads.
		b, _ := readVector(t, "v11-sha2-aes128-auxmeta.img")
		l := disk.Layout{IOBlockLog2: 2}
		h1 := b[4112*128 : 4124*128]
		if err := disk.VerifyAndRemoveIntegrity(h1, 0, 17, l); err != nil {
			t.Fatal(err)
		}
		h1[16] = 7
		if err := disk.ApplyIntegrity(h1, 0, 17, l); err != nil {
			t.Fatal(err)
		}
		dev := blockdev.NewMemoryFrom(b, 512)
		if md, err := ReadAuxMetadata(dev); err != nil || len(md.Entries) != 2 {
			t.Fatalf("read: %v, %v", md, err)
		}
		err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { return nil })
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "invalid state 7") {
			t.Fatalf("update: %v", err)
		}
	})
	t.Run("device block size", func(t *testing.T) {
		b, _ := readVector(t, "v01-sha2-aes128.img")
		dev := blockdev.NewMemoryFrom(b, 4096)
		err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { return m.Add(otherUUID, nil) })
		if !errors.Is(err, ErrIOBlockTooSmall) {
			t.Fatalf("err = %v", err)
		}
		if err := UpdateAuxMetadataOfflineOptions(dev, &Options{Force: true}, func(m *AuxMetadata) error { return m.Add(otherUUID, nil) }); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("read-only", func(t *testing.T) {
		err := UpdateAuxMetadataOffline(openVector(t, "v01-sha2-aes128.img"), func(m *AuxMetadata) error { return m.Add(otherUUID, nil) })
		if !errors.Is(err, blockdev.ErrReadOnly) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("callback error", func(t *testing.T) {
		dev := memVector(t, "v01-sha2-aes128.img")
		boom := errors.New("boom")
		if err := UpdateAuxMetadataOffline(dev, func(*AuxMetadata) error { return boom }); err != boom {
			t.Fatalf("err = %v", err)
		}
		if err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error {
			m.Entries = append(m.Entries, AuxEntry{})
			return nil
		}); err == nil || !strings.Contains(err.Error(), "all-zero UUID") {
			t.Fatalf("zero UUID: %v", err)
		}
	})
	t.Run("trimmed creation info", func(t *testing.T) {
		dev := memVector(t, "v09-mkfsinfo-header-trimmed.img")
		err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { return m.Add(otherUUID, nil) })
		if err == nil || !strings.Contains(err.Error(), "too small") {
			t.Fatalf("err = %v", err)
		}
	})
}

// putPtr stores an encoded extent pointer at the start of b.
func putPtr(b []byte, v uint64) { disk.ExtentPtr(v).Append(b[:0]) }

// pattern returns n non-zero bytes derived from seed.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed | 1
	}
	return b
}

// rechainAux rewrites the aux metadata chain on dev as exts (group 1 from
// index g1; g1 == len(exts) for none), as the reference initializes it:
// group 0 active holding payload (nil: the current contents), group 1
// inactive and zero-filled; the mutable header's head pointers follow.
func rechainAux(t testing.TB, dev *blockdev.Memory, exts []disk.Extent, g1 int, payload []byte) {
	t.Helper()
	if payload == nil {
		cur, err := ReadAuxMetadata(dev)
		if err != nil {
			t.Fatal(err)
		}
		if payload, err = encodeAux(cur); err != nil {
			t.Fatal(err)
		}
	}
	img, err := probeAuxImage(dev)
	if err != nil {
		t.Fatal(err)
	}
	c := &auxChain{g: img.geom, g1: g1, torn: -1}
	ab := img.l.AllocBlockSize()
	for i, e := range exts {
		p, err := disk.NewExtentPtr(e.Start, e.Len, false)
		if err != nil {
			t.Fatal(err)
		}
		raw := make([]byte, e.Len*ab)
		dev.ReadAt(raw, int64(e.Start*ab))
		c.ext = append(c.ext, &auxExt{ptr: p, start: e.Start, n: e.Len, head: i == 0 || i == g1, raw: raw})
	}
	w := &auxWriter{dev: dev, devIO: 512}
	if err := c.writeGroup(w, 0, payload, auxStateActive); err != nil {
		t.Fatal(err)
	}
	for i := g1; i < len(exts); i++ {
		if err := c.writeExtent(w, i, auxStateInactive, nil); err != nil {
			t.Fatal(err)
		}
	}
	heads := [2]disk.ExtentPtr{c.ext[0].ptr, disk.NilExtentPtr}
	if g1 < len(exts) {
		heads[1] = c.ext[g1].ptr
	}
	var hp [16]byte
	heads[0].Append(hp[:0])
	heads[1].Append(hp[8:8])
	sh, err := readStaticHeader(dev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dev.WriteAt(hp[:], int64(disk.MutableHeaderOffset(sh))); err != nil {
		t.Fatal(err)
	}
}

// splitAux rewrites the aux metadata chain on dev with each extent split
// into extents of piece allocation blocks, over the same blocks, so that
// updates take the multi-extent path (deactivate the head, write the tails,
// then the head).
func splitAux(t testing.TB, dev *blockdev.Memory, piece uint64) {
	t.Helper()
	img, err := probeAuxImage(dev)
	if err != nil {
		t.Fatal(err)
	}
	c, err := img.geom.walk()
	if err != nil {
		t.Fatal(err)
	}
	var exts []disk.Extent
	g1 := 0
	for i, e := range c.extents() {
		if i == c.g1 {
			g1 = len(exts)
		}
		if e.Len%piece != 0 {
			t.Fatalf("extent %d+%d does not split into %d-block pieces", e.Start, e.Len, piece)
		}
		for s := e.Start; s < e.Start+e.Len; s += piece {
			exts = append(exts, disk.Extent{Start: s, Len: piece})
		}
	}
	rechainAux(t, dev, exts, g1, nil)
}

// multiExtentV01 is v01 with each update group split into three 4-block
// extents.
func multiExtentV01(t testing.TB) *blockdev.Memory {
	dev := memVector(t, "v01-sha2-aes128.img")
	splitAux(t, dev, 4)
	md, err := ReadAuxMetadata(dev)
	if err != nil || md.Capacity != 470+471+471 || len(md.Entries) != 0 || md.Reserve == nil || *md.Reserve != 1024 {
		t.Fatalf("multi-extent v01: %v, %v", md, err)
	}
	return dev
}

// smallFiles are the files of the smallMultiExtent image.
var smallFiles = map[uint64]string{42: "small.bin", 43: "rand100k.bin"}

// smallMultiExtent is a 512 KiB image made by Mkfs holding smallFiles, its
// aux metadata split into 4-block extents: the crash harness verifies it
// far faster than an 8 MiB vector.
func smallMultiExtent(t testing.TB) *blockdev.Memory {
	dev := blockdev.NewMemory(512<<10, 512)
	files := map[uint64][]byte{}
	for ino, name := range smallFiles {
		b, err := os.ReadFile(vectorPath(t, "plaintext/"+name))
		if err != nil {
			t.Fatal(err)
		}
		files[ino] = b
	}
	f, err := Mkfs(dev, vectorKey, &MkfsOptions{Files: files})
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	splitAux(t, dev, 4)
	md, err := ReadAuxMetadata(dev)
	if err != nil || md.Capacity < 1000 || md.Reserve == nil {
		t.Fatalf("small multi-extent image: %v, %v", md, err)
	}
	return dev
}

// auxScenario is one offline update run through the crash harness.
type auxScenario struct {
	name   string
	long   bool // run only with SEALFS_LONG=1
	dev    func(t testing.TB) *blockdev.Memory
	files  map[uint64]string // nil: not a formatted image
	target func(t testing.TB, cur *AuxMetadata) *AuxMetadata
}

// TestAuxOfflineCrash cuts the power after every write of representative
// offline updates and tears every write at several 128-byte pivots inside
// it (every one with SEALFS_LONG=1), with the new data before and after the
// pivot. Each time the aux metadata
// must read back as exactly the old or the new contents, the image must
// still open and verify with its key (formatted images), and repeating the
// update must then succeed and yield the new contents.
func TestAuxOfflineCrash(t *testing.T) {
	offline := auxPlain(t, "aux-offline.bin")
	add := func(t testing.TB, cur *AuxMetadata) *AuxMetadata {
		m := cur.clone()
		if err := m.Add(v11UUID, offline); err != nil {
			t.Fatal(err)
		}
		return m
	}
	scenarios := []auxScenario{
		{"v01 add", false, func(t testing.TB) *blockdev.Memory { return memVector(t, "v01-sha2-aes128.img") }, filesOf("v01-sha2-aes128.img"), add},
		{"v11 remove", false, func(t testing.TB) *blockdev.Memory { return memVector(t, "v11-sha2-aes128-auxmeta.img") }, filesOf("v11-sha2-aes128-auxmeta.img"),
			func(t testing.TB, cur *AuxMetadata) *AuxMetadata {
				m := cur.clone()
				m.Remove(v11UUID, 0)
				return m
			}},
		{"v01 replace a large entry", false, func(t testing.TB) *blockdev.Memory {
			// Both groups then hold data in their extents' tails too.
			dev := memVector(t, "v01-sha2-aes128.img")
			if err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { return m.Add(otherUUID, pattern(1000, 1)) }); err != nil {
				t.Fatal(err)
			}
			return dev
		}, filesOf("v01-sha2-aes128.img"), func(t testing.TB, cur *AuxMetadata) *AuxMetadata {
			return &AuxMetadata{Entries: []AuxEntry{{otherUUID, pattern(1100, 2)}}, Reserve: u64(1024)}
		}},
		{"multi-extent add", false, smallMultiExtent, smallFiles, add},
		{"multi-extent replace a large entry", false, func(t testing.TB) *blockdev.Memory {
			dev := smallMultiExtent(t)
			if err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { return m.Add(otherUUID, pattern(900, 3)) }); err != nil {
				t.Fatal(err)
			}
			return dev
		}, smallFiles, func(t testing.TB, cur *AuxMetadata) *AuxMetadata {
			return &AuxMetadata{Entries: []AuxEntry{{v11UUID, pattern(600, 4)}, {v11UUID, pattern(700, 5)}}, Reserve: u64(10)}
		}},
		{"v01 multi-extent add", true, multiExtentV01, filesOf("v01-sha2-aes128.img"), add},
		{"v01 multi-extent replace a large entry", true, func(t testing.TB) *blockdev.Memory {
			dev := multiExtentV01(t)
			if err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { return m.Add(otherUUID, pattern(900, 3)) }); err != nil {
				t.Fatal(err)
			}
			return dev
		}, filesOf("v01-sha2-aes128.img"), func(t testing.TB, cur *AuxMetadata) *AuxMetadata {
			return &AuxMetadata{Entries: []AuxEntry{{v11UUID, pattern(600, 4)}, {v11UUID, pattern(700, 5)}}, Reserve: u64(10)}
		}},
		{"v06 4 KiB IO blocks add", false, func(t testing.TB) *blockdev.Memory { return memVector(t, "v06-sha2-aes128-io4k.img") }, filesOf("v06-sha2-aes128-io4k.img"), add},
		{"v08 creation info add", false, func(t testing.TB) *blockdev.Memory { return memVector(t, "v08-mkfsinfo-header-sha2-aes128.img") }, nil, add},
	}
	var total atomic.Int64
	t.Cleanup(func() { t.Logf("crash points covered: %d", total.Load()) })
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			if sc.long && !longTests {
				t.Skip("SEALFS_LONG=1 runs it")
			}
			t.Parallel()
			n := runAuxCrash(t, sc)
			total.Add(int64(n))
		})
	}
}

func runAuxCrash(t *testing.T, sc auxScenario) int {
	baseBytes, err := blockdev.ReadAll(sc.dev(t))
	if err != nil {
		t.Fatal(err)
	}
	base := newCowDev(baseBytes)
	old, err := ReadAuxMetadata(base)
	if err != nil {
		t.Fatal(err)
	}
	want := sc.target(t, old)
	update := setAux(want)

	// The uninterrupted run, for the write count and the write sizes.
	ref := blockdev.NewFaulty(base.clone())
	if err := UpdateAuxMetadataOffline(ref, update); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadAuxMetadata(ref); err != nil || !sameAux(got, want) {
		t.Fatalf("uninterrupted update: %v, %v", got, err)
	}
	var writes []blockdev.LoggedOp
	for _, op := range ref.Log() {
		if op.Kind == blockdev.OpWrite {
			writes = append(writes, op)
		}
	}
	if len(writes) != ref.Writes() {
		t.Fatalf("%d writes logged, %d made", len(writes), ref.Writes())
	}

	ck := &auxCrashCheck{t: t, old: old, want: want, update: update, files: sc.files, verified: map[[32]byte]bool{}}
	check := func(label string, f *blockdev.Faulty, err error) { t.Helper(); ck.check(label, f, err) }
	for k := 0; k <= len(writes); k++ {
		f := blockdev.NewFaulty(base.clone())
		f.CutAfter(k)
		err := UpdateAuxMetadataOffline(f, update)
		check(fmt.Sprintf("power cut after write %d", k), f, err)
	}
	for k, op := range writes {
		for _, p := range tearPivots(op) {
			for _, newFirst := range []bool{true, false} {
				f := blockdev.NewFaulty(base.clone())
				f.TearWrite(k+1, p, newFirst)
				err := UpdateAuxMetadataOffline(f, update)
				check(fmt.Sprintf("write %d (%d bytes at %d) torn at %d, new first %v", k+1, len(op.Data), op.Off, p, newFirst), f, err)
			}
		}
	}
	t.Logf("%s: %d writes, %d crash points, %d distinct images opened and verified", sc.name, len(writes), ck.points, len(ck.verified))
	return ck.points
}

// auxCrashCheck checks the medium a crashed offline update left behind.
type auxCrashCheck struct {
	t         *testing.T
	old, want *AuxMetadata
	update    func(*AuxMetadata) error
	files     map[uint64]string // nil: not a formatted image
	verified  map[[32]byte]bool
	points    int
}

// check requires that the update failed by the power cut (or not at all),
// that the aux metadata reads as the old or the new contents, that the
// image opens and verifies (once per distinct image), and that repeating
// the update completes it.
func (ck *auxCrashCheck) check(label string, f *blockdev.Faulty, err error) {
	t := ck.t
	t.Helper()
	ck.points++
	if err != nil && !errors.Is(err, blockdev.ErrPowerCut) {
		t.Fatalf("%s: update failed with %v, not the power cut", label, err)
	}
	dev := f.Under().(*cowDev)
	got, err := ReadAuxMetadata(dev)
	if err != nil {
		t.Fatalf("%s: ReadAuxMetadata: %v", label, err)
	}
	if !sameAux(got, ck.old) && !sameAux(got, ck.want) {
		t.Fatalf("%s: read %s, neither old (%s) nor new (%s)", label, describeAux(got), describeAux(ck.old), describeAux(ck.want))
	}
	if sum := dev.sum(); ck.files != nil && !ck.verified[sum] {
		checkOpenVerify(t, dev, ck.files)
		ck.verified[sum] = true
	}
	again := dev.clone()
	if err := UpdateAuxMetadataOffline(again, ck.update); err != nil {
		t.Fatalf("%s: retry: %v", label, err)
	}
	if got, err := ReadAuxMetadata(again); err != nil || !sameAux(got, ck.want) {
		t.Fatalf("%s: after the retry: %v, %v", label, got, err)
	}
}

// TestAuxOfflineCrashDuringRecovery crashes twice: first by tearing an
// extent's final (head block) write past its first 128 bytes, which leaves
// the extent intact for tier 0 but failing the full check; then the repeated
// update is cut after each of its writes. The format counts only tier 0
// failures as torn, but readers that treat every failed check as torn
// (sealfs's Open among them) must not meet two such extents either, so the
// update repairs the half-written one first. Every state must read as the
// old or the new contents and open and verify.
func TestAuxOfflineCrashDuringRecovery(t *testing.T) {
	dev := smallMultiExtent(t)
	if err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { return m.Add(otherUUID, pattern(900, 3)) }); err != nil {
		t.Fatal(err)
	}
	baseBytes, _ := blockdev.ReadAll(dev)
	base := newCowDev(baseBytes)
	old, err := ReadAuxMetadata(base)
	if err != nil {
		t.Fatal(err)
	}
	want := &AuxMetadata{Entries: []AuxEntry{{v11UUID, pattern(600, 4)}, {v11UUID, pattern(700, 5)}}, Reserve: u64(10)}
	update := setAux(want)
	ck := &auxCrashCheck{t: t, old: old, want: want, update: update, files: smallFiles, verified: map[[32]byte]bool{}}
	ref := blockdev.NewFaulty(base.clone())
	if err := UpdateAuxMetadataOffline(ref, update); err != nil {
		t.Fatal(err)
	}
	firsts := 0
	for _, op := range ref.Log() {
		if op.Kind != blockdev.OpWrite || len(op.Data) != 512 || !slices.ContainsFunc(op.Data, func(b byte) bool { return b != 0 }) {
			continue // only the writes completing an extent
		}
		firsts++
		f1 := blockdev.NewFaulty(base.clone())
		f1.TearWrite(op.Seq, 256, true)
		err := UpdateAuxMetadataOffline(f1, update)
		ck.check(fmt.Sprintf("write %d torn at 256", op.Seq), f1, err)
		crashed := f1.Under().(*cowDev)
		retry := blockdev.NewFaulty(crashed.clone())
		if err := UpdateAuxMetadataOffline(retry, update); err != nil {
			t.Fatal(err)
		}
		for j := 0; j <= retry.Writes(); j++ {
			f2 := blockdev.NewFaulty(crashed.clone())
			f2.CutAfter(j)
			err := UpdateAuxMetadataOffline(f2, update)
			ck.check(fmt.Sprintf("write %d torn at 256, then the retry cut after write %d", op.Seq, j), f2, err)
		}
	}
	if firsts == 0 {
		t.Fatal("no extent-completing writes found")
	}
	t.Logf("%d first crashes, %d crash points, %d distinct images opened and verified", firsts, ck.points, len(ck.verified))
}

// tearPivots returns the pivots at which the crash harness tears a write:
// every 128-byte pivot inside it with SEALFS_LONG=1; otherwise those inside
// its first device block (where the integrity protections are), the first
// block boundary, the middle and the last pivot. Pivots 0 and the write's
// length are left out: they are the power cuts before and after it.
func tearPivots(op blockdev.LoggedOp) []int {
	n := len(op.Data)
	var out []int
	for _, p := range blockdev.TearPivots(op.Off, n, 512) {
		if p == 0 || p == n {
			continue
		}
		if longTests || p < 512 || p == 512 || p == n/2/128*128 || p == n-128 {
			out = append(out, p)
		}
	}
	return out
}

// cowDev is a copy-on-write device over a shared base image, so that the
// crash harness can run hundreds of interrupted updates of an 8 MiB image
// without copying it each time. It reports 512-byte blocks.
type cowDev struct {
	base []byte
	mu   sync.RWMutex
	mod  map[int64][]byte // 512-byte blocks written, by offset
}

func newCowDev(base []byte) *cowDev { return &cowDev{base: base, mod: map[int64][]byte{}} }

func (d *cowDev) clone() *cowDev {
	d.mu.RLock()
	defer d.mu.RUnlock()
	c := newCowDev(d.base)
	for off, b := range d.mod {
		c.mod[off] = bytes.Clone(b)
	}
	return c
}

func (d *cowDev) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, blockdev.ErrOutOfRange
	}
	if off >= int64(len(d.base)) {
		return 0, io.EOF
	}
	n := copy(p, d.base[off:])
	d.mu.RLock()
	for bo, b := range d.mod {
		if bo+512 > off && bo < off+int64(n) {
			lo, hi := max(bo, off), min(bo+512, off+int64(n))
			copy(p[lo-off:hi-off], b[lo-bo:hi-bo])
		}
	}
	d.mu.RUnlock()
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (d *cowDev) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(d.base)) {
		return 0, blockdev.ErrOutOfRange
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for pos := off; pos < off+int64(len(p)); {
		bo := pos &^ 511
		b, ok := d.mod[bo]
		if !ok {
			b = bytes.Clone(d.base[bo : bo+512])
			d.mod[bo] = b
		}
		n := copy(b[pos-bo:], p[pos-off:])
		pos += int64(n)
	}
	return len(p), nil
}

func (d *cowDev) Sync() error    { return nil }
func (d *cowDev) Size() int64    { return int64(len(d.base)) }
func (d *cowDev) BlockSize() int { return 512 }
func (d *cowDev) ReadOnly() bool { return false }
func (d *cowDev) sum() [32]byte {
	d.mu.RLock()
	defer d.mu.RUnlock()
	offs := make([]int64, 0, len(d.mod))
	for off, b := range d.mod {
		if !bytes.Equal(b, d.base[off:off+512]) {
			offs = append(offs, off)
		}
	}
	slices.Sort(offs)
	h := sha256.New()
	for _, off := range offs {
		fmt.Fprintf(h, "%d:", off)
		h.Write(d.mod[off])
	}
	return [32]byte(h.Sum(nil))
}

func TestAuxMkfsInfoUpdate(t *testing.T) {
	dev := memVector(t, "v08-mkfsinfo-header-sha2-aes128.img")
	offline := auxPlain(t, "aux-offline.bin")
	if err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { return m.Add(v11UUID, offline) }); err != nil {
		t.Fatal(err)
	}
	got, err := ReadAuxMetadata(dev)
	if err != nil {
		t.Fatal(err)
	}
	if want := (&AuxMetadata{Entries: []AuxEntry{{v11UUID, offline}}, Reserve: u64(1024)}); !sameAux(got, want) || got.Group != -1 {
		t.Fatalf("got %s", describeAux(got))
	}
	hi, err := ReadHeaderInfo(dev)
	if err != nil || hi.Kind != KindMkfsInfo || hi.AuxMetadataLen != 28+20+34 {
		t.Fatalf("header info %+v, %v", hi, err)
	}
	// The backup header was retired.
	off, _ := disk.MkfsInfoBackupOffset(uint64(dev.Size()), disk.Layout{})
	if _, err := readMkfsHeaderAt(dev, off); err == nil {
		t.Error("the backup creation info header is still valid")
	}
	// Removing everything stores no blob at all.
	if err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { m.Entries, m.Reserve = nil, nil; return nil }); err != nil {
		t.Fatal(err)
	}
	if hi, err := ReadHeaderInfo(dev); err != nil || hi.AuxMetadataLen != 0 {
		t.Fatalf("header info %+v, %v", hi, err)
	}
	if got, err := ReadAuxMetadata(dev); err != nil || len(got.Entries) != 0 || got.Reserve != nil {
		t.Fatalf("got %v, %v", got, err)
	}
}

// TestAuxChainFormatTolerance builds a state the format allows but sealfs's
// own updates never leave: group 0's head torn (tier 0) and, next to it, a
// tail extent whose last write was torn past its first 128 bytes (tier 0
// intact). Only tier 0 counts for walking the chain, so the chain is
// complete; group 1 holds the contents. The reference's offline writer can
// leave this after two power cuts, since it repairs only tier 0 failures.
func TestAuxChainFormatTolerance(t *testing.T) {
	dev := smallMultiExtent(t)
	prev, _ := ReadAuxMetadata(dev) // group 1 keeps these after the update
	if err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { return m.Add(otherUUID, pattern(900, 3)) }); err != nil {
		t.Fatal(err)
	}
	f, err := Open(dev, vectorKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want, err := f.auxChainExtents()
	if err != nil || !slices.Equal(want, f.auxExtents) {
		t.Fatalf("auxChainExtents = %v, %v; Open found %v", want, err, f.auxExtents)
	}

	img, _ := blockdev.ReadAll(dev)
	ab := uint64(128)
	h0, t1 := want[0], want[1] // group 0's head and first tail
	// The tail: its head block written up to byte 256 only.
	clear(img[t1.Start*ab+256 : t1.Start*ab+512])
	// Group 0's head: invalidated, as a fail-safe write begins.
	clear(img[h0.Start*ab : h0.Start*ab+512])
	damaged := blockdev.NewMemoryFrom(img, 512)

	got, err := ReadAuxMetadata(damaged)
	if err != nil || !sameAux(got, prev) || got.Group != 1 {
		t.Fatalf("ReadAuxMetadata = %v, %v; want the previous contents, from group 1", got, err)
	}
	f.dev = damaged
	ext, err := f.auxChainExtents()
	if err != nil || !slices.Equal(ext, want) {
		t.Fatalf("auxChainExtents = %v, %v; want %v", ext, err, want)
	}
	if _, err := f.walkAuxExtents(); err != nil {
		t.Logf("read.go's walkAuxExtents refuses this state (%v); returning f.auxChainExtents() would accept it", err)
	}
	// An offline update repairs both and completes.
	if err := UpdateAuxMetadataOffline(damaged, func(m *AuxMetadata) error { return m.Add(v11UUID, []byte("x")) }); err != nil {
		t.Fatal(err)
	}
	c := &auxChain{}
	if g, err := probeAuxImage(damaged); err != nil {
		t.Fatal(err)
	} else if c, err = g.geom.walk(); err != nil {
		t.Fatal(err)
	}
	if d := c.damaged(); len(d) != 0 {
		t.Errorf("extents %v still damaged after an update", d)
	}
	checkOpenVerify(t, damaged, smallFiles)
}

// FuzzReadAuxMetadata alters bytes of v11's aux metadata extents and head
// pointers. Reading must not panic and must return an error or well-formed
// contents; an offline update of a readable image must then read back.
func FuzzReadAuxMetadata(f *testing.F) {
	img, err := readVector(f, "v11-sha2-aes128-auxmeta.img")
	if err != nil {
		f.Fatal(err)
	}
	const auxStart, auxLen = 4096 * 128, 28 * 128 // [4096, 4124): both groups
	for _, off := range []uint16{0, 5, 16, 17, 25, 40, 42, 0x61, 0x75, 0xa7, 0x1f8, 0x800, 0x810, 0x819, auxLen + 3, auxLen + 9} {
		f.Add(off, []byte{0x01})
	}
	f.Add(uint16(16), []byte{0x11}) // group 0 inactive
	f.Fuzz(func(t *testing.T, off uint16, patch []byte) {
		if len(patch) == 0 || len(patch) > 32 {
			return
		}
		data := bytes.Clone(img)
		at := auxStart + int(off)%(auxLen+16)
		if int(off)%(auxLen+16) >= auxLen {
			at = 512 + int(off)%(auxLen+16) - auxLen // the mutable header's aux head pointers
		}
		for i, p := range patch {
			if at+i < len(data) {
				data[at+i] ^= p
			}
		}
		dev := blockdev.NewMemoryFrom(data, 512)
		md, err := ReadAuxMetadata(dev)
		if err != nil {
			return
		}
		if md.Group != 0 && md.Group != 1 && !(md.Group == -1 && len(md.Entries) == 0 && md.Reserve == nil) {
			t.Fatalf("group %d", md.Group)
		}
		for i, e := range md.Entries {
			if e.UUID == ([16]byte{}) || i > 0 && bytes.Compare(md.Entries[i-1].UUID[:], e.UUID[:]) > 0 {
				t.Fatalf("entry %d: bad or unsorted UUID %x", i, e.UUID)
			}
		}
		if md.Group >= 0 && md.EncodedLen() > md.Capacity {
			t.Fatalf("%d encoded bytes in a capacity of %d", md.EncodedLen(), md.Capacity)
		}
		err = UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { return m.Add(otherUUID, []byte("fuzz")) })
		if err != nil {
			return
		}
		got, err := ReadAuxMetadata(dev)
		if err != nil {
			t.Fatalf("read after a successful update: %v", err)
		}
		if d, ok := got.Get(otherUUID, 0); !ok || string(d) != "fuzz" {
			t.Fatalf("update lost: %s", describeAux(got))
		}
	})
}
