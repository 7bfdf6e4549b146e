package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

type writeOptions struct {
	imageOptions
	Flags string
}

func (o *writeOptions) AddFlags(fs *pflag.FlagSet) {
	o.imageOptions.AddFlags(fs)
	fs.StringVar(&o.Flags, "flags", "0", "inode flags `N` (0-255; the low 8 bits belong to the application)")
}

func newWriteCommand(g *globalOptions) *cobra.Command {
	opts := &writeOptions{}
	cmd := &cobra.Command{
		Use:   "write IMAGE INO [FILE|-]",
		Short: "Create or replace a file in one journaled transaction",
		Long: `Write the contents of FILE (or standard input, if FILE is - or missing) to
inode INO of IMAGE, creating or replacing it. The change is one journaled
transaction: after a crash at any point the image opens with either the old or
the new contents, and a pending journal is replayed by the next read-write
open. User inode numbers start at 16.

Prints the new authentication root digest and update counter; keep them
somewhere trusted and pass them to --expect-root / --min-counter later to
detect a rolled-back image.
` + keyHelp,
		Example: `  sealfs write --key-file disk.key disk.img 42 nv.bin
  echo -n state | sealfs write --key-file disk.key disk.img 0x54504d0001000000 -`,
	}
	opts.AddFlags(cmd.Flags())
	cmd.RunE = runE(g, &opts.imageOptions, func(cmd *cobra.Command, args []string) error {
		return runWrite(cmd.Context(), opts, args, cmd.InOrStdin(), cmd.OutOrStdout())
	})
	return cmd
}

func runWrite(ctx context.Context, opts *writeOptions, args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 2 {
		args = append(args, "-")
	}
	if err := needArgs(args, "IMAGE", "INO", "FILE"); err != nil {
		return err
	}
	ino, err := parseIno(args[1])
	if err != nil {
		return err
	}
	flags, err := strconv.ParseUint(opts.Flags, 0, 8)
	if err != nil {
		return usageErrorf("--flags: %q is not a number from 0 to 255", opts.Flags)
	}
	var in io.Reader = stdin
	if args[2] == "-" {
		if opts.Key.readsStdin() {
			return usageErrorf("the key and the file cannot both come from standard input")
		}
	} else {
		file, err := os.Open(args[2])
		if err != nil {
			return withCode(ExitError, err)
		}
		defer file.Close()
		in = file
	}
	f, closeFS, err := openFSWritable(&opts.imageOptions, args[0])
	if err != nil {
		return err
	}
	defer closeFS()
	tx, err := f.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	w, err := tx.Create(ino, uint32(flags))
	if err != nil {
		return usageError(err) // a reserved inode or bad flags
	}
	// The contents stream from the input to free blocks of the image; a
	// failure before Commit leaves the image as it was.
	src := &inputReader{r: in}
	n, err := w.ReadFrom(src)
	if err == nil {
		err = w.Close()
	}
	if src.err != nil {
		return withCode(ExitError, fmt.Errorf("reading %s: %w", args[2], src.err))
	}
	if err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	return reportCommit(stdout, opts.JSON, fmt.Sprintf("wrote %d bytes to inode %d", n, ino), hex.EncodeToString(f.RootDigest()), f.UpdateCounter().String())
}

// inputReader remembers the input's own error, so that it is not taken for
// the image's.
type inputReader struct {
	r   io.Reader
	err error
}

func (r *inputReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// reportCommit prints the state a commit produced.
func reportCommit(w io.Writer, asJSON bool, what, root, counter string) error {
	if asJSON {
		return writeJSON(w, struct {
			Result        string `json:"result"`
			RootDigest    string `json:"root_digest"`
			UpdateCounter string `json:"update_counter"`
		}{what, root, counter})
	}
	return writeFields(w, []field{{"result", what}, {"root digest", root}, {"update counter", counter}})
}
