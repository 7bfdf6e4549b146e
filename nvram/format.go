package nvram

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/sealfs/sealfs/errs"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// Layout (docs/format/nvram.md):
//
//	Directory ::= SET OF Entry                 -- CER: 31 80 <entries> 00 00 (definite length accepted)
//	Entry     ::= SEQUENCE { nvram NVRAM, name UTF8String OPTIONAL }            -- DER
//	NVRAM     ::= SEQUENCE { type IA5String, mandatory SET OF Attribute,
//	                         optional SET OF Attribute, data OCTET STRING }
//	Attribute ::= CHOICE { flag IA5String, valued SEQUENCE { name IA5String, value ANY... } }

// AttrRealSize names the attribute that holds how many bytes of an entry's
// data are in use: a read-write attribute, so its value is an OCTET STRING
// (the byte count, big-endian unsigned, 1 to 8 bytes; this package writes 8).
// Data beyond it is padding that readers drop. Every entry this package
// writes carries it in its mandatory set; TypeTPM entries must.
const AttrRealSize = "realsize"

// TypeTPM is the type of TPM state entries.
const TypeTPM = "tpm"

// Limits on the names this package writes. Reading accepts what the format
// allows, so entries written by others are kept even when they exceed them.
const (
	MaxNameLen = 255 // bytes of an entry name (a file name in a FUSE view or an export)
	MaxTypeLen = 255 // characters of a type or attribute name
)

// Attribute is one element of an entry's mandatory or optional set: a flag
// (an IA5String: a name without a value) or a name with a value (a SEQUENCE
// whose first element is the name).
type Attribute struct {
	Name string
	// Flag: the attribute is encoded as a bare IA5String; Value is empty.
	Flag bool
	// Value is the DER encoding of the value elements that follow the name,
	// concatenated (read-write metadata is one OCTET STRING; read-only
	// metadata uses its natural universal type). It is kept byte for byte.
	Value []byte
}

// FlagAttribute returns a flag attribute (a name without a value).
func FlagAttribute(name string) Attribute { return Attribute{Name: name, Flag: true} }

// OctetsAttribute returns a read-write attribute whose value is one OCTET
// STRING holding v.
func OctetsAttribute(name string, v []byte) Attribute {
	// DER by hand: tag, minimal length, contents (cryptobyte's builder
	// would panic on lengths it cannot encode).
	n := len(v)
	hdr := []byte{0x04, byte(n)}
	if n >= 0x80 {
		var lb []byte
		for m := n; m > 0; m >>= 8 {
			lb = append([]byte{byte(m)}, lb...)
		}
		hdr = append([]byte{0x04, 0x80 | byte(len(lb))}, lb...)
	}
	return Attribute{Name: name, Value: append(hdr, v...)}
}

// Octets returns the contents of an attribute whose value is exactly one
// OCTET STRING (read-write metadata).
func (a Attribute) Octets() ([]byte, bool) {
	if a.Flag {
		return nil, false
	}
	s := cryptobyte.String(a.Value)
	var v cryptobyte.String
	if !s.ReadASN1(&v, asn1.OCTET_STRING) || !s.Empty() {
		return nil, false
	}
	return v, true
}

func (a Attribute) String() string {
	if a.Flag {
		return a.Name
	}
	if v, ok := a.Octets(); ok {
		return fmt.Sprintf("%s=%q", a.Name, v)
	}
	return fmt.Sprintf("%s=<%d bytes DER>", a.Name, len(a.Value))
}

// Entry is one named blob with its metadata.
type Entry struct {
	Name string
	// Type names the kind of state: TypeTPM, or anything else (other
	// parties may use a UUID string to avoid clashes). IA5 characters.
	Type string
	// Mandatory holds the mandatory attributes other than realsize, which
	// the store writes itself. A reader that does not understand one of
	// them must not use the entry.
	Mandatory []Attribute
	// Optional holds attributes a reader may ignore; unknown ones are kept
	// byte for byte when the directory is rewritten.
	Optional []Attribute
	// Data is the entry's contents (realsize bytes).
	Data []byte
}

// ErrUnknownMandatory: an entry carries a mandatory attribute this package
// does not understand, so the entry cannot be used (it is kept unchanged
// when the directory is rewritten, and other entries stay usable). It
// wraps errs.ErrUnsupported. The error names the entry and attribute:
// see UnknownMandatoryError.
var ErrUnknownMandatory = fmt.Errorf("nvram: unknown mandatory attribute: %w", errs.ErrUnsupported)

