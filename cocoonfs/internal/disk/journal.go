package disk

import (
	"bytes"
	"encoding/binary"
)

// Journal log head (reference journal/log.rs, head_extent_physical_location()
// and plaintext_header_*; encryption_entities.rs EncryptedChainedExtentsLayout;
// extents_layout.rs):
//
//   - Location: the image header end (static header blocks + mutable header
//     blocks, in Allocation Blocks) rounded up to the journal block, the larger
//     of IO Block and Authentication Tree Data Block.
//   - Plaintext header: magic 'CCFSJRNL' (8, exempt from the protections) |
//     integrity section (protOff 0) | aux head pointers (2 x 8).
//   - Length: the smallest extent holding plaintext header + IV (one cipher
//     block) + inline auth tag (preauth digest) + encrypted payload of zero
//     bytes, where the payload region still holds the 8-byte next-extent
//     pointer padded to the cipher block; rounded up to Allocation Blocks and
//     then to the journal block. At most 64 Allocation Blocks.

// JournalPlaintextHeaderLen returns the length of the journal log head's
// plaintext header.
func JournalPlaintextHeaderLen(l Layout) int { return 8 + IntegrityLen(l) + 16 }

// JournalLogHeadOffset returns the byte offset of the journal log head extent.
func JournalLogHeadOffset(h StaticHeader, rootDigestLen, cipherBlockLen, preauthDigestLen int) uint64 {
	l := h.Layout
	end := h.Len() + MutableHeaderPaddedLen(l, rootDigestLen, cipherBlockLen, preauthDigestLen)
	return roundUp(end, l.journalBlockLog2()+uint(l.AllocBlockLog2128)+7)
}

// JournalLogHeadLen returns the journal log head extent's length in bytes.
func JournalLogHeadLen(l Layout, cipherBlockLen, preauthDigestLen int) (uint64, error) {
	if err := checkDigestLens("journal log head", cipherBlockLen, preauthDigestLen); err != nil {
		return 0, err
	}
	payload := 8 + (cipherBlockLen-8%cipherBlockLen)%cipherBlockLen
	total := uint64(JournalPlaintextHeaderLen(l) + cipherBlockLen + preauthDigestLen + payload)
	blocks := roundUp(total, uint(l.AllocBlockLog2128)+7) >> (uint(l.AllocBlockLog2128) + 7)
	if blocks > MaxExtentAllocBlocks {
		return 0, errf(ErrUnsupported, "journal log head needs %d Allocation Blocks, more than %d", blocks, MaxExtentAllocBlocks)
	}
	blocks = roundUp(blocks, l.journalBlockLog2())
	return blocks << (uint(l.AllocBlockLog2128) + 7), nil
}

// JournalState tells whether a journal is pending.
type JournalState int

// Journal states reported by DecodeJournalLogHead.
const (
	JournalEmpty  JournalState = iota // no magic: nothing to replay
	JournalActive                     // magic present and integrity verified: replay
	JournalTorn                       // magic present, integrity check failed: not active
)

// String returns the state name.
func (s JournalState) String() string {
	switch s {
	case JournalEmpty:
		return "empty"
	case JournalActive:
		return "active"
	case JournalTorn:
		return "torn"
	}
	return "invalid"
}

// JournalHead is the decoded journal log head plaintext header.
type JournalHead struct {
	State    JournalState
	AuxHeads [2]ExtentPtr // valid only if Active; they take precedence over the mutable header's
	// PayloadOffset is where the encrypted chained extent data (in the
	// reference's order: inline auth tag, IV, random padding, ciphertext
	// aligned to the extent end) begins within the head extent.
	PayloadOffset int
}

// DecodeJournalLogHead decodes the journal log head extent b (JournalLogHeadLen
// bytes). If the journal is active, the integrity protections are removed from
// b in place, so b holds what the inline authentication and decryption
// expect. A torn head is reported as JournalTorn with a nil error: per the
// spec the journal is then not active.
func DecodeJournalLogHead(b []byte, l Layout) (JournalHead, error) {
	hl := JournalPlaintextHeaderLen(l)
	if len(b) < hl || len(b) < 128 {
		return JournalHead{}, errf(ErrCorrupt, "journal log head: %d bytes, need at least %d", len(b), max(hl, 128))
	}
	jh := JournalHead{PayloadOffset: hl}
	if !bytes.Equal(b[:8], magicJournal) {
		return jh, nil
	}
	if err := VerifyAndRemoveIntegrity(b, 8, 0, l); err != nil {
		jh.State = JournalTorn
		return jh, nil
	}
	jh.State = JournalActive
	jh.AuxHeads[0] = ReadExtentPtr(b[hl-16:])
	jh.AuxHeads[1] = ReadExtentPtr(b[hl-8:])
	if err := CheckAuxHeads(jh.AuxHeads, l); err != nil {
		return JournalHead{}, err
	}
	return jh, nil
}

