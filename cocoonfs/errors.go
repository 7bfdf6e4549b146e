package cocoonfs

import (
	"errors"
	"fmt"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
	"github.com/sealfs/sealfs/errs"
)

// Sentinel errors. Test for them with errors.Is; the wrapping error says where.
var (
	// ErrAuthentication: stored bytes failed authentication (tampering,
	// rollback of part of the image, or bit rot). See errs.ErrAuthentication.
	ErrAuthentication = errs.ErrAuthentication
	// ErrWrongKey: the key does not open the image. Because the first
	// key-dependent check covers the inode index entry leaf and the mutable
	// header, tampering with exactly those also reports ErrWrongKey; such an
	// error matches ErrAuthentication as well.
	ErrWrongKey = errs.ErrWrongKey
	// ErrCorrupt: structurally invalid bytes.
	ErrCorrupt = errs.ErrCorrupt
	// ErrUnsupportedAlgorithm: the header names an algorithm sealfs lacks.
	ErrUnsupportedAlgorithm = errs.ErrUnsupportedAlgorithm
	// ErrNoSpace: what was asked does not fit in the image.
	ErrNoSpace = errs.ErrNoSpace
	// ErrUnsupported: a well-formed header of a format version or feature
	// sealfs does not implement.
	ErrUnsupported = errs.ErrUnsupported

	// ErrNotCocoonFS: the medium holds neither a CocoonFS header nor a
	// filesystem creation info header.
	ErrNotCocoonFS = disk.ErrNotCocoonFS
	// ErrNotFormatted: the medium holds only a filesystem creation info header
	// (keyless provisioning); the first read-write open with a key formats it.
	ErrNotFormatted = errors.New("image holds only a filesystem creation info header")
	// ErrPendingJournal: the journal log head holds a committed transaction
	// that has not been applied yet; a read-write open replays it.
	ErrPendingJournal = errors.New("pending journal: open read-write to replay")
	// ErrIOBlockTooSmall: the device may tear writes in units larger than the
	// image's IO block, which would break the journal's torn-write protection.
	ErrIOBlockTooSmall = errors.New("image IO block smaller than the device block size")
)

// wrongKeyError matches both ErrWrongKey and ErrAuthentication.
type wrongKeyError struct{ msg string }

func (e *wrongKeyError) Error() string { return e.msg }
func (e *wrongKeyError) Is(target error) bool {
	return target == ErrWrongKey || target == ErrAuthentication
}

func corruptf(format string, args ...any) error {
	return fmt.Errorf("cocoonfs: %w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

func authf(format string, args ...any) error {
	return fmt.Errorf("cocoonfs: %w: %s", ErrAuthentication, fmt.Sprintf(format, args...))
}