// UnknownMandatoryError reports the entry and the attribute; it matches
// ErrUnknownMandatory and errs.ErrUnsupported.
type UnknownMandatoryError struct {
	Entry     string
	Attribute string
}

func (e *UnknownMandatoryError) Error() string {
	if e.Entry == "" {
		return fmt.Sprintf("nvram: an unnamed entry carries the mandatory attribute %q, which this version does not understand; the entry is kept but cannot be used", e.Attribute)
	}
	return fmt.Sprintf("nvram: entry %q carries the mandatory attribute %q, which this version does not understand; the entry is kept but cannot be used", e.Entry, e.Attribute)
}

func (e *UnknownMandatoryError) Is(target error) bool {
	return target == ErrUnknownMandatory || target == errs.ErrUnsupported
}

// knownMandatory lists the mandatory attributes this package understands.
var knownMandatory = map[string]bool{AttrRealSize: true}

func corruptf(format string, args ...any) error {
	return fmt.Errorf("nvram: %w: %s", errs.ErrCorrupt, fmt.Sprintf(format, args...))
}

// MaxEntries bounds the entries of a directory, so that its entry table
// (about 170 bytes an entry) stays bounded however small the entries are.
const MaxEntries = 1 << 16

// MaxAttributes bounds the attributes of one entry (both sets together),
// so that checking them needs bounded scratch space. The proposal expects
// attributes to be few and small.
const MaxAttributes = 1024

// dirEntry is one parsed entry. Its byte slices point into raw, the
// entry's DER encoding, which is re-emitted unchanged when the directory is
// rewritten unless the entry is replaced. Attributes are checked when the
// entry is parsed and decoded only when asked for.
type dirEntry struct {
	raw       []byte
	named     bool   // the optional name is present
	name      []byte // the name, if named
	typ       []byte
	mand, opt []byte // contents of the two attribute SETs
	data      []byte // the data in use (realsize bytes)
	err       error  // non-nil: the entry is unusable (unknown mandatory attribute, bad realsize)
}

// parser holds scratch space reused across the entries of one directory.
type parser struct {
	names [][]byte
}

// parseEntry decodes the DER encoding of one entry. A structurally invalid
// encoding is an error; semantic problems (an unknown mandatory attribute,
// a bad realsize) make the entry unusable but not the directory.
func (p *parser) parseEntry(raw []byte) (dirEntry, error) {
	s := cryptobyte.String(raw)
	var seq, nv, typ, mand, opt, data cryptobyte.String
	if !s.ReadASN1(&seq, asn1.SEQUENCE) || !s.Empty() {
		return dirEntry{}, corruptf("entry is not a DER SEQUENCE")
	}
	if !seq.ReadASN1(&nv, asn1.SEQUENCE) {
		return dirEntry{}, corruptf("entry does not start with the NVRAM SEQUENCE")
	}
	d := dirEntry{raw: raw}
	if !seq.Empty() {
		var name cryptobyte.String
		if !seq.ReadASN1(&name, asn1.UTF8String) || !seq.Empty() {
			return dirEntry{}, corruptf("entry: after the NVRAM SEQUENCE only a UTF8String name may follow")
		}
		if !utf8.Valid(name) {
			return dirEntry{}, corruptf("entry name %q is not valid UTF-8", name)
		}
		d.named, d.name = true, name
	}
	if !nv.ReadASN1(&typ, asn1.IA5String) || !nv.ReadASN1(&mand, asn1.SET) || !nv.ReadASN1(&opt, asn1.SET) ||
		!nv.ReadASN1(&data, asn1.OCTET_STRING) || !nv.Empty() {
		return dirEntry{}, corruptf("%s: NVRAM is not SEQUENCE { IA5String, SET, SET, OCTET STRING }", d.what())
	}
	if !isIA5(typ) {
		return dirEntry{}, corruptf("%s: type is not an IA5String", d.what())
	}
	d.typ, d.mand, d.opt, d.data = typ, mand, opt, data
	p.names = p.names[:0]
	realSize := -1
	for i, set := range [2]cryptobyte.String{mand, opt} {
		it := attrIter{rest: set}
		for it.next() {
			if len(p.names) == MaxAttributes {
				return dirEntry{}, corruptf("%s: more than %d attributes", d.what(), MaxAttributes)
			}
			p.names = append(p.names, it.name)
			switch {
			case d.err != nil:
			case string(it.name) == AttrRealSize:
				n, err := decodeRealSize(it.value, it.flag)
				if err != nil {
					d.err = fmt.Errorf("%s: %w", d.what(), err)
				}
				realSize = int(min(n, uint64(len(data))+1))
			case i == 0 && !knownMandatory[string(it.name)]:
				d.err = &UnknownMandatoryError{Entry: string(d.name), Attribute: string(it.name)}
			}
		}
		if it.err != nil {
			return dirEntry{}, fmt.Errorf("%s: %s attributes: %w", d.what(), [2]string{"mandatory", "optional"}[i], it.err)
		}
	}
	slices.SortFunc(p.names, bytes.Compare)
	for i := 1; i < len(p.names) && d.err == nil; i++ {
		if bytes.Equal(p.names[i-1], p.names[i]) {
			d.err = corruptf("%s: attribute %q appears twice", d.what(), p.names[i])
		}
	}
	switch {
	case d.err != nil:
	case realSize > len(data):
		d.err = corruptf("%s: realsize exceeds the %d data bytes", d.what(), len(data))
	case realSize >= 0:
		d.data = data[:realSize]
	case string(typ) == TypeTPM:
		d.err = corruptf("%s: a %q entry lacks the mandatory %q attribute", d.what(), TypeTPM, AttrRealSize)
	}
	return d, nil
}

