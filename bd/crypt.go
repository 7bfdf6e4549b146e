package bd

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"golang.org/x/crypto/argon2"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/errs"
)

// CryptKeySize is the size of a Crypt key: two AES-256 keys, as dm-crypt's
// aes-xts-plain64 with a 512-bit key.
const CryptKeySize = 64

// Crypt encrypts every block with AES-256-XTS, the tweak being the block
// number as a little-endian 64-bit value zero-padded to 16 bytes
// (dm-crypt's aes-xts-plain64; see docs/format/bd.md). It gives
// confidentiality only: a modified, swapped or replayed ciphertext block
// decrypts to garbage without any error. Stack it on Verity (NewVeriCrypt)
// for integrity.
//
// Crypt holds no mutable state and is safe for concurrent use if the lower
// device is.
type Crypt struct {
	under blockdev.Device
	c     *xtsCipher
	bs    int
	size  int64
	bufs  sync.Pool // *[]byte of ciphertext scratch
}

// CryptOptions configure NewCrypt; nil means defaults.
type CryptOptions struct {
	// BlockSize is the XTS data unit: 512, 1024, 2048 or 4096 (0: 4096).
	BlockSize int
}

// NewCrypt returns an encrypting device over under with a 64-byte key
// (CryptKeySize). The key is copied into the cipher's schedule; the caller
// may clear its buffer afterwards. The size is under's size rounded down to
// whole blocks.
func NewCrypt(under blockdev.Device, key []byte, opts *CryptOptions) (*Crypt, error) {
	var o CryptOptions
	if opts != nil {
		o = *opts
	}
	bs, err := blockSizeOr(o.BlockSize)
	if err != nil {
		return nil, err
	}
	if len(key) != CryptKeySize {
		return nil, fmt.Errorf("bd: AES-256-XTS key is %d bytes, want %d: %w", len(key), CryptKeySize, errs.ErrWrongKey)
	}
	c, err := newXTS(key)
	if err != nil {
		return nil, fmt.Errorf("bd: %w", err)
	}
	return &Crypt{under: under, c: c, bs: bs, size: under.Size() / int64(bs) * int64(bs)}, nil
}

// ReadAt implements blockdev.Device for whole blocks: it reads the
// ciphertext and decrypts it in p.
func (c *Crypt) ReadAt(p []byte, off int64) (int, error) {
	n, err := checkRead(len(p), off, c.size, c.bs)
	if err != nil || n == 0 {
		return 0, errOrEOF(err, len(p))
	}
	// A lower Verity returns the verified whole blocks before a bad one:
	// decrypt and return those, with its error.
	got, rerr := c.under.ReadAt(p[:n], off)
	if got == n && rerr == io.EOF {
		rerr = nil
	}
	if rerr == nil && got < n {
		rerr = io.ErrUnexpectedEOF
	}
	got -= got % c.bs
	clear(p[got:n])
	first := uint64(off / int64(c.bs))
	for i := 0; i < got; i += c.bs {
		c.c.Decrypt(p[i:i+c.bs], p[i:i+c.bs], first+uint64(i/c.bs))
	}
	if rerr != nil {
		return got, fmt.Errorf("bd: reading %d bytes at offset %d of the lower device: %w", n, off, rerr)
	}
	return n, eofIf(n < len(p))
}

// WriteAt implements blockdev.Device for whole blocks: it encrypts p into a
// scratch buffer and writes that with one WriteAt of the lower device.
func (c *Crypt) WriteAt(p []byte, off int64) (int, error) {
	if err := checkWrite(len(p), off, c.size, c.bs, blockdev.IsReadOnly(c.under)); err != nil {
		return 0, err
	}
	var ct []byte
	bp, _ := c.bufs.Get().(*[]byte)
	if bp != nil && cap(*bp) >= len(p) {
		ct = (*bp)[:len(p)]
	} else {
		ct = make([]byte, len(p))
		if len(p) <= 1<<20 {
			bp = &ct
		}
	}
	first := uint64(off / int64(c.bs))
	for i := 0; i < len(p); i += c.bs {
		c.c.Encrypt(ct[i:i+c.bs], p[i:i+c.bs], first+uint64(i/c.bs))
	}
	n, err := c.under.WriteAt(ct, off)
	if bp != nil {
		c.bufs.Put(bp)
	}
	return n, err
}

// Sync implements blockdev.Device.
func (c *Crypt) Sync() error { return c.under.Sync() }

// Size implements blockdev.Device.
func (c *Crypt) Size() int64 { return c.size }

// BlockSize implements blockdev.Device.
func (c *Crypt) BlockSize() int { return c.bs }

// ReadOnly implements blockdev.ReadOnlyDevice.
func (c *Crypt) ReadOnly() bool { return blockdev.IsReadOnly(c.under) }

// KDFParams are the Argon2id parameters that turn a passphrase into a Crypt
// key. Zero fields take DefaultKDFParams' values.
type KDFParams struct {
	Time      uint32 // passes
	MemoryKiB uint32
	Threads   uint8
}

