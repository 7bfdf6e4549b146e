package disk

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"
)

func TestChecksumKnown(t *testing.T) {
	// CRC-32("123456789") = cbf43926; the swapped-bit variant is fixed by
	// the reference-written vectors, which TestVectors reproduces exactly.
	c := Checksum([]byte("1234"), []byte("56789"))
	if got := [4]byte(c[:4]); got != [4]byte{0x26, 0x39, 0xf4, 0xcb} {
		t.Errorf("crc %x", got)
	}
	if Checksum([]byte("123456789")) != c {
		t.Error("split checksum differs")
	}
}

func TestLEB128(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		u    uint64
		uerr bool
		s    int64
		serr bool
	}{
		{[]byte{0x00}, 0, false, 0, false},
		{[]byte{0x7f}, 127, false, -1, false},
		{[]byte{0x3f}, 63, false, 63, false},
		{[]byte{0x41}, 65, false, -63, false},
		{[]byte{0x80, 0x01}, 128, false, 128, false},
		{[]byte{0x80}, 0, true, 0, true},
		{[]byte{}, 0, true, 0, true},
		// overlong encodings are accepted as the reference does
		{[]byte{0x80, 0x00}, 0, false, 0, false},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, math.MaxUint64, false, 0, true},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x81, 0x00}, math.MaxUint64, false, 0, true},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00}, math.MaxInt64, false, math.MaxInt64, false},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, 0, true, -1, false},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, 0, true, -1, false},
		// overflow beyond 64 bits
		{[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}, 0, true, 0, true},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x81, 0x01}, 0, true, 0, true},
		{[]byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, 0, false, 0, false},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x80}, 0, true, 0, true},
	} {
		u, _, err := ReadULEB128(tc.in)
		if (err != nil) != tc.uerr || (err == nil && u != tc.u) {
			t.Errorf("ULEB %x: %d %v", tc.in, u, err)
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Errorf("ULEB %x: error class %v", tc.in, err)
		}
		s, _, err := ReadSLEB128(tc.in)
		if (err != nil) != tc.serr || (err == nil && s != tc.s) {
			t.Errorf("SLEB %x: %d %v", tc.in, s, err)
		}
	}
	for _, v := range []uint64{0, 1, 127, 128, 1 << 35, math.MaxUint64} {
		b := AppendULEB128(nil, v)
		if got, n, err := ReadULEB128(b); err != nil || got != v || n != len(b) {
			t.Errorf("ULEB round trip %d: %d %d %v", v, got, n, err)
		}
	}
	for _, v := range []int64{0, 1, -1, 63, 64, -64, -65, math.MaxInt64, math.MinInt64} {
		b := AppendSLEB128(nil, v)
		if got, n, err := ReadSLEB128(b); err != nil || got != v || n != len(b) {
			t.Errorf("SLEB round trip %d: %d %d %v (%x)", v, got, n, err, b)
		}
	}
}

