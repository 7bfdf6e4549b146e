//go:build !unix

package blockdev

import "os"

// detectBlockSize falls back to DefaultBlockSize where there is no
// st_blksize to ask.
func detectBlockSize(*os.File) (int64, error) { return DefaultBlockSize, nil }

// syncDir is a no-op where directories cannot be opened for syncing.
func syncDir(string) error { return nil }
