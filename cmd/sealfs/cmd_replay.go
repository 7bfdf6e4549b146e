package main

import (
	"context"
	"encoding/hex"
	"io"

	"github.com/spf13/cobra"
)

func newReplayCommand(g *globalOptions) *cobra.Command {
	opts := &imageOptions{}
	cmd := &cobra.Command{
		Use:   "replay IMAGE",
		Short: "Apply a transaction a crash left committed but unapplied",
		Long: `Open IMAGE read-write and, if its journal holds a transaction that was
committed but not yet applied (a power cut or crash in the middle of a write),
apply it: the image then holds the state of that last committed transaction,
and every read command opens it again. With nothing pending it changes
nothing and exits 0.

The read commands (info, ls, read, verify) never write to an image, so they
refuse one with a pending journal (exit 7) and name this command. Replaying is
safe to repeat: an interrupted replay is simply run again.
` + keyHelp,
		Example: `  sealfs replay --key-file disk.key disk.img`,
	}
	opts.AddFlags(cmd.Flags())
	cmd.RunE = runE(g, opts, func(cmd *cobra.Command, args []string) error {
		return runReplay(cmd.Context(), opts, args, cmd.OutOrStdout())
	})
	return cmd
}

func runReplay(_ context.Context, opts *imageOptions, args []string, stdout io.Writer) error {
	if err := needArgs(args, "IMAGE"); err != nil {
		return err
	}
	f, closeFS, err := openFSWritable(opts, args[0])
	if err != nil {
		return err
	}
	defer closeFS()
	what := "no pending journal: nothing to do"
	if f.Replayed() {
		what = "replayed the pending journal: the last committed transaction is applied"
	}
	root, counter := hex.EncodeToString(f.RootDigest()), f.UpdateCounter().String()
	if opts.JSON {
		return writeJSON(stdout, struct {
			Replayed      bool   `json:"replayed"`
			Result        string `json:"result"`
			RootDigest    string `json:"root_digest"`
			UpdateCounter string `json:"update_counter"`
		}{f.Replayed(), what, root, counter})
	}
	return writeFields(stdout, []field{{"result", what}, {"root digest", root}, {"update counter", counter}})
}
