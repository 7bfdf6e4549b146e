package main

import (
	"context"
	"io"
	"log"

	"github.com/sealfs/sealfs/cocoonfs"
	"github.com/sealfs/sealfs/nvram"
	nvramfuse "github.com/sealfs/sealfs/nvram/fusefs"
	"github.com/spf13/cobra"
)

// nvramMountOptions are the flags of `sealfs nvram mount`.
type nvramMountOptions struct {
	imageOptions
	mountFlags
	Type string
}

const nvramMountLong = `Mount IMAGE's NVRAM store on the directory MOUNTPOINT with FUSE and serve it
in the foreground until the mount is unmounted (fusermount3 -u MOUNTPOINT) or
SIGINT, SIGTERM or SIGHUP unmounts it. A line on stdout says when the mount is
ready; when the server stops, the image's new root digest and update counter
are printed.

The mount is one directory whose files are the store's entries, by name.
A file's changes become one transaction of the image when it is fsynced or
closed, and that call returns only after the commit is durable. Writing a
temporary file and renaming it over an entry replaces the entry in one
transaction, as swtpm and most programs replace state files. New entries get
the type --type; rewritten ones keep their type and attributes. An entry
this version cannot read (an unknown mandatory attribute) is listed, but
reading it fails with EIO and a log line naming the attribute.

A wrong key (exit 3), a damaged image (exit 4, 5) or a pending journal
(exit 7: run 'sealfs replay IMAGE') are refused before anything is mounted;
the image is locked while mounted. Needs /dev/fuse and fusermount3.
` + keyHelp

func newNvramMountCommand(g *globalOptions) *cobra.Command {
	opts := &nvramMountOptions{}
	cmd := &cobra.Command{
		Use:   "mount IMAGE MOUNTPOINT",
		Short: "Mount the NVRAM store with FUSE: entries as files, every close durable",
		Long:  nvramMountLong,
		Example: `  sealfs nvram mount -k disk.key disk.img /run/nvram &
  cp OVMF_VARS.fd /run/nvram/ && fusermount3 -u /run/nvram`,
	}
	opts.imageOptions.AddFlags(cmd.Flags())
	opts.mountFlags.AddFlags(cmd.Flags())
	cmd.Flags().StringVar(&opts.Type, "type", nvramfuse.DefaultType, "the `TYPE` of entries created through the mount")
	cmd.RunE = runE(g, &opts.imageOptions, func(cmd *cobra.Command, args []string) error {
		return runNvramMount(cmd.Context(), opts, args, cmd.OutOrStdout(), cmd.ErrOrStderr())
	})
	return cmd
}

func runNvramMount(ctx context.Context, opts *nvramMountOptions, args []string, stdout, stderr io.Writer) error {
	if err := needArgs(args, "IMAGE", "MOUNTPOINT"); err != nil {
		return err
	}
	// Check the type as an entry would carry it: a bad one is a usage error.
	if err := nvram.NewDirectory().Put(&nvram.Entry{Name: "x", Type: opts.Type}); err != nil {
		return usageError(err)
	}
	typ := opts.Type
	return serveImageMount(ctx, &opts.imageOptions, &opts.mountFlags, args, stdout, stderr,
		func(f *cocoonfs.FS, img, mnt string, logger *log.Logger) (server, error) {
			return nvramfuse.Mount(f, mnt, nvramfuse.Options{
				ReadOnly:   opts.ReadOnly,
				FsName:     img,
				AllowOther: opts.AllowOther,
				Debug:      opts.Debug,
				Logger:     logger,
				Type:       func(string) string { return typ },
			})
		})
}
