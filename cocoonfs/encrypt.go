package cocoonfs

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// Encryption of the three entity formats: the inverse of entity.go. Every
// IV is fresh from crypto/rand, as the format requires.

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("BUG: crypto/rand failed: %v", err))
	}
	return b
}

// encryptBlock returns an encrypted block of size bytes holding payload
// (at most the block's capacity; the rest of the capacity is zero-filled
// before encryption, the tail past the ciphertext is random).
func encryptBlock(c cipher.Block, payload []byte, size int) ([]byte, error) {
	bs := c.BlockSize()
	capacity := (size - bs) / bs * bs
	if len(payload) > capacity {
		return nil, fmt.Errorf("BUG: %d-byte payload exceeds the %d-byte capacity of an encrypted block", len(payload), capacity)
	}
	blk := randomBytes(size)
	pt := make([]byte, capacity)
	copy(pt, payload)
	cipher.NewCBCEncrypter(c, blk[:bs]).CryptBlocks(blk[bs:bs+capacity], pt)
	return blk, nil
}

// extentsLen is the length encrypted extents need for a payload: IV,
// payload, PKCS#7 padding.
func extentsLen(payloadLen, bs int) int {
	return bs + (payloadLen/bs+1)*bs
}

// encryptExtents returns total bytes: IV | CBC(payload | PKCS#7 | zero blocks).
func encryptExtents(c cipher.Block, payload []byte, total int) ([]byte, error) {
	bs := c.BlockSize()
	if total < extentsLen(len(payload), bs) || total%bs != 0 {
		return nil, fmt.Errorf("BUG: %d bytes cannot hold an encrypted %d-byte payload", total, len(payload))
	}
	// Encrypt in place in the output: one large buffer, not two.
	out := make([]byte, total)
	copy(out[:bs], randomBytes(bs))
	copy(out[bs:], payload)
	pad := bs - len(payload)%bs
	for i := 0; i < pad; i++ {
		out[bs+len(payload)+i] = byte(pad)
	}
	cipher.NewCBCEncrypter(c, out[:bs]).CryptBlocks(out[bs:], out[bs:])
	return out, nil
}

// chainCapacity is the payload one extent of a chain carries, given its
// length in bytes (the next-extent pointer and, for the last extent, the
// padding come out of it).
func (ch *chain) capacity(extentBytes int, first bool) int {
	bs := ch.c.BlockSize()
	hdr := ch.tagLen()
	if first {
		hdr += ch.hdrLen + bs
	}
	return (extentBytes-hdr)/bs*bs - 8
}

func (ch *chain) tagLen() int {
	if ch.mac == nil {
		return 0
	}
	return ch.mac().Size()
}

// encode encrypts payload into the given extents (their bytes in order, the
// first extent's plaintext header already in place at its start). Extents
// must be exactly enough: each but the last filled to capacity.
func (ch *chain) encode(payload []byte, extents []disk.Extent, bufs [][]byte) error {
	bs := ch.c.BlockSize()
	tagLen := ch.tagLen()
	var iv, prevTag []byte
	rest := payload
	for i, buf := range bufs {
		first, last := i == 0, i == len(bufs)-1
		pos := 0
		if first {
			pos = ch.hdrLen
		}
		tagPos := pos
		pos += tagLen
		if first {
			iv = randomBytes(bs)
			copy(buf[pos:], iv)
			pos += bs
		}
		capacity := ch.capacity(len(buf), first)
		ctLen := capacity + 8
		pt := make([]byte, ctLen)
		next := disk.NilExtentPtr
		if !last {
			p, err := disk.NewExtentPtr(extents[i+1].Start, extents[i+1].Len, false)
			if err != nil {
				return err
			}
			next = p
		}
		binary.LittleEndian.PutUint64(pt, uint64(next))
		n := copy(pt[8:], rest)
		rest = rest[n:]
		if last {
			if len(rest) > 0 || 8+n+1 > ctLen {
				return fmt.Errorf("BUG: chained extents too small for a %d-byte payload", len(payload))
			}
			pad := bs - (8+n)%bs
			for j := 0; j < pad; j++ {
				pt[8+n+j] = byte(pad)
			}
		} else if n < capacity {
			return fmt.Errorf("BUG: chained extent %d not filled to capacity", i)
		}
		// Alignment padding (empty for all registered ciphers) sits between
		// the header and the ciphertext, which ends the extent.
		ct := buf[len(buf)-ctLen:]
		copy(buf[pos:len(buf)-ctLen], randomBytes(len(buf)-ctLen-pos))
		cipher.NewCBCEncrypter(ch.c, iv).CryptBlocks(ct, pt)
		if ch.mac != nil {
			tag := ch.computeTag(buf, tagPos, tagLen, iv, prevTag, first)
			copy(buf[tagPos:], tag)
			prevTag = tag
		}
		iv = append([]byte(nil), ct[len(ct)-bs:]...)
	}
	return nil
}

// encryptFile encrypts a file's contents into the encrypted extents format,
// sized to whole allocation blocks.
func (f *FS) encryptFile(ino uint64, data []byte) ([]byte, error) {
	ab := f.layout.AllocBlockSize()
	c := f.keys.blockCipher(ino, subdomainData)
	n := (uint64(extentsLen(len(data), c.BlockSize())) + ab - 1) / ab
	return encryptExtents(c, data, int(n*ab))
}

// encryptIndexNode encodes one inode index node (a leaf or an internal
// node) and encrypts it as an encrypted block of the node's size.
func (f *FS) encryptIndexNode(leaf *disk.LeafNode, inner *disk.InternalNode) ([]byte, error) {
	l := f.layout
	c := f.keys.blockCipher(inoIndexRoot, subdomainData)
	bs := uint64(c.BlockSize())
	var pt []byte
	var err error
	size := l.IndexInternalSize()
	if leaf != nil {
		size = l.IndexLeafSize()
		pt, err = disk.EncodeLeafNode(*leaf, int((size-bs)/bs*bs))
	} else {
		pt, err = disk.EncodeInternalNode(*inner, int((size-bs)/bs*bs))
	}
	if err != nil {
		return nil, err
	}
	return encryptBlock(c, pt, int(size))
}