func TestExtentPtr(t *testing.T) {
	p, err := NewExtentPtr(3996, 12, false)
	if err != nil || p != 0x7ce16 {
		t.Fatalf("%#x %v", uint64(p), err)
	}
	if s, n, ind := p.Decode(); s != 3996 || n != 12 || ind {
		t.Errorf("%d %d %v", s, n, ind)
	}
	p, _ = NewExtentPtr(1, 64, true)
	if s, n, ind := p.Decode(); s != 1 || n != 64 || !ind || p.IsNil() {
		t.Errorf("%d %d %v", s, n, ind)
	}
	for _, tc := range []struct{ s, n uint64 }{{0, 0}, {0, 65}, {1 << 57, 1}} {
		if _, err := NewExtentPtr(tc.s, tc.n, false); err == nil {
			t.Errorf("NewExtentPtr(%d, %d) accepted", tc.s, tc.n)
		}
	}
	if !NilExtentPtr.IsNil() || NilExtentPtr.Check(Layout{}) != nil {
		t.Error("NIL")
	}
	big, _ := NewExtentPtr(1<<57-1, 1, false)
	if err := big.Check(Layout{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("extent ending at 2^57 blocks accepted: %v", err)
	}
	bp, _ := NewBlockPtr(5)
	if bp != 0x280 || bp.Start() != 5 || bp.Check(Layout{}) != nil {
		t.Errorf("block ptr %#x", uint64(bp))
	}
	if err := (bp | 1).Check(Layout{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("reserved bits accepted: %v", err)
	}
	if err := BlockPtr(1 << 63).Check(Layout{AllocBlockLog2128: 1}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("out of range block accepted: %v", err)
	}
}

func TestExtentsList(t *testing.T) {
	for _, tc := range []struct {
		name string
		ext  []Extent
		enc  []byte
	}{
		{"empty", nil, []byte{0, 0}},
		{"one", []Extent{{10, 2}}, []byte{10, 2, 0, 0}},
		{"backwards", []Extent{{100, 4}, {20, 1}}, []byte{0xe4, 0x00, 4, 0xac, 0x7f, 1, 0, 0}},
	} {
		got := AppendExtentsList(nil, tc.ext)
		if !bytes.Equal(got, tc.enc) {
			t.Errorf("%s: encoded %x, want %x", tc.name, got, tc.enc)
		}
		ext, n, err := DecodeExtentsList(append(got, 0xaa))
		if err != nil || n != len(got) || !reflect.DeepEqual(ext, tc.ext) {
			t.Errorf("%s: decoded %v %d %v", tc.name, ext, n, err)
		}
	}
	for _, bad := range [][]byte{
		{},                     // truncated
		{0},                    // truncated
		{5, 0},                 // zero length, non-zero delta
		{10, 2, 0x7e, 2, 0, 0}, // overlap: [10,12) then [10,12)
		{0x7f, 2, 0, 0},        // starts at 2^64-1, wraps
		{10, 2},                // no terminator
	} {
		if _, _, err := DecodeExtentsList(bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%x: %v", bad, err)
		}
	}
}

func leafFixture() LeafNode {
	p1, _ := NewExtentPtr(40, 8, false)
	p2, _ := NewExtentPtr(48, 1, true)
	p3, _ := NewExtentPtr(50, 2, false)
	next, _ := NewBlockPtr(9)
	return LeafNode{Next: next, Entries: []LeafEntry{{1, p1, 0}, {2, p2, 0}, {3, p3, 0x7f}}}
}

func TestLeafNode(t *testing.T) {
	const B = 112 // 128 B node minus a 16 B IV
	if MaxLeafEntries(B) != 5 || MinLeafEntries(B) != 3 || MaxInternalKeys(B) != 6 || MinInternalKeys(B) != 2 {
		t.Fatalf("M/m %d %d %d %d", MaxLeafEntries(B), MinLeafEntries(B), MaxInternalKeys(B), MinInternalKeys(B))
	}
	n := leafFixture()
	enc, err := EncodeLeafNode(n, B)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeLeafNode(enc)
	if err != nil || !reflect.DeepEqual(got, n) {
		t.Fatalf("%+v %v", got, err)
	}
	if lvl, err := NodeLevel(enc, false); err != nil || lvl != 1 {
		t.Errorf("level %d %v", lvl, err)
	}
	mutate := map[string]func(b []byte){
		"level":         func(b []byte) { b[8+20*5] = 2 },
		"unsorted":      func(b []byte) { b[8+40+8] = 1 },
		"gap":           func(b []byte) { b[8+40+8*4] = 9 },
		"nil occupied":  func(b []byte) { copy(b[8:], bytes.Repeat([]byte{0xff}, 8)) },
		"ptr unused":    func(b []byte) { b[8+8*4] = 0 },
		"flags unused":  func(b []byte) { b[8+80+4*4] = 1 },
		"flags reserve": func(b []byte) { b[8+80+1] = 1 },
		"next reserved": func(b []byte) { b[0] |= 1 },
	}
	for name, f := range mutate {
		b := bytes.Clone(enc)
		f(b)
		if _, err := DecodeLeafNode(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := DecodeLeafNode(make([]byte, 50)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("tiny node: %v", err)
	}
}

func TestInternalNode(t *testing.T) {
	const B = 112
	c := func(s uint64) BlockPtr { p, _ := NewBlockPtr(s); return p }
	n := InternalNode{Level: 2, Children: []BlockPtr{c(5), c(7), c(9)}, Keys: []uint64{20, 40}}
	enc, err := EncodeInternalNode(n, B)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeInternalNode(enc)
	if err != nil || !reflect.DeepEqual(got, n) {
		t.Fatalf("%+v %v", got, err)
	}
	if lvl, err := NodeLevel(enc, true); err != nil || lvl != 2 {
		t.Errorf("level %d %v", lvl, err)
	}
	for name, f := range map[string]func(b []byte){
		"leaf level":    func(b []byte) { b[8+16*6] = 1 },
		"unsorted keys": func(b []byte) { b[8+48] = 50 },
		"nil child":     func(b []byte) { copy(b[8:], bytes.Repeat([]byte{0xff}, 8)) },
		"extra child":   func(b []byte) { clear(b[24:32]) },
		"stray key":     func(b []byte) { b[8+48+8*5] = 1 },
	} {
		b := bytes.Clone(enc)
		f(b)
		if _, err := DecodeInternalNode(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func journalFixture() JournalLog {
	d := bytes.Repeat([]byte{0xab}, 32)
	return JournalLog{
		AuthTreeExtents:   []Extent{{64, 8}},
		BitmapExtents:     []Extent{{72, 4}, {200, 4}},
		BitmapDigests:     []DigestRecord{{18, d}, {50, d}},
		BitmapDigestsHMAC: bytes.Repeat([]byte{0xcd}, 32),
		ApplyWrites:       []WriteRecord{{Target: 2, Source: 900, Len: 1}, {Target: 10, Source: 100, Len: 3}},
		AuthTreeUpdates:   []Range{{1, 1}, {10, 3}},
		Trim:              []Range{{900, 1}},
		Disguise:          &StagingDisguise{Cipher: 6, KeyBits: 128, Key: bytes.Repeat([]byte{1}, 16), IVKey: bytes.Repeat([]byte{2}, 16)},
	}
}

func TestJournalLog(t *testing.T) {
	jl := journalFixture()
	enc := AppendJournalLog(nil, jl)
	got, err := DecodeJournalLog(enc, 32, 32)
	if err != nil || !reflect.DeepEqual(got, jl) {
		t.Fatalf("%+v\n%+v\n%v", got, jl, err)
	}
	minimal := JournalLog{BitmapDigestsHMAC: make([]byte, 32)}
	if got, err := DecodeJournalLog(AppendJournalLog(nil, minimal), 32, 32); err != nil || got.Trim != nil || got.Disguise != nil {
		t.Errorf("minimal: %+v %v", got, err)
	}
	// Swap the trim and disguise fields: out of order.
	noOpt := AppendJournalLog(nil, JournalLog{BitmapDigestsHMAC: make([]byte, 32)})
	trim := []byte{tagTrim, 4, 1, 1, 0, 0}
	dis := append([]byte{tagStagingDisguise, 4 + 2}, 0, 6, 0, 8, 1, 2)
	cases := map[string][]byte{
		"disguise before trim": append(append(bytes.Clone(noOpt), dis...), trim...),
		"duplicate trim":       append(append(bytes.Clone(noOpt), trim...), trim...),
		"truncated":            enc[:len(enc)-1],
		"missing mandatory":    enc[:3],
		"unknown tag":          append(bytes.Clone(noOpt), 8, 0),
		"multibyte tag":        append(bytes.Clone(noOpt), 0x86, 0x00, 0),
		"tag zero":             append([]byte{0, 0}, enc...),
		"second field first":   enc[4:],
		"length overflow":      append(bytes.Clone(noOpt), tagTrim, 0xff, 0xff, 0xff, 0xff, 0x0f),
		"excess bytes":         append(append(bytes.Clone(noOpt), tagTrim, 5, 1, 1, 0, 0), 0),
	}
	for name, b := range cases {
		if _, err := DecodeJournalLog(b, 32, 32); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestAuxMetadata(t *testing.T) {
	r := uint64(1024)
	u1 := [16]byte{0x12, 0x34, 0x56, 0x78}
	u2 := [16]byte{0x12, 0x34, 0x56, 0x79}
	entries := []AuxEntry{{u1, []byte("online")}, {u1, []byte("offline")}, {u2, nil}}
	enc, err := AppendAuxMetadata(nil, entries, &r)
	if err != nil {
		t.Fatal(err)
	}
	got, gr, n, err := DecodeAuxMetadata(append(enc, 0xee))
	if err != nil || n != len(enc) || gr == nil || *gr != r || len(got) != 3 || !bytes.Equal(got[1].Data, []byte("offline")) {
		t.Fatalf("%v %v %d %v", got, gr, n, err)
	}
	enc2, _ := AppendAuxMetadata(nil, nil, nil)
	if got, gr, n, err := DecodeAuxMetadata(enc2); err != nil || got != nil || gr != nil || n != 20 {
		t.Errorf("empty: %v %v %d %v", got, gr, n, err)
	}
	unsorted := append(append([]byte{}, u2[:]...), 0, 0, 0, 0)
	unsorted = append(append(unsorted, u1[:]...), 0, 0, 0, 0)
	unsorted = append(unsorted, enc2...)
	badTerm := append(make([]byte, 16), 4, 0, 0, 0, 1, 2, 3, 4)
	for name, b := range map[string][]byte{
		"truncated": enc[:len(enc)-1], "unsorted": unsorted, "bad terminator": badTerm,
		"long data": append(append([]byte{}, u1[:]...), 0xff, 0, 0, 0),
	} {
		if _, _, _, err := DecodeAuxMetadata(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestMkfsInfoAuxVector(t *testing.T) {
	img := readVector(t, "v08-mkfsinfo-header-sha2-aes128.img", 4096)
	h, err := DecodeMkfsInfoHeader(img)
	if err != nil {
		t.Fatal(err)
	}
	e, r, err := DecodeMkfsInfoAux(img[h.Len():], h.AuxMetadataLen, h.Layout)
	if err != nil || len(e) != 0 || r == nil || *r != 1024 {
		t.Errorf("%v %v %v", e, r, err)
	}
}

func TestMkfsInfoBackupOffset(t *testing.T) {
	l := Layout{IOBlockLog2: 2}
	for _, tc := range []struct {
		size, off uint64
		ok        bool
	}{
		{8 << 20, 8<<20 - 512<<10, true},
		{8192, 8192 - 512, true},
		{8191, 0, false},
		{8<<20 + 4096, 8<<20 - 512<<10, true},
		{12 << 20, 12<<20 - 512<<10, true},
	} {
		off, ok := MkfsInfoBackupOffset(tc.size, l)
		if off != tc.off || ok != tc.ok {
			t.Errorf("size %d: %d %v", tc.size, off, ok)
		}
	}
	if _, ok := MkfsInfoBackupOffset(8192, Layout{IOBlockLog2: 3}); ok {
		t.Error("IO Block larger than backup alignment accepted")
	}
}

func TestIntegrityRoundTrip(t *testing.T) {
	for _, l := range []Layout{{IOBlockLog2: 0}, {IOBlockLog2: 2}, {AllocBlockLog2128: 1, IOBlockLog2: 3}} {
		for _, size := range []int{int(l.IOBlockSize()), 3 * int(l.IOBlockSize())} {
			ext := make([]byte, size)
			for i := range ext {
				ext[i] = byte(i * 7)
			}
			clear(ext[8+5 : 8+5+IntegrityLen(l)])
			orig := bytes.Clone(ext)
			if err := ApplyIntegrity(ext, 8, 5, l); err != nil {
				t.Fatal(err)
			}
			if tier0Check(ext, 8) >= 0 {
				t.Fatal("tier 0 realm has a zero byte")
			}
			if err := VerifyAndRemoveIntegrity(ext, 8, 5, l); err != nil {
				t.Fatalf("%+v %d: %v", l, size, err)
			}
			if !bytes.Equal(ext, orig) {
				t.Fatalf("%+v %d: contents not restored", l, size)
			}
		}
	}
	if err := ApplyIntegrity(make([]byte, 100), 0, 0, Layout{}); err == nil {
		t.Error("short extent accepted")
	}
	if err := ApplyIntegrity(make([]byte, 512), 120, 0, Layout{}); err == nil {
		t.Error("section outside the first 128 bytes accepted")
	}
	// A commit ID tail to avoid changes the mask choice.
	a, b := make([]byte, 512), make([]byte, 512)
	_ = ApplyIntegrity(a, 8, 0, Layout{IOBlockLog2: 2})
	_ = ApplyIntegrityAvoiding(b, 8, 0, Layout{IOBlockLog2: 2}, [2][2]byte{{a[8], a[15]}})
	if a[8] == b[8] || a[15] == b[15] {
		t.Error("commit ID tails not avoided")
	}
}

func TestJournalHeadRoundTrip(t *testing.T) {
	l := Layout{IOBlockLog2: 2, AuthTreeDataBlockLog2: 2}
	n, err := JournalLogHeadLen(l, 16, 32)
	if err != nil || n != 512 {
		t.Fatalf("%d %v", n, err)
	}
	b := make([]byte, n)
	for i := JournalPlaintextHeaderLen(l); i < len(b); i++ {
		b[i] = byte(i)
	}
	want := bytes.Clone(b)
	h0, _ := NewExtentPtr(4096, 4, false)
	if err := EncodeJournalLogHeadPlaintext(b, l, [2]ExtentPtr{h0, NilExtentPtr}); err != nil {
		t.Fatal(err)
	}
	torn := bytes.Clone(b)
	clear(torn[256:])
	if jh, err := DecodeJournalLogHead(torn, l); err != nil || jh.State != JournalTorn {
		t.Errorf("torn: %v %v", jh.State, err)
	}
	jh, err := DecodeJournalLogHead(b, l)
	if err != nil || jh.State != JournalActive || jh.AuxHeads[0] != h0 || !jh.AuxHeads[1].IsNil() {
		t.Fatalf("%+v %v", jh, err)
	}
	if !bytes.Equal(b[jh.PayloadOffset:], want[jh.PayloadOffset:]) {
		t.Error("payload not restored")
	}
}

func TestLayoutValidate(t *testing.T) {
	for _, l := range []Layout{{IOBlockLog2: 7}, {AuthTreeDataBlockLog2: 7}, {IndexLeafLog2: 7}, {IndexInternalLog2: 7},
		{AllocBlockLog2128: 56}, {AllocBlockLog2128: 50, BitmapBlockLog2: 6}, {AuthTreeNodeLog2: 60}} {
		if err := l.Validate(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%+v: %v", l, err)
		}
		if _, err := DecodeLayout(l.Append(nil)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("decode %+v: %v", l, err)
		}
	}
	l := Layout{1, 2, 3, 4, 5, 6, 0, 0xb, 0xc, 0xd, 0xe, 0xf, 6, 256}
	if got, err := DecodeLayout(l.Append(nil)); err != nil || got != l {
		t.Errorf("%+v %v", got, err)
	}
}

func TestStaticHeaderRoundTrip(t *testing.T) {
	for _, salt := range [][]byte{nil, {1}, bytes.Repeat([]byte{0}, 255)} {
		h := StaticHeader{Layout: Layout{IOBlockLog2: 3, AuthTreeDataBlockLog2: 3, Cipher: 6, CipherKeyBits: 256}, Salt: salt}
		enc, err := EncodeStaticHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeStaticHeader(enc)
		if err != nil || got.Layout != h.Layout || !bytes.Equal(got.Salt, salt) {
			t.Fatalf("%+v %v", got, err)
		}
		if _, err := DecodeStaticHeader(enc[:len(enc)-1]); !errors.Is(err, ErrCorrupt) {
			t.Errorf("short: %v", err)
		}
	}
	// version 2 with valid protections: unsupported
	h := StaticHeader{Layout: Layout{IOBlockLog2: 2}}
	enc, _ := EncodeStaticHeader(h)
	_ = VerifyAndRemoveIntegrity(enc, 8, staticMinLen-8, h.Layout)
	enc[8] = 2
	_ = ApplyIntegrity(enc, 8, staticMinLen-8, h.Layout)
	if _, err := DecodeStaticHeader(enc); !errors.Is(err, ErrUnsupported) {
		t.Errorf("version 2: %v", err)
	}
}