func (d *dirEntry) what() string {
	if d.named {
		return fmt.Sprintf("entry %q", d.name)
	}
	return "unnamed entry"
}

// attributes decodes one attribute SET (already checked by parseEntry),
// leaving out realsize, which the store manages.
func attributes(set []byte) []Attribute {
	var out []Attribute
	for it := (attrIter{rest: set}); it.next(); {
		if string(it.name) != AttrRealSize {
			out = append(out, Attribute{Name: string(it.name), Flag: it.flag, Value: bytes.Clone(it.value)})
		}
	}
	return out
}

func decodeRealSize(value []byte, flag bool) (uint64, error) {
	v, ok := Attribute{Flag: flag, Value: value}.Octets()
	if !ok || len(v) == 0 || len(v) > 8 {
		return 0, corruptf("%q is not an OCTET STRING of 1 to 8 bytes", AttrRealSize)
	}
	var n uint64
	for _, c := range v {
		n = n<<8 | uint64(c)
	}
	return n, nil
}

func realSizeAttribute(n int) Attribute {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], uint64(n))
	return OctetsAttribute(AttrRealSize, v[:])
}

// attrIter walks the contents of a SET OF Attribute, checking each: its
// name, and its value elements (well-formed DER) or that it is a flag.
type attrIter struct {
	rest  cryptobyte.String
	name  []byte
	value []byte
	flag  bool
	err   error
}

func (it *attrIter) next() bool {
	if it.err != nil || it.rest.Empty() {
		return false
	}
	var name, value cryptobyte.String
	it.flag = false
	switch {
	case it.rest.PeekASN1Tag(asn1.IA5String):
		if !it.rest.ReadASN1(&name, asn1.IA5String) {
			it.err = corruptf("malformed flag attribute")
			return false
		}
		it.flag = true
	case it.rest.PeekASN1Tag(asn1.SEQUENCE):
		if !it.rest.ReadASN1(&value, asn1.SEQUENCE) || !value.ReadASN1(&name, asn1.IA5String) {
			it.err = corruptf("attribute SEQUENCE does not start with an IA5String name")
			return false
		}
		if !wellFormed(value) {
			it.err = corruptf("attribute %q: value is not well-formed DER", name)
			return false
		}
	default:
		it.err = corruptf("attribute is neither an IA5String nor a SEQUENCE")
		return false
	}
	if !isIA5(name) {
		it.err = corruptf("attribute name %q is not an IA5String", name)
		return false
	}
	it.name, it.value = name, value
	return true
}

// wellFormed reports whether v is a sequence of complete DER elements.
func wellFormed(v cryptobyte.String) bool {
	for !v.Empty() {
		var elem cryptobyte.String
		var tag asn1.Tag
		if !v.ReadAnyASN1Element(&elem, &tag) {
			return false
		}
	}
	return true
}