// EncodeJournalLogHeadPlaintext writes the plaintext header into the head
// extent b (whose remainder the caller has already filled with the encrypted
// chained extent data) and applies the integrity protections, assuming a
// cleared first device IO Block on the medium.
// Layout: 'CCFSJRNL' | integrity | aux heads 2 x u64le | chained extent data.
func EncodeJournalLogHeadPlaintext(b []byte, l Layout, auxHeads [2]ExtentPtr) error {
	hl := JournalPlaintextHeaderLen(l)
	if len(b) < hl {
		return errf(errArg, "journal log head: %d bytes, need at least %d", len(b), hl)
	}
	copy(b, magicJournal)
	auxHeads[0].Append(b[hl-16 : hl-16])
	auxHeads[1].Append(b[hl-8 : hl-8])
	return ApplyIntegrity(b, 8, 0, l)
}

// Journal log payload field tags.
const (
	tagAuthTreeExtents  = 1
	tagBitmapExtents    = 2
	tagBitmapDigests    = 3
	tagApplyWrites      = 4
	tagAuthTreeUpdates  = 5
	tagTrim             = 6
	tagStagingDisguise  = 7
	lastMandatoryTag    = tagAuthTreeUpdates
	lastKnownJournalTag = tagStagingDisguise
)

// DigestRecord is an entry of the allocation bitmap file fragments'
// authentication digests field.
type DigestRecord struct {
	Block  uint64 // Authentication Tree Data Block index (absolute)
	Digest []byte // auth_tree_data_hmac_hash_alg digest
}

// WriteRecord is an entry of the writes application script, in IO Blocks.
type WriteRecord struct{ Target, Source, Len uint64 }

// Range is a start and a length; the unit depends on the field.
type Range struct{ Start, Len uint64 }

// StagingDisguise holds the journal staging copy disguising parameters.
type StagingDisguise struct {
	Cipher, KeyBits uint16
	Key, IVKey      []byte
}

// JournalLog is the decrypted journal log payload. Units: extents in
// Allocation Blocks; BitmapDigests and AuthTreeUpdates in Authentication Tree
// Data Blocks; ApplyWrites and Trim in IO Blocks. Positions are absolute (the
// deltas are resolved). A nil Trim means the field is absent.
type JournalLog struct {
	AuthTreeExtents   []Extent
	BitmapExtents     []Extent
	BitmapDigests     []DigestRecord
	BitmapDigestsHMAC []byte // preauth_cca_protection_hmac_hash_alg HMAC over the field
	ApplyWrites       []WriteRecord
	AuthTreeUpdates   []Range
	Trim              []Range
	Disguise          *StagingDisguise
}

// DecodeJournalLog decodes a decrypted journal log payload (PKCS#7 padding
// already stripped). dataDigestLen is the auth_tree_data_hmac_hash_alg digest
// length (see cocoonfs-notes.md: the reference decoder wrongly uses the
// preauth length; both agree at 128-bit strength), preauthDigestLen the
// preauth_cca_protection_hmac_hash_alg one. Byte slices alias payload.
func DecodeJournalLog(payload []byte, dataDigestLen, preauthDigestLen int) (JournalLog, error) {
	if err := checkDigestLens("journal log", dataDigestLen, preauthDigestLen); err != nil {
		return JournalLog{}, err
	}
	var jl JournalLog
	off := 0
	lastTag := 0
	for off < len(payload) {
		tag := int(payload[off])
		if tag&0x80 != 0 {
			return JournalLog{}, errf(ErrCorrupt, "journal log field at offset %d: multi-byte tag %#x", off, tag)
		}
		if tag == 0 || tag > lastKnownJournalTag {
			return JournalLog{}, errf(ErrCorrupt, "journal log field at offset %d: unknown tag %d", off, tag)
		}
		if tag <= lastTag {
			return JournalLog{}, errf(ErrCorrupt, "journal log field at offset %d: tag %d after tag %d", off, tag, lastTag)
		}
		if lastTag < lastMandatoryTag && tag != lastTag+1 {
			return JournalLog{}, errf(ErrCorrupt, "journal log field at offset %d: tag %d, expected tag %d", off, tag, lastTag+1)
		}
		lastTag = tag
		off++
		n, k, err := ReadULEB128(payload[off:])
		if err != nil {
			return JournalLog{}, errf(ErrCorrupt, "journal log field %d length: %v", tag, err)
		}
		off += k
		if n > uint64(len(payload)-off) {
			return JournalLog{}, errf(ErrCorrupt, "journal log field %d: length %d exceeds the remaining %d bytes", tag, n, len(payload)-off)
		}
		v := payload[off : off+int(n) : off+int(n)]
		off += int(n)
		if err := jl.decodeField(tag, v, dataDigestLen, preauthDigestLen); err != nil {
			return JournalLog{}, err
		}
	}
	if lastTag < lastMandatoryTag {
		return JournalLog{}, errf(ErrCorrupt, "journal log: truncated, mandatory field %d missing", lastTag+1)
	}
	return jl, nil
}

