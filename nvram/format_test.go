package nvram

import (
	"bytes"
	"encoding/asn1"
	"errors"
	"io/fs"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sealfs/sealfs/errs"
)

// The test's own DER encoder: written from X.690 without cryptobyte, so the
// tests do not check the package against itself.

func tlv(tag byte, parts ...[]byte) []byte {
	var body []byte
	for _, p := range parts {
		body = append(body, p...)
	}
	n := len(body)
	out := []byte{tag}
	if n < 0x80 {
		out = append(out, byte(n))
	} else {
		var lb []byte
		for m := n; m > 0; m >>= 8 {
			lb = append([]byte{byte(m)}, lb...)
		}
		out = append(out, 0x80|byte(len(lb)))
		out = append(out, lb...)
	}
	return append(out, body...)
}

func ia5(s string) []byte        { return tlv(0x16, []byte(s)) }
func utf8str(s string) []byte    { return tlv(0x0c, []byte(s)) }
func octets(b []byte) []byte     { return tlv(0x04, b) }
func seq(parts ...[]byte) []byte { return tlv(0x30, parts...) }
func set(parts ...[]byte) []byte { return tlv(0x31, parts...) }
func integer(v byte) []byte      { return tlv(0x02, []byte{v}) }

// cer wraps entries in the CER directory SET (indefinite length).
func cer(entries ...[]byte) []byte {
	out := []byte{0x31, 0x80}
	for _, e := range entries {
		out = append(out, e...)
	}
	return append(out, 0, 0)
}

func be64(n int) []byte {
	b := make([]byte, 8)
	for i := 7; i >= 0; i-- {
		b[i] = byte(n)
		n >>= 8
	}
	return b
}

func realsize(n int) []byte { return seq(ia5("realsize"), octets(be64(n))) }

// entry encodes one entry; a nil name omits it.
func entry(typ string, mand, opt [][]byte, data []byte, name *string) []byte {
	nv := seq(ia5(typ), set(mand...), set(opt...), octets(data))
	if name == nil {
		return seq(nv)
	}
	return seq(nv, utf8str(*name))
}

func ptr(s string) *string { return &s }

// A directory as another, newer writer would produce it: unknown optional
// attributes (a flag and a read-only value of other universal types), an
// entry with an unknown mandatory attribute, an unnamed entry, and padding
// behind realsize.
var (
	permall = bytes.Repeat([]byte("permanent state "), 100)
	vendor  = seq(ia5("x-vendor"), integer(7), utf8str("made elsewhere"))
	entryA  = entry("tpm", [][]byte{realsize(len(permall))},
		[][]byte{ia5("x-seen-by-v9"), vendor}, permall, ptr("tpm2-00.permall"))
	entryB = entry("6c4a1c9e-0a8e-4b7e-9f1e-6b7c2a1f0d3e",
		[][]byte{realsize(3), seq(ia5("x-compressed"), octets([]byte("zstd")))}, nil, []byte("abc"), ptr("future"))
	entryC     = entry("bios", nil, nil, []byte("unnamed variables"), nil)
	entryD     = entry("tpm", [][]byte{realsize(5)}, nil, []byte("savedPADDINGPADDING"), ptr("tpm2-00.savestate"))
	foreignDir = cer(entryA, entryB, entryC, entryD)
)

