package cocoonfs

import (
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"hash"
	"sync"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
	"github.com/sealfs/sealfs/tcg"
)

// keyPurpose is the KDFa label naming what a derived key is for.
type keyPurpose byte

const (
	purposeDerivation keyPurpose = 1
	purposeAuthRoot   keyPurpose = 2
	purposeAuthData   keyPurpose = 3
	purposePreauth    keyPurpose = 4
	purposeEncryption keyPurpose = 5
)

// Subdomains of an inode's keys. The reference implementation numbers them
// data = 2, extents list = 1 (the spec text has them the other way round);
// the reference's images are the contract.
const (
	subdomainNone        uint32 = 0
	subdomainExtentsList uint32 = 1
	subdomainData        uint32 = 2
)

// Inode numbers with a fixed role.
const (
	inoAuthTree      uint64 = 1
	inoAllocBitmap   uint64 = 2
	inoIndexRoot     uint64 = 3
	inoJournalLog    uint64 = 5
	inoUpdateCounter uint64 = 6
	// FirstUserInode is the lowest inode number applications may use; 0 means
	// "no inode" and 1-15 are reserved for the filesystem.
	FirstUserInode uint64 = 16
)

// algorithms are the layout's algorithm identifiers resolved to
// implementations.
type algorithms struct {
	nodeHash, dataHMAC, rootHMAC, preauthHMAC, kdf *tcg.Hash
	cipher                                         *tcg.BlockCipher
}

func resolveAlgorithms(l disk.Layout) (*algorithms, error) {
	var a algorithms
	for _, h := range []struct {
		dst   **tcg.Hash
		id    uint16
		field string
	}{
		{&a.nodeHash, l.AuthTreeNodeHash, "auth_tree_node_hash_alg"},
		{&a.dataHMAC, l.AuthTreeDataHMACHash, "auth_tree_data_hmac_hash_alg"},
		{&a.rootHMAC, l.AuthTreeRootHMACHash, "auth_tree_root_hmac_hash_alg"},
		{&a.preauthHMAC, l.PreauthHMACHash, "preauth_cca_protection_hmac_hash_alg"},
		{&a.kdf, l.KDFHash, "kdf_hash_alg"},
	} {
		hh, err := tcg.LookupHash(tcg.AlgID(h.id))
		if err != nil {
			return nil, fmt.Errorf("cocoonfs: %s: %w", h.field, err)
		}
		*h.dst = hh
	}
	c, err := tcg.LookupBlockCipher(tcg.AlgID(l.Cipher), int(l.CipherKeyBits))
	if err != nil {
		return nil, fmt.Errorf("cocoonfs: block_cipher_alg: %w", err)
	}
	a.cipher = c
	return &a, nil
}

// keyID names one derived subkey.
type keyID struct {
	domain    uint64
	subdomain uint32
	purpose   keyPurpose
}

// keyring derives subkeys from the root key and caches them: every inode
// read needs a few, and KDFa costs two HMACs per output block.
type keyring struct {
	algs *algorithms
	root []byte

	mu      sync.Mutex
	cache   map[keyID][]byte       // derived subkeys
	ciphers map[keyID]cipher.Block // expanded encryption keys
}

// maxCachedKeys bounds each of the keyring's caches: files have a key of
// their own, and a long-running mount may touch any number of them.
const maxCachedKeys = 4096

// evictOne makes room in a full cache by dropping any entry (map order is
// random). A dropped subkey is not cleared: a caller may still be reading
// it; wipe clears what is cached when the image is closed.
func evictOne[V any](m map[keyID]V) {
	if len(m) < maxCachedKeys {
		return
	}
	for id := range m {
		delete(m, id)
		return
	}
}

