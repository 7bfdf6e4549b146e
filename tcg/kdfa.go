package tcg

import (
	"encoding/binary"
	"fmt"
	"math"
)

// KDFa is the key derivation function of TPM 2.0 Library Part 1
// ("Architecture"), section "KDFa()": SP 800-108 counter mode with HMAC
// over the hash hashAlg. It returns ceil(bits/8) bytes, the leading bytes of
//
//	HMAC(key, [1]_32 || label || 0x00 || contextU || contextV || [bits]_32) ||
//	HMAC(key, [2]_32 || label || 0x00 || contextU || contextV || [bits]_32) || ...
//
// with counters and bits as 32-bit big-endian integers. If bits is not a
// multiple of 8, the excess high-order bits of the first byte are cleared,
// as the TPM specification prescribes, so the result is a bits-bit
// big-endian number.
//
// The 0x00 after label is the label's C-string terminator, and exactly when
// it is added matters for compatibility. CocoonFS images are written by the
// cocoon-tpm project, whose KDFa (crypto/src/kdf/tcg_tpm2_kdf_a.rs in
// github.com/coconut-svsm/cocoon-tpm, function label_zero_sep) adds the
// 0x00 if and only if label is non-empty and does not already end in 0x00.
// This function does the same, which means:
//
//   - "abc" and "abc\x00" derive the same key;
//   - an empty (or nil) label contributes nothing, not even the 0x00.
//
// The last point is where implementations differ: the TCG reference code
// (CryptKDFa in CryptHash.c) also appends 0x00 for an empty label, and
// go-tpm appends 0x00 unconditionally. CocoonFS itself always passes a
// one-byte, non-zero label (the key purpose), for which all of them agree.
//
// contextU and contextV may be nil. bits must be between 0 and 2^32-1,
// since it is encoded in 32 bits; otherwise the error wraps
// ErrInvalidLength. An unknown hashAlg gives an error wrapping
// ErrUnsupportedAlgorithm.
func KDFa(hashAlg AlgID, key, label, contextU, contextV []byte, bits int) ([]byte, error) {
	h, err := LookupHash(hashAlg)
	if err != nil {
		return nil, err
	}
	if bits < 0 || uint64(bits) > math.MaxUint32 {
		return nil, fmt.Errorf("tcg: KDFa: %w: %d output bits", ErrInvalidLength, bits)
	}

	out := make([]byte, (bits+7)/8)
	if len(label) > 0 && label[len(label)-1] != 0 {
		// Copy instead of appending in place: label's spare capacity
		// belongs to the caller.
		label = append(label[:len(label):len(label)], 0)
	}
	var bitsBE, counterBE [4]byte
	binary.BigEndian.PutUint32(bitsBE[:], uint32(bits))

	mac := h.NewHMAC(key)
	var block [64]byte // large enough for every digest in the registry
	for counter, off := uint32(1), 0; off < len(out); counter++ {
		mac.Reset()
		binary.BigEndian.PutUint32(counterBE[:], counter)
		mac.Write(counterBE[:])
		mac.Write(label)
		mac.Write(contextU)
		mac.Write(contextV)
		mac.Write(bitsBE[:])
		off += copy(out[off:], mac.Sum(block[:0]))
	}
	// The tail of the last block is key material nobody asked for.
	clear(block[:])

	if rem := bits % 8; rem != 0 {
		out[0] &= 0xff >> (8 - rem)
	}
	return out, nil
}