func TestParseForeignDirectory(t *testing.T) {
	d, err := ParseDirectory(foreignDir)
	if err != nil {
		t.Fatal(err)
	}
	list := d.List()
	if len(list) != 4 {
		t.Fatalf("List: %d entries, want 4: %+v", len(list), list)
	}
	// Named entries sorted by name, then the unnamed one.
	wantNames := []string{"future", "tpm2-00.permall", "tpm2-00.savestate", ""}
	for i, in := range list {
		if in.Name != wantNames[i] {
			t.Errorf("List[%d] = %q, want %q", i, in.Name, wantNames[i])
		}
	}
	if list[1].Type != "tpm" || list[1].Size != int64(len(permall)) || list[1].Err != nil {
		t.Errorf("permall info: %+v", list[1])
	}
	if len(list[1].Mandatory) != 0 || len(list[1].Optional) != 2 {
		t.Errorf("permall attributes: mandatory %v, optional %v (realsize is not listed)", list[1].Mandatory, list[1].Optional)
	}
	if list[2].Size != 5 {
		t.Errorf("savestate size %d, want realsize 5", list[2].Size)
	}
	if list[3].Type != "bios" || list[3].Size != int64(len("unnamed variables")) {
		t.Errorf("unnamed entry: %+v", list[3])
	}

	// The unknown mandatory attribute makes "future" unusable, naming it.
	var ume *UnknownMandatoryError
	if !errors.As(list[0].Err, &ume) || ume.Attribute != "x-compressed" || ume.Entry != "future" {
		t.Errorf("future: Err = %v, want an UnknownMandatoryError for x-compressed", list[0].Err)
	}
	_, err = d.Get("future")
	if !errors.Is(err, ErrUnknownMandatory) || !errors.Is(err, errs.ErrUnsupported) || !strings.Contains(err.Error(), `"x-compressed"`) {
		t.Errorf("Get(future) = %v, want ErrUnknownMandatory naming x-compressed", err)
	}

	// The other entries stay usable.
	e, err := d.Get("tpm2-00.permall")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(e.Data, permall) || e.Type != "tpm" {
		t.Errorf("permall: type %q, %d bytes", e.Type, len(e.Data))
	}
	if !e.Optional[0].Flag && e.Optional[1].Flag {
		t.Errorf("optional attributes: %+v", e.Optional)
	}
	e, err = d.Get("tpm2-00.savestate")
	if err != nil || string(e.Data) != "saved" {
		t.Errorf("savestate: %q, %v; want the 5 bytes before the padding", e.Data, err)
	}
	if _, err := d.Get("nothing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Get(nothing) = %v, want fs.ErrNotExist", err)
	}
	if _, err := d.Get(""); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Get(\"\") = %v, want fs.ErrNotExist (unnamed entries are not addressable)", err)
	}
}

