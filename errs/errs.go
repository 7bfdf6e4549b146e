// Package errs holds the sentinel errors shared by every sealfs store.
//
// Stores wrap these with %w and add what went wrong where (an offset, an inode,
// a block), so callers test the class of a failure with errors.Is and show the
// message to people. Missing and existing names use io/fs's fs.ErrNotExist and
// fs.ErrExist rather than sentinels of their own.
package errs

import "errors"

var (
	// ErrAuthentication reports that stored bytes failed a cryptographic check:
	// the medium was altered, rolled back or mixed with another image's bytes.
	// Data that failed the check is never returned.
	ErrAuthentication = errors.New("authentication failed")

	// ErrWrongKey reports that the supplied key does not open the store. It is
	// detected before any protected state is used. Where a format cannot tell a
	// wrong key from tampering with the one structure the key is first checked
	// against, the error matches both ErrWrongKey and ErrAuthentication.
	ErrWrongKey = errors.New("wrong key")

	// ErrCorrupt reports bytes that are structurally impossible: a bad magic,
	// an out-of-range pointer, a malformed encoding.
	ErrCorrupt = errors.New("corrupt data")

	// ErrUnsupportedAlgorithm reports a well-formed algorithm identifier that
	// sealfs does not implement.
	ErrUnsupportedAlgorithm = errors.New("unsupported algorithm")

	// ErrUnsupported reports a well-formed but unsupported format feature or
	// version.
	ErrUnsupported = errors.New("unsupported format feature")

	// ErrNoSpace reports that an update does not fit on the medium; the store
	// is left unchanged.
	ErrNoSpace = errors.New("no space left")
)
