package main

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"strconv"
	"strings"

	"github.com/sealfs/sealfs/internal/atomicfile"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

type readOptions struct {
	imageOptions
	Output string // -o; empty means stdout
}

func (o *readOptions) AddFlags(fs *pflag.FlagSet) {
	o.imageOptions.AddFlags(fs)
	fs.StringVarP(&o.Output, "output", "o", "", "write to `FILE` (atomically, mode 0600) instead of stdout")
}

func newReadCommand(g *globalOptions) *cobra.Command {
	opts := &readOptions{}
	cmd := &cobra.Command{
		Use:   "read IMAGE INO",
		Short: "Write a file's contents to stdout or a file",
		Long: `Read inode INO (decimal, or hex with a 0x prefix) of IMAGE and write its
contents to stdout, or to FILE with -o. The file is streamed in chunks, each
authenticated before any of its bytes is written, so output is never
unverified data; if a block fails authentication, standard output ends with
the verified bytes before it and the exit status is 4.

With -o, the contents go to a temporary file in FILE's directory that is
renamed over FILE once complete: FILE is either left as it was or replaced
whole. It is created with mode 0600 because it holds decrypted data.
--json has no effect on read.
` + keyHelp,
		Example: `  sealfs read --key-file disk.key disk.img 42 > nv.bin
  sealfs read --key-file disk.key disk.img 0x2a -o nv.bin`,
	}
	opts.AddFlags(cmd.Flags())
	cmd.RunE = runE(g, &opts.imageOptions, func(cmd *cobra.Command, args []string) error {
		return runRead(cmd.Context(), opts, args, cmd.OutOrStdout(), cmd.ErrOrStderr())
	})
	return cmd
}

func runRead(_ context.Context, opts *readOptions, args []string, stdout, _ io.Writer) error {
	if err := needArgs(args, "IMAGE", "INO"); err != nil {
		return err
	}
	ino, err := parseIno(args[1])
	if err != nil {
		return err
	}
	f, closeFS, err := openFS(&opts.imageOptions, args[0])
	if err != nil {
		return err
	}
	defer closeFS()
	r, err := f.OpenFile(ino)
	if errors.Is(err, fs.ErrInvalid) {
		return withCode(ExitUsage, err) // a reserved inode: not a file
	}
	if err != nil {
		return err
	}
	// Streamed through fixed buffers: a file of any size, nothing of it
	// left on the heap beyond the chunks in flight.
	if opts.Output == "" {
		_, err = r.WriteTo(stdout)
		return err
	}
	return writeFileAtomicFrom(opts.Output, func(w io.Writer) error {
		_, err := r.WriteTo(w)
		return err
	})
}

// parseIno accepts decimal or 0x-prefixed hex. strconv's base 0 is not used
// because it reads a leading 0 as octal: "042" would be inode 34.
func parseIno(s string) (uint64, error) {
	var n uint64
	var err error
	if h, ok := strings.CutPrefix(strings.ToLower(s), "0x"); ok {
		n, err = strconv.ParseUint(h, 16, 64)
	} else {
		n, err = strconv.ParseUint(s, 10, 64)
	}
	if err != nil {
		return 0, usageErrorf("invalid inode number %q: want a decimal number or 0x followed by hex digits", s)
	}
	return n, nil
}

// writeFileAtomic writes data to a temporary file beside path, syncs it and
// renames it over path, so path never holds a partial file.
func writeFileAtomic(path string, data []byte) error {
	return atomicfile.Write(path, data, 0o600)
}