// TestRewriteKeepsUnknown changes the directory and checks, with an
// independent decoder (encoding/asn1), that the unusable entry and the
// unnamed one are kept byte for byte, and that an entry read and written
// back keeps its unknown optional attributes byte for byte.
func TestRewriteKeepsUnknown(t *testing.T) {
	d, err := ParseDirectory(foreignDir)
	if err != nil {
		t.Fatal(err)
	}
	e, err := d.Get("tpm2-00.permall")
	if err != nil {
		t.Fatal(err)
	}
	e.Data = []byte("new permanent state")
	if err := d.Put(e); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove("tpm2-00.savestate"); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove("tpm2-00.savestate"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("second Remove = %v, want fs.ErrNotExist", err)
	}
	if err := d.Put(&Entry{Name: "added", Type: "data", Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	enc := d.Encode()

	for _, raw := range [][]byte{entryB, entryC} {
		if !bytes.Contains(enc, raw) {
			t.Errorf("rewritten directory lost an entry's bytes: % x", raw[:16])
		}
	}
	// DER sorts the SET OF: the IA5String flag (0x16) before the SEQUENCE (0x30).
	wantPermall := entry("tpm", [][]byte{realsize(len(e.Data))}, [][]byte{ia5("x-seen-by-v9"), vendor}, e.Data, ptr("tpm2-00.permall"))
	if !bytes.Contains(enc, wantPermall) {
		t.Errorf("the updated entry is not encoded as the independent encoder encodes it")
	}
	if !bytes.Contains(enc, entry("data", [][]byte{realsize(1)}, nil, []byte("x"), ptr("added"))) {
		t.Errorf("the new entry is not encoded as the independent encoder encodes it")
	}

	// CER framing, and elements in SET OF order.
	if !bytes.HasPrefix(enc, []byte{0x31, 0x80}) || !bytes.HasSuffix(enc, []byte{0, 0}) {
		t.Fatalf("not a CER SET: % x ... % x", enc[:2], enc[len(enc)-2:])
	}
	type asnNVRAM struct {
		Type      string          `asn1:"ia5"`
		Mandatory []asn1.RawValue `asn1:"set"`
		Optional  []asn1.RawValue `asn1:"set"`
		Data      []byte
	}
	type asnEntry struct {
		NVRAM asnNVRAM
		Name  string `asn1:"utf8,optional"`
	}
	rest := enc[2 : len(enc)-2]
	var prev []byte
	names := map[string]string{}
	for len(rest) > 0 {
		var ae asnEntry
		next, err := asn1.Unmarshal(rest, &ae)
		if err != nil {
			t.Fatalf("encoding/asn1 rejects an entry: %v", err)
		}
		elem := rest[:len(rest)-len(next)]
		if prev != nil && bytes.Compare(prev, elem) > 0 {
			t.Errorf("entries not in SET OF order")
		}
		prev, rest = elem, next
		names[ae.Name] = ae.NVRAM.Type
	}
	want := map[string]string{"tpm2-00.permall": "tpm", "future": "6c4a1c9e-0a8e-4b7e-9f1e-6b7c2a1f0d3e", "": "bios", "added": "data"}
	if len(names) != len(want) {
		t.Errorf("encoding/asn1 sees %v, want %v", names, want)
	}
	for n, typ := range want {
		if names[n] != typ {
			t.Errorf("encoding/asn1: entry %q has type %q, want %q", n, names[n], typ)
		}
	}

	// And the rewritten directory reads back the same.
	d2, err := ParseDirectory(enc)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := d2.Get("tpm2-00.permall"); got == nil || string(got.Data) != "new permanent state" || len(got.Optional) != 2 {
		t.Errorf("reread permall: %+v", got)
	}
	if _, err := d2.Get("future"); !errors.Is(err, ErrUnknownMandatory) {
		t.Errorf("reread future: %v", err)
	}
}

func TestDefiniteLengthAccepted(t *testing.T) {
	d, err := ParseDirectory(set(entryA, entryD))
	if err != nil {
		t.Fatal(err)
	}
	if d.Len() != 2 {
		t.Fatalf("%d entries", d.Len())
	}
	// Rewriting produces CER.
	if enc := d.Encode(); !bytes.HasPrefix(enc, []byte{0x31, 0x80}) {
		t.Errorf("rewrite is not CER")
	}
	if _, err := ParseDirectory(set()); err != nil {
		t.Errorf("empty definite SET: %v", err)
	}
	if d, err := ParseDirectory(cer()); err != nil || d.Len() != 0 {
		t.Errorf("empty CER SET: %v", err)
	}
	if got := NewDirectory().Encode(); !bytes.Equal(got, []byte{0x31, 0x80, 0, 0}) {
		t.Errorf("empty directory encodes as % x", got)
	}
}

func TestParseRejects(t *testing.T) {
	nvOK := seq(ia5("data"), set(), set(), octets(nil))
	cases := []struct {
		name string
		in   []byte
		msg  string
	}{
		{"empty input", nil, "not a SET"},
		{"sequence instead of set", seq(), "not a SET"},
		{"missing end-of-contents", []byte{0x31, 0x80}, "end-of-contents"},
		{"half end-of-contents", append(cer()[:2], 0), "end-of-contents"},
		{"trailing bytes", append(cer(), 0), "after its end"},
		{"trailing after definite", append(set(), 0), "after its end"},
		{"entry not a sequence", cer(octets(nil)), "not a DER SEQUENCE"},
		{"indefinite entry", cer([]byte{0x30, 0x80, 0, 0}), "not a DER SEQUENCE"},
		{"non-minimal length", cer([]byte{0x30, 0x81, 0x02, 0x30, 0x00}), "not a DER SEQUENCE"},
		{"entry without NVRAM", cer(seq(utf8str("x"))), "NVRAM SEQUENCE"},
		{"name of wrong type", cer(seq(nvOK, ia5("x"))), "UTF8String name"},
		{"extra element", cer(seq(nvOK, utf8str("x"), utf8str("y"))), "UTF8String name"},
		{"invalid UTF-8 name", cer(seq(nvOK, utf8str("\xff"))), "not valid UTF-8"},
		{"NVRAM missing data", cer(seq(seq(ia5("data"), set(), set()))), "IA5String, SET, SET, OCTET STRING"},
		{"NVRAM with extra", cer(seq(seq(ia5("data"), set(), set(), octets(nil), octets(nil)))), "IA5String, SET, SET, OCTET STRING"},
		{"type not IA5", cer(seq(seq(utf8str("data"), set(), set(), octets(nil)))), "IA5String, SET, SET, OCTET STRING"},
		{"type with 8-bit chars", cer(seq(seq(ia5("d\xe4ta"), set(), set(), octets(nil)))), "not an IA5String"},
		{"attribute of wrong type", cer(seq(seq(ia5("data"), set(octets(nil)), set(), octets(nil)))), "neither an IA5String nor a SEQUENCE"},
		{"attribute sequence without name", cer(seq(seq(ia5("data"), set(), set(seq(octets(nil))), octets(nil)))), "IA5String name"},
		{"attribute value truncated", cer(seq(seq(ia5("data"), set(), set(seq(ia5("a"), []byte{0x04, 0x05, 1})), octets(nil)))), "value is not well-formed"},
		{"attribute name 8-bit", cer(seq(seq(ia5("data"), set(ia5("\x80")), set(), octets(nil)))), "not an IA5String"},
		{"duplicate names", cer(entryA, entryA), "two entries named"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseDirectory(c.in)
			if !errors.Is(err, errs.ErrCorrupt) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("ParseDirectory(% x) = %v, want ErrCorrupt mentioning %q", c.in, err, c.msg)
			}
		})
	}
}