func isIA5(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// Directory is the decoded NVRAM directory: every entry, usable or not.
// A Directory from Store.Snapshot is a private copy; one passed to the
// function given to Store.Update is the transaction's working copy. A
// Directory is not safe for concurrent use.
type Directory struct {
	entries []dirEntry // in the order read, then appended
	byName  []int32    // indices of entries with a non-empty name, sorted by name
	changed bool       // Put or Remove was called
}

// ErrDirectoryTooLarge: the directory exceeds MaxDirectorySize.
var ErrDirectoryTooLarge = errors.New("nvram: directory too large")

// MaxDirectorySize bounds the directory file (all entries with their data).
// The whole directory is held in memory, so this bounds the memory a store
// uses; vTPM state is tens of kilobytes.
const MaxDirectorySize = 64 << 20

// ParseDirectory decodes a directory: a SET OF Entry in CER form
// (indefinite length) or with a definite length. It is strict about
// structure (every entry well-formed DER, names unique, at most
// MaxAttributes attributes an entry) and tolerant of content: entries with
// unknown mandatory attributes are returned as unusable (see Info.Err),
// unknown optional attributes are kept. It does not copy b, which must not
// change while the Directory is in use; its own memory is a small multiple
// of len(b).
func ParseDirectory(b []byte) (*Directory, error) {
	if len(b) > MaxDirectorySize {
		return nil, fmt.Errorf("%w: %d bytes (at most %d)", ErrDirectoryTooLarge, len(b), MaxDirectorySize)
	}
	// Frame first: find the entries and count them, so that the entry
	// table is allocated once and bounded by MaxEntries.
	s := cryptobyte.String(b)
	var body cryptobyte.String
	indefinite := len(s) >= 2 && s[0] == 0x31 && s[1] == 0x80
	if indefinite {
		// CER: constructed, indefinite length, closed by end-of-contents.
		body = s[2:]
	} else if !s.ReadASN1(&body, asn1.SET) {
		return nil, corruptf("directory is not a SET")
	}
	n := 0
	for rest := body; ; n++ {
		if indefinite && len(rest) >= 2 && rest[0] == 0 && rest[1] == 0 {
			s = rest[2:]
			break
		}
		if !indefinite && rest.Empty() {
			break
		}
		if n == MaxEntries {
			return nil, corruptf("directory holds more than %d entries", MaxEntries)
		}
		var raw cryptobyte.String
		if !rest.ReadASN1Element(&raw, asn1.SEQUENCE) {
			if indefinite {
				return nil, corruptf("directory: entry %d is not a DER SEQUENCE, or the end-of-contents octets are missing", n)
			}
			return nil, corruptf("directory: entry %d is not a DER SEQUENCE", n)
		}
	}
	if !s.Empty() {
		return nil, corruptf("directory: %d bytes after its end", len(s))
	}
	d := &Directory{entries: make([]dirEntry, 0, n)}
	var p parser
	for i := 0; i < n; i++ {
		var raw cryptobyte.String
		body.ReadASN1Element(&raw, asn1.SEQUENCE) // framed above
		e, err := p.parseEntry(raw)
		if err != nil {
			return nil, fmt.Errorf("directory entry %d: %w", i, err)
		}
		if len(e.name) > 0 {
			d.byName = append(d.byName, int32(i))
		}
		d.entries = append(d.entries, e)
	}
	slices.SortFunc(d.byName, func(a, b int32) int { return bytes.Compare(d.entries[a].name, d.entries[b].name) })
	for i := 1; i < len(d.byName); i++ {
		if n := d.entries[d.byName[i]].name; bytes.Equal(d.entries[d.byName[i-1]].name, n) {
			return nil, corruptf("directory holds two entries named %q", n)
		}
	}
	return d, nil
}

// NewDirectory returns an empty directory.
func NewDirectory() *Directory { return &Directory{} }

// find returns the position in byName where name is or would be.
func (d *Directory) find(name string) (int, bool) {
	return slices.BinarySearchFunc(d.byName, name, func(i int32, n string) int {
		return strings.Compare(string(d.entries[i].name), n)
	})
}

// lookup returns the index of the entry named name.
func (d *Directory) lookup(name string) (int, bool) {
	if name == "" {
		return 0, false
	}
	k, ok := d.find(name)
	if !ok {
		return 0, false
	}
	return int(d.byName[k]), true
}

// Encode returns the directory in CER form: a SET with indefinite length
// whose elements, each an entry in DER, are sorted by their encodings (the
// SET OF order X.690 prescribes). Entries that were read and not replaced
// are emitted byte for byte as they were read.
func (d *Directory) Encode() []byte {
	raws := make([][]byte, 0, len(d.entries))
	n := 4
	for _, e := range d.entries {
		raws = append(raws, e.raw)
		n += len(e.raw)
	}
	slices.SortFunc(raws, bytes.Compare)
	out := make([]byte, 0, n)
	out = append(out, 0x31, 0x80)
	for _, r := range raws {
		out = append(out, r...)
	}
	return append(out, 0, 0)
}

// Info describes one entry without its data.
type Info struct {
	// Name is the entry's name; empty for an entry without one (such
	// entries are kept and listed but cannot be addressed).
	Name string
	Type string
	// Size is the number of data bytes (realsize).
	Size int64
	// Mandatory and Optional list the attributes (realsize excluded).
	Mandatory []Attribute
	Optional  []Attribute
	// Err is non-nil when the entry cannot be used: it carries a
	// mandatory attribute this package does not understand
	// (ErrUnknownMandatory) or a malformed realsize (errs.ErrCorrupt).
	Err error
}

// List describes every entry, named ones sorted by name first, then the
// unnamed ones in directory order.
func (d *Directory) List() []Info {
	list := make([]Info, 0, len(d.entries))
	info := func(e *dirEntry) Info {
		return Info{Name: string(e.name), Type: string(e.typ), Size: int64(len(e.data)),
			Mandatory: attributes(e.mand), Optional: attributes(e.opt), Err: e.err}
	}
	for _, i := range d.byName {
		list = append(list, info(&d.entries[i]))
	}
	for i := range d.entries {
		if len(d.entries[i].name) == 0 {
			list = append(list, info(&d.entries[i]))
		}
	}
	return list
}

// Len returns the number of entries, usable or not.
func (d *Directory) Len() int { return len(d.entries) }

// Get returns a copy of the named entry. A missing entry is an error
// matching fs.ErrNotExist; an unusable one returns its Info.Err.
func (d *Directory) Get(name string) (*Entry, error) {
	i, ok := d.lookup(name)
	if !ok {
		return nil, notExist(name)
	}
	e := &d.entries[i]
	if e.err != nil {
		return nil, e.err
	}
	return &Entry{
		Name: string(e.name), Type: string(e.typ),
		Mandatory: attributes(e.mand), Optional: attributes(e.opt),
		Data: bytes.Clone(e.data),
	}, nil
}

// Has reports whether an entry with that name exists (usable or not).
func (d *Directory) Has(name string) bool {
	_, ok := d.lookup(name)
	return ok
}

// Put creates or replaces the entry e.Name (an unusable entry of that name
// included). The entry is encoded now: realsize is added to its mandatory
// set, and both attribute sets are sorted into DER order. e is not
// retained.
func (d *Directory) Put(e *Entry) error {
	raw, err := encodeEntry(e)
	if err != nil {
		return err
	}
	var p parser
	de, err := p.parseEntry(raw)
	// An unknown mandatory attribute is the caller's right (a newer
	// format's entry); anything else means the encoder broke.
	if err != nil || de.err != nil && !errors.Is(de.err, ErrUnknownMandatory) {
		panic(fmt.Sprintf("nvram: BUG: encoded entry %q does not parse back: %v %v", e.Name, err, de.err))
	}
	k, ok := d.find(e.Name)
	if ok {
		d.entries[d.byName[k]] = de
	} else {
		d.entries = append(d.entries, de)
		d.byName = slices.Insert(d.byName, k, int32(len(d.entries)-1))
	}
	d.changed = true
	return nil
}

// Remove deletes the named entry (usable or not); a missing one is an
// error matching fs.ErrNotExist.
func (d *Directory) Remove(name string) error {
	k, ok := d.find(name)
	if !ok || name == "" {
		return notExist(name)
	}
	i := int(d.byName[k])
	d.entries = slices.Delete(d.entries, i, i+1)
	d.byName = slices.Delete(d.byName, k, k+1)
	for j, x := range d.byName {
		if int(x) > i {
			d.byName[j] = x - 1
		}
	}
	d.changed = true
	return nil
}

// ValidName reports why name cannot name an entry this package writes, or
// nil: 1 to MaxNameLen bytes of UTF-8, no '/' or NUL, not "." or "..",
// so that every entry is also a valid file name (export, FUSE view).
func ValidName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("nvram: empty entry name: %w", errInvalid)
	case len(name) > MaxNameLen:
		return fmt.Errorf("nvram: entry name of %d bytes (at most %d): %w", len(name), MaxNameLen, errInvalid)
	case !utf8.ValidString(name):
		return fmt.Errorf("nvram: entry name %q is not valid UTF-8: %w", name, errInvalid)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("nvram: entry name %q contains '/' or NUL: %w", name, errInvalid)
	case name == "." || name == "..":
		return fmt.Errorf("nvram: entry name %q is reserved: %w", name, errInvalid)
	}
	return nil
}

