package tcg

import (
	"errors"
	"fmt"
	"github.com/sealfs/sealfs/errs"
)

// AlgID is an algorithm identifier from the TCG Algorithm Registry (the
// TPM_ALG_ID values of TPM 2.0). CocoonFS stores algorithms in this form, so
// the numeric values are part of the on-disk format.
type AlgID uint16

// Identifiers from the TCG Algorithm Registry that CocoonFS images may name.
const (
	AlgSHA1     AlgID = 0x0004 // TPM_ALG_SHA1
	AlgAES      AlgID = 0x0006 // TPM_ALG_AES
	AlgSHA256   AlgID = 0x000B // TPM_ALG_SHA256
	AlgSHA384   AlgID = 0x000C // TPM_ALG_SHA384
	AlgSHA512   AlgID = 0x000D // TPM_ALG_SHA512
	AlgNull     AlgID = 0x0010 // TPM_ALG_NULL
	AlgSM3_256  AlgID = 0x0012 // TPM_ALG_SM3_256
	AlgSM4      AlgID = 0x0013 // TPM_ALG_SM4
	AlgCamellia AlgID = 0x0026 // TPM_ALG_CAMELLIA
	AlgSHA3_256 AlgID = 0x0027 // TPM_ALG_SHA3_256
	AlgSHA3_384 AlgID = 0x0028 // TPM_ALG_SHA3_384
	AlgSHA3_512 AlgID = 0x0029 // TPM_ALG_SHA3_512
	AlgCBC      AlgID = 0x0042 // TPM_ALG_CBC
)

// algNames holds the registry names without the "TPM_ALG_" prefix, which is
// how the TCG specifications and tpm2-tools spell them in prose.
var algNames = map[AlgID]string{
	AlgSHA1:     "SHA1",
	AlgAES:      "AES",
	AlgSHA256:   "SHA256",
	AlgSHA384:   "SHA384",
	AlgSHA512:   "SHA512",
	AlgNull:     "NULL",
	AlgSM3_256:  "SM3_256",
	AlgSM4:      "SM4",
	AlgCamellia: "CAMELLIA",
	AlgSHA3_256: "SHA3_256",
	AlgSHA3_384: "SHA3_384",
	AlgSHA3_512: "SHA3_512",
	AlgCBC:      "CBC",
}

// String returns the TCG registry name of id (for example "SHA256"), or the
// identifier in hexadecimal (for example "0x1234") if this package does not
// know it. Unknown ids print as numbers so that they can be looked up in the
// registry by whoever reads the message.
func (id AlgID) String() string {
	if name, ok := algNames[id]; ok {
		return name
	}
	return fmt.Sprintf("0x%04x", uint16(id))
}

// describe renders id for error messages with both name and number, because
// the number is what appears in a hex dump of an image header.
func (id AlgID) describe() string {
	if name, ok := algNames[id]; ok {
		return fmt.Sprintf("%s (0x%04x)", name, uint16(id))
	}
	return id.String()
}

// ErrUnsupportedAlgorithm is wrapped by every error that reports an
// algorithm identifier (or identifier/key size combination) this package
// cannot provide. It is the project-wide errs.ErrUnsupportedAlgorithm, so
// callers of any sealfs store can test for it.
var ErrUnsupportedAlgorithm = errs.ErrUnsupportedAlgorithm

// ErrKeySize is wrapped by errors reporting a key whose length does not
// match the cipher. The messages give the length only, never key material.
var ErrKeySize = errors.New("invalid key size")

// ErrInvalidLength is wrapped by errors reporting a data, IV or output length
// that the operation cannot accept, such as CBC input that is not a whole
// number of blocks.
var ErrInvalidLength = errors.New("invalid length")
