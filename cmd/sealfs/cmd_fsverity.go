package main

import (
	"bytes"
	"context"
	"crypto"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"github.com/sealfs/sealfs/merkle"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

type fsverityOptions struct {
	JSON      bool
	BlockSize int
	Salt      string
	Hash      string
	Compact   bool
}

func (o *fsverityOptions) AddFlags(fs *pflag.FlagSet) {
	fs.IntVar(&o.BlockSize, "block-size", 4096, "Merkle tree block size `N`: a power of two from 1024 to 65536")
	fs.StringVar(&o.Salt, "salt", "", "salt `HEX` prepended to every hashed block (at most 32 bytes)")
	fs.StringVar(&o.Hash, "hash", "sha256", "hash algorithm: sha256 or sha512")
	// fsverity digest spells it --hash-alg; accept that too.
	fs.StringVar(&o.Hash, "hash-alg", "sha256", "same as --hash")
	fs.MarkHidden("hash-alg") //nolint:errcheck // the flag exists
	fs.BoolVar(&o.Compact, "compact", false, "print only the hex digest")
}

func newFsverityCommand(g *globalOptions) *cobra.Command {
	opts := &fsverityOptions{}
	cmd := &cobra.Command{
		Use:   "fsverity FILE|-",
		Short: "Print a file's fs-verity digest, as `fsverity digest` does",
		Long: `Print the fs-verity file digest of FILE (or stdin with -), exactly as
"fsverity digest" prints it: "sha256:<hex> FILE". It is what the kernel
reports for the file once fs-verity is enabled on it with the same
parameters, so it can be signed or allow-listed ahead of time. The file is
read once, as a stream; no filesystem support is needed.`,
		Example: `  sealfs fsverity app.apk
  sealfs fsverity --hash sha512 --block-size 1024 --salt 61626364 file
  sealfs fsverity --json file`,
	}
	opts.AddFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		opts.JSON = g.JSON
		return asRunError(runFsverity(cmd.Context(), opts, args, cmd.InOrStdin(), cmd.OutOrStdout()))
	}
	return cmd
}

type fsverityResult struct {
	File      string `json:"file"`
	Algorithm string `json:"algorithm"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	BlockSize int    `json:"block_size"`
	Salt      string `json:"salt"`
}

func runFsverity(_ context.Context, opts *fsverityOptions, args []string, stdin io.Reader, stdout io.Writer) error {
	if err := needArgs(args, "FILE"); err != nil {
		return err
	}
	mo := merkle.FsverityOptions{BlockSize: opts.BlockSize}
	switch opts.Hash {
	case "sha256":
		mo.Hash = crypto.SHA256
	case "sha512":
		mo.Hash = crypto.SHA512
	default:
		return usageErrorf("--hash: %q is not sha256 or sha512", opts.Hash)
	}
	salt, err := hex.DecodeString(opts.Salt)
	if err != nil {
		return usageErrorf("--salt: %q is not hex", opts.Salt)
	}
	mo.Salt = salt
	// Validate the options before reading anything.
	if _, err := merkle.FsverityDigest(nil, 0, mo); err != nil {
		return usageError(err)
	}
	var r io.Reader
	var size int64
	if args[0] == "-" {
		// The descriptor holds the size, so stdin is read into memory.
		data, err := io.ReadAll(stdin)
		if err != nil {
			return withCode(ExitError, err)
		}
		r, size = bytes.NewReader(data), int64(len(data))
	} else {
		f, err := os.Open(args[0])
		if err != nil {
			return withCode(ExitError, err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return withCode(ExitError, err)
		}
		if !st.Mode().IsRegular() {
			return usageErrorf("%s is not a regular file", args[0])
		}
		r, size = f, st.Size()
	}
	d, err := merkle.FsverityDigest(r, size, mo)
	if err != nil {
		return withCode(ExitError, err)
	}
	if opts.JSON {
		return writeJSON(stdout, fsverityResult{File: args[0], Algorithm: opts.Hash, Digest: hex.EncodeToString(d),
			Size: size, BlockSize: opts.BlockSize, Salt: hex.EncodeToString(salt)})
	}
	if opts.Compact {
		_, err = fmt.Fprintf(stdout, "%x\n", d)
	} else {
		_, err = fmt.Fprintf(stdout, "%s:%x %s\n", opts.Hash, d, args[0])
	}
	return err
}
