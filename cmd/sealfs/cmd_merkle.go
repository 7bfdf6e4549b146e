package main

import (
	"context"
	"io"
	"os"

	"github.com/sealfs/sealfs/merkle"
	"github.com/spf13/cobra"
)

// merkleOptions has only the global --json.
type merkleOptions struct {
	JSON bool
}

func newMerkleCommand(g *globalOptions) *cobra.Command {
	opts := &merkleOptions{}
	cmd := &cobra.Command{
		Use:   "merkle FILE|-",
		Short: "Print the Fuchsia Merkle root of a file (its blobfs/fxblob blob name)",
		Long: `Print the Fuchsia Merkle root of FILE (or of stdin with -): the 64 hex
characters blobfs and fxblob name the blob by, computed with the blobfs
algorithm (SHA-256 over 8 KiB nodes with their 12-byte identity prefix).
The file is read once, as a stream.`,
		Example: `  sealfs merkle meta.far
  cat blob | sealfs merkle -
  sealfs merkle --json blob`,
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		opts.JSON = g.JSON
		return asRunError(runMerkle(cmd.Context(), opts, args, cmd.InOrStdin(), cmd.OutOrStdout()))
	}
	return cmd
}

// asRunError marks an error from a command's own code (see runError).
func asRunError(err error) error {
	if err == nil {
		return nil
	}
	return &runError{err}
}

// openInput opens FILE, or stdin for "-". OS errors get the generic code.
func openInput(path string, stdin io.Reader) (io.Reader, func(), error) {
	if path == "-" {
		return stdin, func() {}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, withCode(ExitError, err)
	}
	return f, func() { f.Close() }, nil
}

type merkleResult struct {
	File string `json:"file"`
	Root string `json:"root"`
	Size int64  `json:"size"`
}

func runMerkle(_ context.Context, opts *merkleOptions, args []string, stdin io.Reader, stdout io.Writer) error {
	if err := needArgs(args, "FILE"); err != nil {
		return err
	}
	r, closeIn, err := openInput(args[0], stdin)
	if err != nil {
		return err
	}
	defer closeIn()
	// Only the root is wanted: the level-0 hashes are not kept.
	b := merkle.NewFuchsiaStream(io.Discard)
	if _, err := io.Copy(b, r); err != nil {
		return withCode(ExitError, err)
	}
	root, _, err := b.Finish()
	if err != nil {
		return withCode(ExitError, err)
	}
	if opts.JSON {
		return writeJSON(stdout, merkleResult{File: args[0], Root: root.String(), Size: b.Size()})
	}
	_, err = io.WriteString(stdout, root.String()+"\n")
	return err
}
