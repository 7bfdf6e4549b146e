package cocoonfs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
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
	b, err := os.ReadFile(filepath.Join(vectorDir, "plaintext", name))
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
	b, err := readVector(name)
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
		t.Fatalf("Open: %v", err)
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
	ref, err := readVector("v11-sha2-aes128-auxmeta.img")
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
		b, _ := readVector("v11-sha2-aes128-auxmeta.img")
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
		binary64(b[512:], uint64(disk.NilExtentPtr))
		binary64(b[520:], uint64(disk.NilExtentPtr))
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
	t.Run("device block size", func(t *testing.T) {
		b, _ := readVector("v01-sha2-aes128.img")
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

func binary64(b []byte, v uint64) { disk.ExtentPtr(v).Append(b[:0]) }

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

// multiExtentV01 is v01 with each update group split into three 4-block
// extents over the same allocation blocks, so that updates take the
// multi-extent path (deactivate the head, write the tails, then the head).
func multiExtentV01(t testing.TB) *blockdev.Memory {
	dev := memVector(t, "v01-sha2-aes128.img")
	var exts []disk.Extent
	for s := uint64(3996); s < 4020; s += 4 {
		exts = append(exts, disk.Extent{Start: s, Len: 4})
	}
	rechainAux(t, dev, exts, 3, nil)
	md, err := ReadAuxMetadata(dev)
	if err != nil || md.Capacity != 470+471+471 || len(md.Entries) != 0 || md.Reserve == nil || *md.Reserve != 1024 {
		t.Fatalf("multi-extent v01: %v, %v", md, err)
	}
	return dev
}

// auxScenario is one offline update run through the crash harness.
type auxScenario struct {
	name   string
	dev    func(t testing.TB) *blockdev.Memory
	files  map[uint64]string // nil: not a formatted image
	target func(t testing.TB, cur *AuxMetadata) *AuxMetadata
}

// TestAuxOfflineCrash cuts the power after every write of representative
// offline updates and tears every write at every 128-byte pivot inside it,
// with the new data before and after the pivot. Each time the aux metadata
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
		{"v01 add", func(t testing.TB) *blockdev.Memory { return memVector(t, "v01-sha2-aes128.img") }, filesOf("v01-sha2-aes128.img"), add},
		{"v11 remove", func(t testing.TB) *blockdev.Memory { return memVector(t, "v11-sha2-aes128-auxmeta.img") }, filesOf("v11-sha2-aes128-auxmeta.img"),
			func(t testing.TB, cur *AuxMetadata) *AuxMetadata {
				m := cur.clone()
				m.Remove(v11UUID, 0)
				return m
			}},
		{"v01 replace a large entry", func(t testing.TB) *blockdev.Memory {
			// Both groups then hold data in their extents' tails too.
			dev := memVector(t, "v01-sha2-aes128.img")
			if err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { return m.Add(otherUUID, pattern(1000, 1)) }); err != nil {
				t.Fatal(err)
			}
			return dev
		}, filesOf("v01-sha2-aes128.img"), func(t testing.TB, cur *AuxMetadata) *AuxMetadata {
			return &AuxMetadata{Entries: []AuxEntry{{otherUUID, pattern(1100, 2)}}, Reserve: u64(1024)}
		}},
		{"v01 multi-extent add", multiExtentV01, filesOf("v01-sha2-aes128.img"), add},
		{"v01 multi-extent replace a large entry", func(t testing.TB) *blockdev.Memory {
			dev := multiExtentV01(t)
			if err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { return m.Add(otherUUID, pattern(900, 3)) }); err != nil {
				t.Fatal(err)
			}
			return dev
		}, filesOf("v01-sha2-aes128.img"), func(t testing.TB, cur *AuxMetadata) *AuxMetadata {
			return &AuxMetadata{Entries: []AuxEntry{{v11UUID, pattern(600, 4)}, {v11UUID, pattern(700, 5)}}, Reserve: u64(10)}
		}},
		{"v06 4 KiB IO blocks add", func(t testing.TB) *blockdev.Memory { return memVector(t, "v06-sha2-aes128-io4k.img") }, filesOf("v06-sha2-aes128-io4k.img"), add},
		{"v08 creation info add", func(t testing.TB) *blockdev.Memory { return memVector(t, "v08-mkfsinfo-header-sha2-aes128.img") }, nil, add},
	}
	var total atomic.Int64
	t.Cleanup(func() { t.Logf("crash points covered: %d", total.Load()) })
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			n := runAuxCrash(t, sc)
			total.Add(int64(n))
		})
	}
}

