//go:build !linux

package image

import (
	"context"
	"fmt"
	"runtime"

	"github.com/sealfs/sealfs/errs"
)

// Extract relies on Linux's *at system calls (mknodat, linkat, fsetxattr,
// O_NOFOLLOW); elsewhere it refuses to run (the rest of sealfs still builds).
func extractTree(context.Context, *Image, []extractEntry, uint64, string, string, ExtractOptions) (ExtractStats, error) {
	return ExtractStats{}, fmt.Errorf("image: extract on %s: %w (it needs Linux)", runtime.GOOS, errs.ErrUnsupported)
}
