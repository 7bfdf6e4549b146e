// Package disk encodes and decodes the on-medium structures of the CocoonFS
// format (see docs/format and the CocoonFS format specification): the image
// layout, the static, mutable and filesystem creation info headers, the common
// extent integrity protection and its checksum, extent and block pointers,
// extents lists, LEB128 integers, inode index node payloads, the journal log
// head plaintext header and decrypted journal log payload, and the auxiliary
// filesystem metadata payload.
//
// The package is deliberately pure: it performs no cryptography and no I/O.
// Callers read bytes from the medium, hand them to a decoder, and decrypt or
// authenticate whatever the decoder tells them is ciphertext. Algorithm ids are
// carried as plain uint16 values and digest or cipher block lengths are passed
// in as ints, so that the package does not depend on any crypto registry.
//
// Every decoder validates its input and reports problems as an error naming
// the offending field and value; no decoder panics on any input (the decoders
// are fuzzed). Errors wrap one of the sentinels below, test with errors.Is:
//
//   - ErrCorrupt: the bytes are structurally invalid.
//   - ErrTorn: an integrity protection check failed, i.e. the extent suffered
//     a torn or partial write, or was never written.
//   - ErrUnsupported: the bytes are valid but describe something this
//     implementation does not support, e.g. a format version other than 1.
//   - ErrNotCocoonFS: no CocoonFS header magic at all (see ProbeHeader).
//
// Where the specification is ambiguous, the reference implementation
// (coconut-svsm/cocoon-tpm, storage/src/fs/cocoonfs) decides; NOTES.md in this
// directory lists the facts taken from it.
package disk

import (
	"errors"
	"fmt"

	"github.com/sealfs/sealfs/errs"
)

var (
	// ErrCorrupt reports structurally invalid bytes. It is the project-wide
	// errs.ErrCorrupt.
	ErrCorrupt = errs.ErrCorrupt
	// ErrTorn reports a failed integrity protection check: the extent was
	// torn by an interrupted write, never written, or altered. It matches
	// ErrCorrupt too, since to a reader all three are damaged bytes.
	ErrTorn = fmt.Errorf("torn or unwritten CocoonFS extent: %w", errs.ErrCorrupt)
	// ErrUnsupported reports a valid but unsupported structure; it is
	// errs.ErrUnsupported.
	ErrUnsupported = errs.ErrUnsupported
	// ErrNotCocoonFS reports that neither header magic is present.
	ErrNotCocoonFS = errors.New("not a CocoonFS image")
	// errArg reports a programming error by the caller (bad parameters),
	// not a property of the medium.
	errArg = errors.New("invalid argument")
)

// errf formats an error that names the field and value and wraps sentinel.
func errf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("cocoonfs disk: %s: %w", fmt.Sprintf(format, args...), sentinel)
}