// validIdent checks a type or attribute name: printable ASCII (a subset of
// IA5String), 1 to MaxTypeLen characters.
func validIdent(what, s string) error {
	if s == "" || len(s) > MaxTypeLen {
		return fmt.Errorf("nvram: %s %q: want 1 to %d characters: %w", what, s, MaxTypeLen, errInvalid)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return fmt.Errorf("nvram: %s %q: only printable ASCII characters are allowed: %w", what, s, errInvalid)
		}
	}
	return nil
}

// encodeEntry validates e and returns its DER encoding.
func encodeEntry(e *Entry) ([]byte, error) {
	if err := ValidName(e.Name); err != nil {
		return nil, err
	}
	if err := validIdent("type", e.Type); err != nil {
		return nil, err
	}
	seen := map[string]bool{AttrRealSize: true}
	for _, a := range slices.Concat(e.Mandatory, e.Optional) {
		if err := validIdent("attribute name", a.Name); err != nil {
			return nil, err
		}
		if seen[a.Name] {
			if a.Name == AttrRealSize {
				return nil, fmt.Errorf("nvram: entry %q: %q is written by the store, not given: %w", e.Name, AttrRealSize, errInvalid)
			}
			return nil, fmt.Errorf("nvram: entry %q: attribute %q given twice: %w", e.Name, a.Name, errInvalid)
		}
		seen[a.Name] = true
		if err := checkValue(a); err != nil {
			return nil, fmt.Errorf("nvram: entry %q: %w", e.Name, err)
		}
	}
	mand, err := encodeAttributes(append([]Attribute{realSizeAttribute(len(e.Data))}, e.Mandatory...))
	if err != nil {
		return nil, err
	}
	opt, err := encodeAttributes(e.Optional)
	if err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(asn1.IA5String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(e.Type)) })
			b.AddASN1(asn1.SET, func(b *cryptobyte.Builder) {
				for _, a := range mand {
					b.AddBytes(a)
				}
			})
			b.AddASN1(asn1.SET, func(b *cryptobyte.Builder) {
				for _, a := range opt {
					b.AddBytes(a)
				}
			})
			b.AddASN1OctetString(e.Data)
		})
		b.AddASN1(asn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(e.Name)) })
	})
	raw, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("nvram: entry %q: %w", e.Name, err)
	}
	return raw, nil
}

// checkValue requires a flag to have no value and a value to be a sequence
// of well-formed DER elements.
func checkValue(a Attribute) error {
	if a.Flag && len(a.Value) != 0 {
		return fmt.Errorf("attribute %q is a flag but has a value: %w", a.Name, errInvalid)
	}
	if !wellFormed(a.Value) {
		return fmt.Errorf("attribute %q: value is not well-formed DER: %w", a.Name, errInvalid)
	}
	return nil
}

// encodeAttributes returns each attribute's DER encoding, sorted as DER
// orders the elements of a SET OF.
func encodeAttributes(as []Attribute) ([][]byte, error) {
	out := make([][]byte, 0, len(as))
	for _, a := range as {
		var b cryptobyte.Builder
		if a.Flag {
			b.AddASN1(asn1.IA5String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(a.Name)) })
		} else {
			b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(asn1.IA5String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(a.Name)) })
				b.AddBytes(a.Value)
			})
		}
		enc, err := b.Bytes()
		if err != nil {
			return nil, fmt.Errorf("nvram: attribute %q: %w", a.Name, err)
		}
		out = append(out, enc)
	}
	slices.SortFunc(out, bytes.Compare)
	return out, nil
}
