package main

import (
	"context"
	"fmt"
	"io"

	"github.com/sealfs/sealfs/cocoonfs"
	"github.com/spf13/cobra"
)

// verifyOptions has only the shared flags; the key is required.
type verifyOptions struct {
	imageOptions
}

func newVerifyCommand(g *globalOptions) *cobra.Command {
	opts := &verifyOptions{}
	cmd := &cobra.Command{
		Use:   "verify IMAGE",
		Short: "Authenticate every block of an image and read back every file",
		Long: `Verify IMAGE: authenticate every data block against the authentication tree,
check the allocation bitmap against everything the filesystem references, and
decrypt every file. Prints a summary and every problem found, and exits
non-zero if there is any (4 if a block failed authentication, 5 otherwise).
On a terminal, progress is shown on stderr.
` + keyHelp,
		Example: `  sealfs verify --key-file disk.key disk.img
  sealfs verify --json --key-file disk.key disk.img`,
	}
	opts.AddFlags(cmd.Flags())
	cmd.RunE = runE(g, &opts.imageOptions, func(cmd *cobra.Command, args []string) error {
		return runVerify(cmd.Context(), opts, args, cmd.OutOrStdout(), cmd.ErrOrStderr())
	})
	return cmd
}

func runVerify(ctx context.Context, opts *verifyOptions, args []string, stdout, stderr io.Writer) error {
	if err := needArgs(args, "IMAGE"); err != nil {
		return err
	}
	f, closeFS, err := openFS(&opts.imageOptions, args[0])
	if err != nil {
		return err
	}
	defer closeFS()
	update, finish := progressLine(stderr, "verifying")
	r, verr := f.Verify(ctx, update)
	finish()
	if r == nil {
		return verr
	}
	// A report comes with problems too: print it, then fail with verr.
	if opts.JSON {
		err = writeJSON(stdout, r)
	} else {
		err = writeVerifyReport(stdout, r)
	}
	if verr != nil {
		return verr
	}
	return err
}

func writeVerifyReport(w io.Writer, r *cocoonfs.VerifyReport) error {
	status := "ok"
	if len(r.Problems) > 0 {
		status = fmt.Sprintf("%d problem(s)", len(r.Problems))
	}
	fields := []field{
		{"data blocks authenticated", fmt.Sprint(r.DataBlocks)},
		{"allocated blocks", fmt.Sprint(r.AllocatedBlocks)},
		{"inodes", fmt.Sprint(r.Inodes)},
		{"bytes", fmt.Sprint(r.Bytes)},
		{"status", status},
	}
	for _, p := range r.Problems {
		fields = append(fields, field{"problem", p})
	}
	return writeFields(w, fields)
}
