package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/sealfs/sealfs/merkle"
)

// verifyChunk is how much Verify reads and hashes at a time.
const verifyChunk = 128 * blockSize

// Verify reads and verifies a whole blob. Errors: fs.ErrNotExist if it is
// not installed; ErrIntegrity if any stored byte was altered.
func (s *Store) Verify(name merkle.Digest) error {
	_, err := s.verify(context.Background(), name)
	return err
}

func (s *Store) verify(ctx context.Context, name merkle.Digest) (int64, error) {
	b, err := s.Open(name)
	if err != nil {
		return 0, err
	}
	defer b.Close()
	buf := make([]byte, min(verifyChunk, b.size))
	for off := int64(0); off < b.size; off += int64(len(buf)) {
		if err := ctx.Err(); err != nil {
			return off, err
		}
		n := min(int64(len(buf)), b.size-off)
		if _, err := b.ReadAt(buf[:n], off); err != nil && err != io.EOF {
			return off, err
		}
	}
	return b.size, nil
}

// VerifyReport is the result of VerifyAll.
type VerifyReport struct {
	Blobs    int             `json:"blobs"`    // blobs checked
	Bytes    int64           `json:"bytes"`    // data bytes verified
	Problems []VerifyProblem `json:"problems"` // blobs that failed
}

// VerifyProblem is one blob that failed verification.
type VerifyProblem struct {
	Name  string `json:"name"`
	Error string `json:"error"`
	err   error
}

// Err returns the error the blob failed with (for errors.Is).
func (p VerifyProblem) Err() error { return p.err }

// VerifyAll verifies every installed blob. progress, if not nil, is called
// from the calling goroutine after each blob with the number checked and
// the total. A blob that fails is recorded in the report and the others are
// still checked; the error is then non-nil and wraps a problem's error
// (the first integrity failure if there is one, so errors.Is(err,
// ErrIntegrity) holds whenever a blob was altered). A blob removed while
// VerifyAll runs is skipped. The report is nil only when the store cannot
// be listed or ctx is done.
func (s *Store) VerifyAll(ctx context.Context, progress func(done, total int)) (*VerifyReport, error) {
	names, err := s.List()
	if err != nil {
		return nil, err
	}
	return s.verifyBlobs(ctx, names, progress, true)
}

// VerifyBlobs is VerifyAll for the given blobs; one that is not installed
// is a problem whose error matches fs.ErrNotExist.
func (s *Store) VerifyBlobs(ctx context.Context, names []merkle.Digest, progress func(done, total int)) (*VerifyReport, error) {
	return s.verifyBlobs(ctx, names, progress, false)
}

func (s *Store) verifyBlobs(ctx context.Context, names []merkle.Digest, progress func(done, total int), skipMissing bool) (*VerifyReport, error) {
	r := &VerifyReport{Problems: []VerifyProblem{}}
	var first, firstIntegrity error
	for i, name := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, err := s.verify(ctx, name)
		switch {
		case err == nil:
			r.Blobs++
			r.Bytes += n
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case skipMissing && errorsIsNotExist(err):
			// removed meanwhile
		default:
			r.Blobs++
			r.Problems = append(r.Problems, VerifyProblem{Name: name.String(), Error: err.Error(), err: err})
			if first == nil {
				first = err
			}
			if firstIntegrity == nil && errors.Is(err, ErrIntegrity) {
				firstIntegrity = err
			}
		}
		if progress != nil {
			progress(i+1, len(names))
		}
	}
	if len(r.Problems) > 0 {
		if firstIntegrity != nil {
			first = firstIntegrity
		}
		return r, fmt.Errorf("%d of %d blobs failed verification: %w", len(r.Problems), r.Blobs, first)
	}
	return r, nil
}

func errorsIsNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