func (jl *JournalLog) decodeField(tag int, v []byte, dataDigestLen, preauthDigestLen int) error {
	exact := func(consumed int) error {
		if consumed != len(v) {
			return errf(ErrCorrupt, "journal log field %d: %d excess bytes", tag, len(v)-consumed)
		}
		return nil
	}
	var err error
	var n int
	switch tag {
	case tagAuthTreeExtents, tagBitmapExtents:
		var ext []Extent
		if ext, n, err = DecodeExtentsList(v); err != nil {
			return errf(ErrCorrupt, "journal log field %d: %v", tag, err)
		}
		if tag == tagAuthTreeExtents {
			jl.AuthTreeExtents = ext
		} else {
			jl.BitmapExtents = ext
		}
		return exact(n)
	case tagBitmapDigests:
		if len(v) < preauthDigestLen {
			return errf(ErrCorrupt, "journal log field %d: %d bytes, shorter than its HMAC (%d)", tag, len(v), preauthDigestLen)
		}
		recs := v[:len(v)-preauthDigestLen]
		jl.BitmapDigestsHMAC = v[len(recs):]
		var next uint64
		for len(recs) > 0 {
			d, k, err := ReadULEB128(recs)
			if err != nil {
				return errf(ErrCorrupt, "journal log field %d record %d: %v", tag, len(jl.BitmapDigests), err)
			}
			blk := next + d
			if blk < next || blk == ^uint64(0) {
				return errf(ErrCorrupt, "journal log field %d record %d: block %d+%d overflows", tag, len(jl.BitmapDigests), next, d)
			}
			recs = recs[k:]
			if len(recs) < dataDigestLen {
				return errf(ErrCorrupt, "journal log field %d record %d: digest truncated (%d of %d bytes)", tag, len(jl.BitmapDigests), len(recs), dataDigestLen)
			}
			jl.BitmapDigests = append(jl.BitmapDigests, DigestRecord{blk, recs[:dataDigestLen:dataDigestLen]})
			recs = recs[dataDigestLen:]
			next = blk + 1
		}
		return nil
	case tagApplyWrites:
		jl.ApplyWrites, n, err = decodeApplyWrites(v)
		if err != nil {
			return err
		}
		return exact(n)
	case tagAuthTreeUpdates, tagTrim:
		var r []Range
		if r, n, err = decodeRanges(v, tag); err != nil {
			return err
		}
		if tag == tagTrim {
			if r == nil {
				r = []Range{}
			}
			jl.Trim = r
		} else {
			jl.AuthTreeUpdates = r
		}
		return exact(n)
	case tagStagingDisguise:
		if len(v) < 4 {
			return errf(ErrCorrupt, "journal log field %d: %d bytes, need at least 4", tag, len(v))
		}
		d := &StagingDisguise{Cipher: binary.BigEndian.Uint16(v), KeyBits: binary.BigEndian.Uint16(v[2:])}
		if d.KeyBits == 0 || d.KeyBits%8 != 0 {
			return errf(ErrCorrupt, "journal log field %d: key size %d bits", tag, d.KeyBits)
		}
		kl := int(d.KeyBits / 8)
		if len(v) != 4+2*kl {
			return errf(ErrCorrupt, "journal log field %d: %d bytes, expected %d for %d bit keys", tag, len(v), 4+2*kl, d.KeyBits)
		}
		d.Key, d.IVKey = v[4:4+kl:4+kl], v[4+kl:]
		jl.Disguise = d
		return nil
	}
	return errf(ErrCorrupt, "journal log: unknown tag %d", tag)
}