// DefaultKDFParams follow RFC 9106's second recommended option (64 MiB,
// 3 passes, 4 lanes).
var DefaultKDFParams = KDFParams{Time: 3, MemoryKiB: 64 << 10, Threads: 4}

// KDF sidecar layout (little-endian; docs/format/bd.md):
// magic "SEALBDKF"(8) | version u16 =1 | flags u16 =0 | time u32 | memory KiB u32 |
// threads u8 | reserved(11) =0 | salt(32) | check(32) = HMAC-SHA256(key, "sealfs bd key check v1")
const (
	kdfMagic    = "SEALBDKF"
	kdfVersion  = 1
	kdfSaltSize = 32
	// KDFHeaderSize is the size of the KDF sidecar NewPassphraseKey returns.
	KDFHeaderSize = 96
	kdfCheckText  = "sealfs bd key check v1"
	kdfMaxMemory  = 4 << 20 // KiB: 4 GiB, refuse absurd parameters from a file
	kdfMaxTime    = 1000
)

// NewPassphraseKey derives a fresh Crypt key from a passphrase with a random
// salt and returns it with the sidecar (KDFHeaderSize bytes) that
// OpenPassphraseKey needs to derive it again. The sidecar is not secret. The
// caller owns key and should clear it after use.
func NewPassphraseKey(passphrase []byte, params *KDFParams) (key, sidecar []byte, err error) {
	p := DefaultKDFParams
	if params != nil {
		if params.Time != 0 {
			p.Time = params.Time
		}
		if params.MemoryKiB != 0 {
			p.MemoryKiB = params.MemoryKiB
		}
		if params.Threads != 0 {
			p.Threads = params.Threads
		}
	}
	if err := p.check(); err != nil {
		return nil, nil, err
	}
	h := make([]byte, KDFHeaderSize)
	copy(h, kdfMagic)
	binary.LittleEndian.PutUint16(h[8:], kdfVersion)
	binary.LittleEndian.PutUint32(h[12:], p.Time)
	binary.LittleEndian.PutUint32(h[16:], p.MemoryKiB)
	h[20] = p.Threads
	rand.Read(h[32:64])
	key = argon2.IDKey(passphrase, h[32:64], p.Time, p.MemoryKiB, p.Threads, CryptKeySize)
	copy(h[64:], keyCheck(key))
	return key, h, nil
}

func (p KDFParams) check() error {
	if p.Time == 0 || p.Time > kdfMaxTime || p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > kdfMaxMemory || p.Threads == 0 {
		return fmt.Errorf("bd: Argon2id parameters time %d, memory %d KiB, threads %d out of range", p.Time, p.MemoryKiB, p.Threads)
	}
	return nil
}

func keyCheck(key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(kdfCheckText))
	return m.Sum(nil)
}

// ParseKDFParams returns the Argon2id parameters a sidecar records, checking
// magic, version and flags in that order.
func ParseKDFParams(sidecar []byte) (KDFParams, error) {
	var p KDFParams
	switch {
	case len(sidecar) != KDFHeaderSize || string(sidecar[:8]) != kdfMagic:
		return p, fmt.Errorf("bd: not a KDF sidecar (bad size or magic): %w", errs.ErrCorrupt)
	case binary.LittleEndian.Uint16(sidecar[8:]) != kdfVersion:
		return p, fmt.Errorf("bd: KDF sidecar version %d: %w", binary.LittleEndian.Uint16(sidecar[8:]), errs.ErrUnsupported)
	case binary.LittleEndian.Uint16(sidecar[10:]) != 0:
		return p, fmt.Errorf("bd: KDF sidecar flags %#x: %w", binary.LittleEndian.Uint16(sidecar[10:]), errs.ErrUnsupported)
	}
	p = KDFParams{Time: binary.LittleEndian.Uint32(sidecar[12:]), MemoryKiB: binary.LittleEndian.Uint32(sidecar[16:]), Threads: sidecar[20]}
	if err := p.check(); err != nil {
		return p, fmt.Errorf("%w: %w", err, errs.ErrCorrupt)
	}
	return p, nil
}

// OpenPassphraseKey derives the Crypt key from a passphrase and the sidecar
// NewPassphraseKey returned. A wrong passphrase (or a sidecar whose salt,
// parameters or check value were altered) fails with errs.ErrWrongKey.
func OpenPassphraseKey(passphrase, sidecar []byte) ([]byte, error) {
	p, err := ParseKDFParams(sidecar)
	if err != nil {
		return nil, err
	}
	key := argon2.IDKey(passphrase, sidecar[32:64], p.Time, p.MemoryKiB, p.Threads, CryptKeySize)
	if !hmac.Equal(keyCheck(key), sidecar[64:96]) {
		clear(key)
		return nil, fmt.Errorf("bd: passphrase does not match the KDF sidecar: %w", errs.ErrWrongKey)
	}
	return key, nil
}
