package nvram

import (
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// Rename gives the entry oldName the name newName, replacing an entry of
// that name (usable or not). Its type, attributes and data are moved byte
// for byte, so an entry this package cannot read (an unknown mandatory
// attribute) can be renamed too. newName must be valid (ValidName); a
// missing oldName is an error matching fs.ErrNotExist. Renaming an entry
// to its own name changes nothing.
func (d *Directory) Rename(oldName, newName string) error {
	if err := ValidName(newName); err != nil {
		return err
	}
	i, ok := d.lookup(oldName)
	if !ok {
		return notExist(oldName)
	}
	if oldName == newName {
		return nil
	}
	// The entry is SEQUENCE { NVRAM, name }: keep the NVRAM element as it is.
	s := cryptobyte.String(d.entries[i].raw)
	var seq, nv cryptobyte.String
	if !s.ReadASN1(&seq, asn1.SEQUENCE) || !seq.ReadASN1Element(&nv, asn1.SEQUENCE) {
		panic(fmt.Sprintf("nvram: BUG: parsed entry %q is not a SEQUENCE holding an NVRAM SEQUENCE", oldName))
	}
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(nv)
		b.AddASN1(asn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(newName)) })
	})
	raw, err := b.Bytes()
	if err != nil {
		return fmt.Errorf("nvram: renaming %q: %w", oldName, err)
	}
	var p parser
	de, err := p.parseEntry(raw)
	if err != nil {
		panic(fmt.Sprintf("nvram: BUG: renamed entry %q does not parse back: %v", newName, err))
	}
	if err := d.Remove(oldName); err != nil {
		return err
	}
	if k, ok := d.find(newName); ok {
		d.entries[d.byName[k]] = de
	} else {
		d.entries = append(d.entries, de)
		d.byName = append(d.byName[:k], append([]int32{int32(len(d.entries) - 1)}, d.byName[k:]...)...)
	}
	d.changed = true
	return nil
}
