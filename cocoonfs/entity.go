package cocoonfs

import (
	"crypto/cipher"
	"crypto/hmac"
	"encoding/binary"
	"hash"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// The three encryption entity formats (spec "Encryption entity formats").
// Callers authenticate ciphertext before handing it to these functions.

// decryptBlock decrypts an "encrypted block": IV | CBC ciphertext | random
// fill. It returns the maximal payload: the block minus the IV, rounded down
// to the cipher block size.
func decryptBlock(c cipher.Block, blk []byte) ([]byte, error) {
	bs := c.BlockSize()
	if len(blk) < 2*bs {
		return nil, corruptf("encrypted block of %d bytes is too short", len(blk))
	}
	n := (len(blk) - bs) / bs * bs
	out := make([]byte, n)
	cipher.NewCBCDecrypter(c, blk[:bs]).CryptBlocks(out, blk[bs:bs+n])
	return out, nil
}

// unpad strips the trailing zero fill and the PKCS#7 padding before it.
func unpad(pt []byte, bs int) ([]byte, error) {
	end := len(pt)
	for end > 0 && pt[end-1] == 0 {
		end--
	}
	if end == 0 {
		return nil, corruptf("decrypted entity has no padding")
	}
	n := int(pt[end-1])
	if n > bs || n > end {
		return nil, corruptf("invalid padding length %d", n)
	}
	for _, b := range pt[end-n : end] {
		if int(b) != n {
			return nil, corruptf("invalid padding bytes")
		}
	}
	return pt[:end-n], nil
}

// nilChainPtr terminates a chain of extents: the reference writes all-ones.
const nilChainPtr = ^uint64(0)

// chain describes one "encrypted chained extents" entity.
type chain struct {
	hdrLen int          // plaintext header at the first extent's start (a magic)
	c      cipher.Block // decryption
	// Inline authentication (the preauthentication CCA protection); nil when
	// the entity is authenticated through the authentication tree instead.
	mac func() hash.Hash
	aad []byte
	// read returns one extent's bytes, already authenticated when mac is nil.
	read func(e disk.Extent) ([]byte, error)
	// maxExtents bounds the chain walk so a crafted loop ends with an error.
	maxExtents        int
	cipherID, keyBits uint16
}

// decode walks the chain from first and returns the entity's payload.
//
// Extent layout (reference order): first extent = header | tag | IV | ciphertext,
// continuation = tag | ciphertext, where the tag is present only with inline
// authentication and the CBC chaining carries over from extent to extent.
// Each extent's plaintext starts with the extent pointer of the next one.
func (ch *chain) decode(first disk.Extent) ([]byte, error) {
	bs := ch.c.BlockSize()
	var (
		payload []byte
		iv      []byte
		prevTag []byte
		ext     = first
		tagLen  int
	)
	if ch.mac != nil {
		tagLen = ch.mac().Size()
	}
	for i := 0; ; i++ {
		if i >= ch.maxExtents {
			return nil, corruptf("chained extents: more than %d extents (loop?)", ch.maxExtents)
		}
		raw, err := ch.read(ext)
		if err != nil {
			return nil, err
		}
		isFirst := i == 0
		pos := 0
		if isFirst {
			pos = ch.hdrLen
		}
		tagPos := pos
		pos += tagLen
		ctStart := pos
		if isFirst {
			ctStart += bs
		}
		if ctStart > len(raw) {
			return nil, corruptf("chained extent at allocation block %d is too short", ext.Start)
		}
		ctLen := (len(raw) - ctStart) / bs * bs
		if ctLen < bs || (!isFirst && ctLen <= 8) {
			return nil, corruptf("chained extent at allocation block %d holds no payload", ext.Start)
		}
		if isFirst {
			iv = raw[tagPos+tagLen : ctStart]
		}
		if ch.mac != nil {
			if err := ch.checkTag(raw, tagPos, tagLen, iv, prevTag, isFirst); err != nil {
				return nil, authf("chained extent at allocation block %d: inline authentication failed", ext.Start)
			}
			prevTag = raw[tagPos : tagPos+tagLen]
		}
		// Ciphertext is taken from the extent's end: alignment padding (empty
		// for every registered cipher) sits before it.
		ct := raw[len(raw)-ctLen:]
		pt := make([]byte, ctLen)
		cipher.NewCBCDecrypter(ch.c, iv).CryptBlocks(pt, ct)
		iv = ct[len(ct)-bs:]
		next := binary.LittleEndian.Uint64(pt[:8])
		payload = append(payload, pt[8:]...)
		if next == nilChainPtr {
			break
		}
		start, n, indirect := disk.ExtentPtr(next).Decode()
		if indirect || disk.ExtentPtr(next).IsNil() {
			return nil, corruptf("chained extent at allocation block %d links to an invalid extent pointer %#x", ext.Start, next)
		}
		ext = disk.Extent{Start: start, Len: n}
	}
	return unpad(payload, bs)
}

// computeTag is an extent's inline HMAC: over the extent with the tag slot
// replaced by zeros (first extent) or the previous extent's tag, then the
// incoming IV (continuations), the associated data, its length, the cipher
// parameters and the subject suffix.
func (ch *chain) computeTag(raw []byte, tagPos, tagLen int, iv, prevTag []byte, isFirst bool) []byte {
	m := ch.mac()
	m.Write(raw[:tagPos])
	if isFirst {
		m.Write(make([]byte, tagLen))
	} else {
		m.Write(prevTag)
	}
	m.Write(raw[tagPos+tagLen:])
	if !isFirst {
		m.Write(iv)
	}
	m.Write(ch.aad)
	var tail [8 + 4 + 3]byte
	binary.LittleEndian.PutUint64(tail[0:], uint64(len(ch.aad)))
	binary.BigEndian.PutUint16(tail[8:], ch.cipherID)
	binary.BigEndian.PutUint16(tail[10:], ch.keyBits)
	if !isFirst {
		tail[12] = 1
	}
	tail[13] = 0 // context format version
	tail[14] = authSubjectChainedExtents
	m.Write(tail[:])
	return m.Sum(nil)
}

func (ch *chain) checkTag(raw []byte, tagPos, tagLen int, iv, prevTag []byte, isFirst bool) error {
	if !hmac.Equal(ch.computeTag(raw, tagPos, tagLen, iv, prevTag, isFirst), raw[tagPos:tagPos+tagLen]) {
		return ErrAuthentication
	}
	return nil
}

// Authentication subject identifiers (spec "Authentication contexts").
const (
	authSubjectImageContext   = 1
	authSubjectTreeRoot       = 2
	authSubjectTreeNode       = 3
	authSubjectTreeDataBlock  = 4
	authSubjectChainedExtents = 5
	authSubjectIndexNode      = 6
)
