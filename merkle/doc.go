// Package merkle computes and checks the three Merkle-tree formats sealfs
// must interoperate with byte for byte:
//
//   - the Fuchsia blob Merkle tree (blobfs, fxblob): the root names a blob,
//     and the tree lets a reader verify any 8 KiB block of the blob alone,
//     so a partial read never returns unverified bytes (Fuchsia*);
//   - the Linux fs-verity file digest, exactly what `fsverity digest`
//     prints (Fsverity*);
//   - the dm-verity hash device, exactly what `veritysetup format` writes,
//     and a verifier for it (Dmverity*), reused by the protected block
//     devices.
//
// The formats differ in small ways that all matter for interoperability
// (node identity prefixes, salt padding, how short blocks and empty inputs
// are treated, the order of levels on disk); the references are in
// ../shared/ref/merkle-formats.md and each function names the rule it
// follows. Everything streams: memory is proportional to the tree (or to
// one block per level), never to the data.
//
// Failed checks wrap ErrIntegrity, which matches errs.ErrAuthentication, so
// callers can test either with errors.Is. Malformed structures (a bad
// superblock) wrap errs.ErrCorrupt, and unknown algorithms
// errs.ErrUnsupportedAlgorithm.
package merkle

import (
	"errors"
	"fmt"

	"github.com/sealfs/sealfs/errs"
)

// ErrIntegrity reports that data or a tree does not match the trusted root.
// It wraps errs.ErrAuthentication: the stored bytes were altered.
var ErrIntegrity = fmt.Errorf("integrity check failed: %w", errs.ErrAuthentication)

// ErrInvalidName reports a string that is not a Merkle root name (64
// lowercase hex characters).
var ErrInvalidName = errors.New("invalid Merkle root name")
