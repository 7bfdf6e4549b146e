//go:build !unix

package blob

import (
	"fmt"
	"os"
	"runtime"

	"github.com/sealfs/sealfs/errs"
)

// The store relies on flock(2), hard links and st_blocks; elsewhere Open
// refuses to run (the rest of sealfs still builds).
var errPlatform = fmt.Errorf("blob store on %s: %w (it needs a Unix system)", runtime.GOOS, errs.ErrUnsupported)

type fileID struct{ dev, ino uint64 }

func lockFile(*os.File, bool) error           { return errPlatform }
func allocated(string) (int64, fileID, error) { return 0, fileID{}, errPlatform }
func allocatedFile(*os.File) (int64, error)   { return 0, errPlatform }
func checkPlatform() error                    { return errPlatform }
