package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// lsOptions has only the shared flags; the key is required.
type lsOptions struct {
	imageOptions
}

func newLsCommand(g *globalOptions) *cobra.Command {
	opts := &lsOptions{}
	cmd := &cobra.Command{
		Use:   "ls IMAGE",
		Short: "List the files of an image",
		Long: `List the user files of IMAGE, one line each: inode number, flags in hex and
size in bytes, separated by spaces, in increasing inode order. CocoonFS files
have no names, only inode numbers; the low 8 bits of the flags belong to the
application. A file's size is learned from its last cipher blocks (read,
authenticated and decrypted), whatever the file's size.
` + keyHelp,
		Example: `  sealfs ls --key-file disk.key disk.img
  sealfs ls --json --key-file disk.key disk.img`,
	}
	opts.AddFlags(cmd.Flags())
	cmd.RunE = runE(g, &opts.imageOptions, func(cmd *cobra.Command, args []string) error {
		return runLs(cmd.Context(), opts, args, cmd.OutOrStdout(), cmd.ErrOrStderr())
	})
	return cmd
}

// lsEntry is the JSON form of one file.
type lsEntry struct {
	Inode uint64 `json:"inode"`
	Flags uint32 `json:"flags"`
	Size  int64  `json:"size"`
}

func runLs(ctx context.Context, opts *lsOptions, args []string, stdout, _ io.Writer) error {
	if err := needArgs(args, "IMAGE"); err != nil {
		return err
	}
	f, closeFS, err := openFS(&opts.imageOptions, args[0])
	if err != nil {
		return err
	}
	defer closeFS()
	entries := []lsEntry{} // "[]", not "null", for an empty image
	for ino, err := range f.Inodes() {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		st, err := f.Stat(ino.Ino)
		if err != nil {
			return err
		}
		entries = append(entries, lsEntry{st.Ino, st.Flags, st.Size})
	}
	if opts.JSON {
		return writeJSON(stdout, entries)
	}
	// Collect before printing so a failure part-way prints nothing.
	var b strings.Builder
	for _, e := range entries {
		fmt.Fprintf(&b, "%d 0x%02x %d\n", e.Inode, e.Flags, e.Size)
	}
	_, err = io.WriteString(stdout, b.String())
	return err
}
