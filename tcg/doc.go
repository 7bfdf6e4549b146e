// Package tcg maps TCG Algorithm Registry identifiers to Go implementations
// of the cryptographic primitives a CocoonFS image may name.
//
// A CocoonFS image header records its algorithms as TCG Algorithm Registry
// identifiers (TPM_ALG_ID values, see [AlgID]) rather than as names, because
// the format originates in the cocoon-tpm project and shares the TPM 2.0
// vocabulary. This package turns those identifiers into working code:
//
//   - hashes: SHA-1, SHA-256/384/512, SHA3-256/384/512 and SM3 ([LookupHash]),
//     with HMAC on top of any of them ([Hash.NewHMAC]);
//   - block ciphers: AES, Camellia and SM4 ([LookupBlockCipher]);
//   - CBC mode without padding ([CBCEncrypt], [CBCDecrypt]), the only mode
//     CocoonFS uses;
//   - the TPM 2.0 key derivation function KDFa ([KDFa]), which CocoonFS uses
//     for deriving its root key and all subkeys.
//
// An identifier this package cannot serve yields an error wrapping
// [ErrUnsupportedAlgorithm], so callers can tell "this image needs something
// we lack" apart from corrupt input.
//
// # Implementations
//
// SHA-1/2/3, HMAC, AES and CBC come from the Go standard library (SHA-3 from
// crypto/sha3, which needs Go 1.24). SM3 and SM4 come from
// github.com/emmansun/gmsm, which is maintained and has assembly fast paths.
//
// Camellia (RFC 3713) is implemented here, because there is no well-kept Go
// library for it: golang.org/x/crypto never gained one and the third-party
// packages are unmaintained. The implementation follows RFC 3713 directly and
// is checked against the RFC's own vectors, other published vectors and, when
// available, the openssl command. It uses precomputed S-box/P-function tables
// for speed, so its timing depends on key and data through cache effects: it
// is NOT constant-time. That is acceptable for an offline image tool but
// should be kept in mind before using it where an attacker can time it.
package tcg
