package main

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/sealfs/sealfs/cocoonfs"
	"github.com/sealfs/sealfs/errs"
)

// Exit codes. They are part of the CLI's interface (scripts test them), so
// a number, once given a meaning, keeps it: add new codes, never renumber.
// EXIT_CODES.md documents them for users; keep the two in step.
const (
	ExitOK             = 0  // success
	ExitError          = 1  // any other error: I/O, output file, unclassified
	ExitUsage          = 2  // invalid command line
	ExitWrongKey       = 3  // the key does not open the image
	ExitAuthentication = 4  // stored bytes failed authentication (tampering)
	ExitCorrupt        = 5  // corrupt, not CocoonFS, or unsupported algorithm
	ExitNotFound       = 6  // no such inode
	ExitNotFormatted   = 7  // creation info header only, or pending journal
	ExitIOBlockSize    = 8  // device block size exceeds the image's IO block
	ExitRollback       = 9  // root digest or update counter not as expected
	ExitNoSpace        = 10 // the change does not fit; the image is unchanged

	// Registry failures (image push/pull/extract/mount/ls, blob push/pull).
	ExitUnauthorized     = 11 // the registry wants (other) credentials
	ExitRegistryNotFound = 12 // no such repository, tag, manifest or blob in the registry
	ExitDigestMismatch   = 13 // the registry served bytes that are not what was named
	ExitNetwork          = 14 // the registry cannot be reached or spoken to
)

// codedError carries an exit code chosen where the meaning of a failure is
// known (a usage mistake, an OS error on a file the CLI opened itself), so
// that exitCode does not have to guess it from sentinels.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &codedError{code, err}
}

// usageError marks a library error about the caller's input (a reserved
// inode, bad flags) as a usage error.
func usageError(err error) error { return withCode(ExitUsage, err) }

func usageErrorf(format string, args ...any) error {
	return withCode(ExitUsage, fmt.Errorf(format, args...))
}

// exitCode maps an error from a runX function to the process exit code.
// The order matters: a wrong key also matches ErrAuthentication.
func exitCode(err error) int {
	var ce *codedError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ce):
		return ce.code
	case registryExitCode(err) != 0:
		return registryExitCode(err)
	case errors.Is(err, cocoonfs.ErrWrongKey):
		return ExitWrongKey
	case errors.Is(err, cocoonfs.ErrAuthentication):
		return ExitAuthentication
	case errors.Is(err, cocoonfs.ErrNotFormatted), errors.Is(err, cocoonfs.ErrPendingJournal):
		return ExitNotFormatted
	case errors.Is(err, cocoonfs.ErrIOBlockTooSmall):
		return ExitIOBlockSize
	case errors.Is(err, cocoonfs.ErrRollback):
		return ExitRollback
	case errors.Is(err, cocoonfs.ErrNoSpace):
		return ExitNoSpace
	case errors.Is(err, cocoonfs.ErrCorrupt), errors.Is(err, cocoonfs.ErrNotCocoonFS),
		errors.Is(err, cocoonfs.ErrUnsupportedAlgorithm), errors.Is(err, errs.ErrUnsupported):
		return ExitCorrupt
	case errors.Is(err, fs.ErrNotExist):
		return ExitNotFound
	}
	return ExitError
}