// decodeApplyWrites decodes (target delta uleb, source delta sleb, len uleb)
// records up to the (0, 0, 0) terminator.
func decodeApplyWrites(v []byte) ([]WriteRecord, int, error) {
	var recs []WriteRecord
	var tEnd, sEnd uint64
	off := 0
	for {
		td, k, err := ReadULEB128(v[off:])
		if err != nil {
			return nil, 0, errf(ErrCorrupt, "apply writes record %d target: %v", len(recs), err)
		}
		off += k
		sd, k, err := ReadSLEB128(v[off:])
		if err != nil {
			return nil, 0, errf(ErrCorrupt, "apply writes record %d source: %v", len(recs), err)
		}
		off += k
		n, k, err := ReadULEB128(v[off:])
		if err != nil {
			return nil, 0, errf(ErrCorrupt, "apply writes record %d length: %v", len(recs), err)
		}
		off += k
		if n == 0 {
			if td != 0 || sd != 0 {
				return nil, 0, errf(ErrCorrupt, "apply writes record %d: zero length", len(recs))
			}
			return recs, off, nil
		}
		t := tEnd + td
		s := sEnd + uint64(sd)
		if t < tEnd || t+n < t || s+n < s {
			return nil, 0, errf(ErrCorrupt, "apply writes record %d: target %d or source %d + length %d overflows", len(recs), t, s, n)
		}
		recs = append(recs, WriteRecord{t, s, n})
		tEnd, sEnd = t+n, s+n
	}
}

// decodeRanges decodes (start delta uleb, len uleb) records up to (0, 0).
func decodeRanges(v []byte, tag int) ([]Range, int, error) {
	var r []Range
	var end uint64
	off := 0
	for {
		d, k, err := ReadULEB128(v[off:])
		if err != nil {
			return nil, 0, errf(ErrCorrupt, "journal log field %d record %d start: %v", tag, len(r), err)
		}
		off += k
		n, k, err := ReadULEB128(v[off:])
		if err != nil {
			return nil, 0, errf(ErrCorrupt, "journal log field %d record %d length: %v", tag, len(r), err)
		}
		off += k
		if n == 0 {
			if d != 0 {
				return nil, 0, errf(ErrCorrupt, "journal log field %d record %d: zero length", tag, len(r))
			}
			return r, off, nil
		}
		s := end + d
		if s < end || s+n < s {
			return nil, 0, errf(ErrCorrupt, "journal log field %d record %d: start %d + length %d overflows", tag, len(r), s, n)
		}
		r = append(r, Range{s, n})
		end = s + n
	}
}

// AppendJournalLog appends the TLV encoding of jl (the plaintext that gets
// encrypted into the journal's chained extents).
// Layout: { tag u8 | len uleb128 | value }* in increasing tag order.
func AppendJournalLog(dst []byte, jl JournalLog) []byte {
	field := func(tag byte, v []byte) {
		dst = append(dst, tag)
		dst = AppendULEB128(dst, uint64(len(v)))
		dst = append(dst, v...)
	}
	field(tagAuthTreeExtents, AppendExtentsList(nil, jl.AuthTreeExtents))
	field(tagBitmapExtents, AppendExtentsList(nil, jl.BitmapExtents))
	v := AppendBitmapDigestRecords(nil, jl.BitmapDigests)
	field(tagBitmapDigests, append(v, jl.BitmapDigestsHMAC...))
	v = nil
	var tEnd, sEnd uint64
	for _, w := range jl.ApplyWrites {
		v = AppendULEB128(v, w.Target-tEnd)
		v = AppendSLEB128(v, int64(w.Source-sEnd))
		v = AppendULEB128(v, w.Len)
		tEnd, sEnd = w.Target+w.Len, w.Source+w.Len
	}
	field(tagApplyWrites, append(v, 0, 0, 0))
	field(tagAuthTreeUpdates, appendRanges(nil, jl.AuthTreeUpdates))
	if jl.Trim != nil {
		field(tagTrim, appendRanges(nil, jl.Trim))
	}
	if d := jl.Disguise; d != nil {
		v = binary.BigEndian.AppendUint16(nil, d.Cipher)
		v = binary.BigEndian.AppendUint16(v, d.KeyBits)
		v = append(append(v, d.Key...), d.IVKey...)
		field(tagStagingDisguise, v)
	}
	return dst
}

// AppendBitmapDigestRecords appends the records of the allocation bitmap
// file fragments' digests field without its HMAC: the bytes that HMAC covers.
// Layout: { uleb128 block delta | digest }*, deltas from the previous
// record's block end.
func AppendBitmapDigestRecords(dst []byte, recs []DigestRecord) []byte {
	var next uint64
	for _, r := range recs {
		dst = AppendULEB128(dst, r.Block-next)
		dst = append(dst, r.Digest...)
		next = r.Block + 1
	}
	return dst
}

func appendRanges(dst []byte, r []Range) []byte {
	var end uint64
	for _, x := range r {
		dst = AppendULEB128(dst, x.Start-end)
		dst = AppendULEB128(dst, x.Len)
		end = x.Start + x.Len
	}
	return append(dst, 0, 0)
}