func runAuxCrash(t *testing.T, sc auxScenario) int {
	base := sc.dev(t)
	baseBytes, err := blockdev.ReadAll(base)
	if err != nil {
		t.Fatal(err)
	}
	old, err := ReadAuxMetadata(base)
	if err != nil {
		t.Fatal(err)
	}
	want := sc.target(t, old)
	update := setAux(want)

	// The uninterrupted run, for the write count and the write sizes.
	ref := blockdev.NewFaulty(blockdev.NewMemoryFrom(baseBytes, 512))
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

	verified := map[[32]byte]bool{}
	points := 0
	check := func(label string, f *blockdev.Faulty, err error) {
		t.Helper()
		points++
		if err != nil && !errors.Is(err, blockdev.ErrPowerCut) {
			t.Fatalf("%s: update failed with %v, not the power cut", label, err)
		}
		dev := f.Under()
		got, err := ReadAuxMetadata(dev)
		if err != nil {
			t.Fatalf("%s: ReadAuxMetadata: %v", label, err)
		}
		if !sameAux(got, old) && !sameAux(got, want) {
			t.Fatalf("%s: read %s, neither old (%s) nor new (%s)", label, describeAux(got), describeAux(old), describeAux(want))
		}
		img, _ := blockdev.ReadAll(dev)
		if sc.files != nil {
			if sum := sha256.Sum256(img); !verified[sum] {
				checkOpenVerify(t, blockdev.NewMemoryFrom(img, 512), sc.files)
				verified[sum] = true
			}
		}
		// Retrying the update after the crash completes it.
		again := blockdev.NewMemoryFrom(img, 512)
		if err := UpdateAuxMetadataOffline(again, update); err != nil {
			t.Fatalf("%s: retry: %v", label, err)
		}
		if got, err := ReadAuxMetadata(again); err != nil || !sameAux(got, want) {
			t.Fatalf("%s: after the retry: %v, %v", label, got, err)
		}
	}
	for k := 0; k <= len(writes); k++ {
		f := blockdev.NewFaulty(blockdev.NewMemoryFrom(baseBytes, 512))
		f.CutAfter(k)
		err := UpdateAuxMetadataOffline(f, update)
		check(fmt.Sprintf("power cut after write %d", k), f, err)
	}
	for k, op := range writes {
		for _, p := range blockdev.TearPivots(op.Off, len(op.Data), 512) {
			if p == 0 || p == len(op.Data) {
				continue // the power cuts above
			}
			for _, newFirst := range []bool{true, false} {
				f := blockdev.NewFaulty(blockdev.NewMemoryFrom(baseBytes, 512))
				f.TearWrite(k+1, p, newFirst)
				err := UpdateAuxMetadataOffline(f, update)
				check(fmt.Sprintf("write %d (%d bytes at %d) torn at %d, new first %v", k+1, len(op.Data), op.Off, p, newFirst), f, err)
			}
		}
	}
	t.Logf("%s: %d writes, %d crash points, %d distinct images opened and verified", sc.name, len(writes), points, len(verified))
	return points
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

// FuzzReadAuxMetadata alters bytes of v11's aux metadata extents and head
// pointers. Reading must not panic and must return an error or well-formed
// contents; an offline update of a readable image must then read back.
func FuzzReadAuxMetadata(f *testing.F) {
	img, err := readVector("v11-sha2-aes128-auxmeta.img")
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
