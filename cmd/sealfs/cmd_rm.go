package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"github.com/spf13/cobra"
)

func newRmCommand(g *globalOptions) *cobra.Command {
	opts := &imageOptions{}
	cmd := &cobra.Command{
		Use:   "rm IMAGE INO...",
		Short: "Remove files in one journaled transaction",
		Long: `Remove the inodes INO... from IMAGE, all in one journaled transaction: after a
crash the image holds either all of them or none were removed. A missing
inode fails the whole command and removes nothing.
` + keyHelp,
		Example: `  sealfs rm --key-file disk.key disk.img 42 43`,
	}
	opts.AddFlags(cmd.Flags())
	cmd.RunE = runE(g, opts, func(cmd *cobra.Command, args []string) error {
		return runRm(cmd.Context(), opts, args, cmd.OutOrStdout())
	})
	return cmd
}

func runRm(ctx context.Context, opts *imageOptions, args []string, stdout io.Writer) error {
	if len(args) < 2 {
		return usageErrorf("missing %s", []string{"IMAGE", "INO"}[len(args)])
	}
	var inos []uint64
	for _, a := range args[1:] {
		ino, err := parseIno(a)
		if err != nil {
			return err
		}
		inos = append(inos, ino)
	}
	f, closeFS, err := openFSWritable(opts, args[0])
	if err != nil {
		return err
	}
	defer closeFS()
	tx, err := f.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, ino := range inos {
		if err := tx.Remove(ino); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return err
			}
			return usageError(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	return reportCommit(stdout, opts.JSON, fmt.Sprintf("removed %d inode(s)", len(inos)), hex.EncodeToString(f.RootDigest()), f.UpdateCounter().String())
}