// Problems inside one entry make that entry unusable, not the directory.
func TestUnusableEntries(t *testing.T) {
	cases := []struct {
		name  string
		entry []byte
		msg   string
	}{
		{"realsize beyond data", entry("data", [][]byte{realsize(9)}, nil, []byte("short"), ptr("e")), "exceeds"},
		{"realsize too wide", entry("data", [][]byte{seq(ia5("realsize"), octets(make([]byte, 9)))}, nil, nil, ptr("e")), "1 to 8 bytes"},
		{"realsize empty", entry("data", [][]byte{seq(ia5("realsize"), octets(nil))}, nil, nil, ptr("e")), "1 to 8 bytes"},
		{"realsize as a flag", entry("data", [][]byte{ia5("realsize")}, nil, nil, ptr("e")), "1 to 8 bytes"},
		{"realsize as INTEGER", entry("data", [][]byte{seq(ia5("realsize"), integer(0))}, nil, nil, ptr("e")), "OCTET STRING"},
		{"tpm without realsize", entry("tpm", nil, nil, []byte("s"), ptr("e")), "lacks the mandatory"},
		{"duplicate attribute", entry("data", nil, [][]byte{ia5("a"), seq(ia5("a"))}, nil, ptr("e")), "appears twice"},
		{"unknown mandatory flag", entry("data", [][]byte{ia5("x-new")}, nil, nil, ptr("e")), `"x-new"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := ParseDirectory(cer(c.entry, entryA))
			if err != nil {
				t.Fatalf("the directory itself must parse: %v", err)
			}
			if _, err := d.Get("e"); err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("Get(e) = %v, want an error mentioning %q", err, c.msg)
			}
			if _, err := d.Get("tpm2-00.permall"); err != nil {
				t.Errorf("the other entry became unusable: %v", err)
			}
			if !bytes.Contains(d.Encode(), c.entry) {
				t.Errorf("the unusable entry is not kept on rewrite")
			}
		})
	}
	// A type other than tpm may omit realsize: the data is all of it.
	d, err := ParseDirectory(cer(entry("data", nil, nil, []byte("all of it"), ptr("e"))))
	if err != nil {
		t.Fatal(err)
	}
	if e, err := d.Get("e"); err != nil || string(e.Data) != "all of it" {
		t.Errorf("entry without realsize: %v, %v", e, err)
	}
}

func TestPutRejects(t *testing.T) {
	long := strings.Repeat("n", MaxNameLen+1)
	cases := []struct {
		name string
		e    Entry
	}{
		{"empty name", Entry{Type: "data"}},
		{"slash", Entry{Name: "a/b", Type: "data"}},
		{"NUL", Entry{Name: "a\x00", Type: "data"}},
		{"dot", Entry{Name: ".", Type: "data"}},
		{"dotdot", Entry{Name: "..", Type: "data"}},
		{"long name", Entry{Name: long, Type: "data"}},
		{"bad UTF-8", Entry{Name: "\xff", Type: "data"}},
		{"empty type", Entry{Name: "a"}},
		{"non-ASCII type", Entry{Name: "a", Type: "dätä"}},
		{"control char attribute", Entry{Name: "a", Type: "data", Optional: []Attribute{FlagAttribute("a\n")}}},
		{"realsize given", Entry{Name: "a", Type: "data", Mandatory: []Attribute{OctetsAttribute("realsize", []byte{1})}}},
		{"realsize given as optional", Entry{Name: "a", Type: "data", Optional: []Attribute{FlagAttribute("realsize")}}},
		{"duplicate attribute", Entry{Name: "a", Type: "data", Mandatory: []Attribute{FlagAttribute("x")}, Optional: []Attribute{FlagAttribute("x")}}},
		{"flag with value", Entry{Name: "a", Type: "data", Optional: []Attribute{{Name: "x", Flag: true, Value: octets(nil)}}}},
		{"malformed value", Entry{Name: "a", Type: "data", Optional: []Attribute{{Name: "x", Value: []byte{0x04, 0x02}}}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := NewDirectory()
			if err := d.Put(&c.e); !errors.Is(err, fs.ErrInvalid) {
				t.Errorf("Put = %v, want fs.ErrInvalid", err)
			}
			if d.Len() != 0 || d.changed {
				t.Errorf("a refused Put changed the directory")
			}
		})
	}
	// A newer format's entry may be written; this version cannot read it.
	d := NewDirectory()
	if err := d.Put(&Entry{Name: "new", Type: "data", Mandatory: []Attribute{FlagAttribute("x-v2")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Get("new"); !errors.Is(err, ErrUnknownMandatory) {
		t.Errorf("Get of an entry with an unknown mandatory attribute = %v", err)
	}
	// Names are file names, UTF-8 welcome.
	if err := d.Put(&Entry{Name: "nvram ä €", Type: "uefi-vars", Optional: []Attribute{OctetsAttribute("owner", []byte("fw"))}}); err != nil {
		t.Errorf("UTF-8 name: %v", err)
	}
}

func TestAttributeHelpers(t *testing.T) {
	a := OctetsAttribute("owner", []byte("fw"))
	if !bytes.Equal(a.Value, octets([]byte("fw"))) {
		t.Errorf("OctetsAttribute value % x", a.Value)
	}
	if v, ok := a.Octets(); !ok || string(v) != "fw" {
		t.Errorf("Octets = %q, %v", v, ok)
	}
	if _, ok := FlagAttribute("f").Octets(); ok {
		t.Errorf("a flag has octets")
	}
	if _, ok := (Attribute{Name: "x", Value: append(octets(nil), octets(nil)...)}).Octets(); ok {
		t.Errorf("two OCTET STRINGs read as one")
	}
	for _, c := range []struct {
		a    Attribute
		want string
	}{{a, `owner="fw"`}, {FlagAttribute("f"), "f"}, {Attribute{Name: "v", Value: integer(1)}, "v=<3 bytes DER>"}} {
		if got := c.a.String(); got != c.want {
			t.Errorf("String() = %q, want %q", got, c.want)
		}
	}
}

// TestParseMemoryBounded: parsing allocates the entry table (bounded by
// MaxEntries; an unusable entry adds its error message) and scratch space,
// never copies of the input: memory is bounded for any input, however its
// bytes are spent.
func TestParseMemoryBounded(t *testing.T) {
	tiny := entry("", nil, nil, nil, nil) // 12 bytes: the smallest entry
	var flags [][]byte
	for j := 0; j < MaxAttributes; j++ {
		flags = append(flags, ia5(strconv.Itoa(j)))
	}
	many := make([][]byte, 0, 3000)
	for i := 0; i < cap(many); i++ {
		many = append(many, entry("data", nil, flags[:300], make([]byte, 400), ptr(strconv.Itoa(i))))
	}
	for _, c := range []struct {
		name string
		in   []byte
	}{
		{"tiny entries", cer(slices.Repeat([][]byte{tiny}, MaxEntries)...)},
		{"many attributes", cer(many...)},
		{"one large entry", cer(entry("tpm", [][]byte{realsize(1 << 20)}, nil, make([]byte, 1<<20), ptr("big")))},
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		d, err := ParseDirectory(c.in)
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		alloc := after.TotalAlloc - before.TotalAlloc
		if bound := 512*uint64(d.Len()) + 64<<10; alloc > bound {
			t.Errorf("%s: parsing %d bytes (%d entries) allocated %d bytes, more than %d", c.name, len(c.in), d.Len(), alloc, bound)
		}
	}
	if _, err := ParseDirectory(cer(slices.Repeat([][]byte{tiny}, MaxEntries+1)...)); !errors.Is(err, errs.ErrCorrupt) {
		t.Errorf("%d entries: %v, want ErrCorrupt", MaxEntries+1, err)
	}
	if _, err := ParseDirectory(cer(entry("data", nil, append(flags, ia5("x")), nil, nil))); !errors.Is(err, errs.ErrCorrupt) {
		t.Errorf("%d attributes: %v, want ErrCorrupt", MaxAttributes+1, err)
	}
	if _, err := ParseDirectory(make([]byte, MaxDirectorySize+1)); !errors.Is(err, ErrDirectoryTooLarge) {
		t.Errorf("oversized directory: %v", err)
	}
}

func TestOctetsAttributeLengths(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 255, 256, 65535, 65536, 1 << 20} {
		a := OctetsAttribute("a", make([]byte, n))
		if !bytes.Equal(a.Value, octets(make([]byte, n))) {
			t.Errorf("%d bytes: header % x", n, a.Value[:min(len(a.Value), 6)])
		}
		if v, ok := a.Octets(); !ok || len(v) != n {
			t.Errorf("%d bytes: Octets = %d, %v", n, len(v), ok)
		}
	}
}