// newKeyring runs the raw key through the root-key KDF. The KDF hash is fixed
// to SHA-512 so that downgrading the header's algorithms cannot weaken the
// root key; the context binds every algorithm choice and the salt.
func newKeyring(raw, salt []byte, l disk.Layout, algs *algorithms) (*keyring, error) {
	ctx := make([]byte, 0, 8+1+7*2+2+1+len(salt))
	ctx = append(ctx, "COCOONFS"...)
	ctx = append(ctx, 1) // format version
	for _, id := range []uint16{l.KDFHash, l.AuthTreeRootHMACHash, l.AuthTreeNodeHash, l.AuthTreeDataHMACHash, l.PreauthHMACHash, uint16(tcg.AlgCBC), l.Cipher, l.CipherKeyBits} {
		ctx = binary.BigEndian.AppendUint16(ctx, id)
	}
	ctx = append(ctx, byte(len(salt)))
	ctx = append(ctx, salt...)
	root, err := tcg.KDFa(tcg.AlgSHA512, raw, []byte{byte(purposeDerivation)}, ctx, nil, 8*algs.kdf.Size)
	if err != nil {
		return nil, fmt.Errorf("cocoonfs: root key derivation: %w", err)
	}
	return &keyring{algs: algs, root: root, cache: make(map[keyID][]byte), ciphers: make(map[keyID]cipher.Block)}, nil
}

// key returns the subkey for (domain, subdomain, purpose). The returned slice
// is shared; callers must not modify it.
func (k *keyring) key(domain uint64, subdomain uint32, purpose keyPurpose) []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keyLocked(keyID{domain, subdomain, purpose})
}

func (k *keyring) keyLocked(id keyID) []byte {
	domain, subdomain, purpose := id.domain, id.subdomain, id.purpose
	if key, ok := k.cache[id]; ok {
		return key
	}
	var bits int
	switch purpose {
	case purposeDerivation:
		bits = 8 * k.algs.kdf.Size
	case purposeAuthRoot:
		bits = 8 * k.algs.rootHMAC.Size
	case purposeAuthData:
		bits = 8 * k.algs.dataHMAC.Size
	case purposePreauth:
		bits = 8 * k.algs.preauthHMAC.Size
	case purposeEncryption:
		bits = k.algs.cipher.KeyBits
	}
	ctx := binary.LittleEndian.AppendUint64(make([]byte, 0, 12), domain)
	ctx = binary.LittleEndian.AppendUint32(ctx, subdomain)
	key, err := tcg.KDFa(k.algs.kdf.ID, k.root, []byte{byte(purpose)}, ctx, nil, bits)
	if err != nil {
		// The algorithms were resolved at open; KDFa cannot fail after that.
		panic(fmt.Sprintf("BUG: subkey derivation with a resolved hash failed: %v", err))
	}
	evictOne(k.cache)
	k.cache[id] = key
	return key
}

// blockCipher returns the cipher for (domain, subdomain), its key expanded
// once: every read of a bitmap block, an index node or a file piece needs
// one. The cipher is safe for concurrent use.
func (k *keyring) blockCipher(domain uint64, subdomain uint32) cipher.Block {
	id := keyID{domain, subdomain, purposeEncryption}
	k.mu.Lock()
	defer k.mu.Unlock()
	if b, ok := k.ciphers[id]; ok {
		return b
	}
	b, err := k.algs.cipher.NewCipher(k.keyLocked(id))
	if err != nil {
		panic(fmt.Sprintf("BUG: cipher rejected a key of its own key size: %v", err))
	}
	evictOne(k.ciphers)
	k.ciphers[id] = b
	return b
}

func (k *keyring) hmac(h *tcg.Hash, domain uint64, subdomain uint32, purpose keyPurpose) hash.Hash {
	return h.NewHMAC(k.key(domain, subdomain, purpose))
}

// wipe zeroes the root key and every cached subkey.
func (k *keyring) wipe() {
	k.mu.Lock()
	defer k.mu.Unlock()
	clear(k.root)
	for id, key := range k.cache {
		clear(key)
		delete(k.cache, id)
	}
	clear(k.ciphers)
}
