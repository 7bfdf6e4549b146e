package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/sealfs/sealfs/image"
	"github.com/sealfs/sealfs/registry"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func init() { imageSubcommands = append(imageSubcommands, newImageExtractCommand) }

// imageExtractOptions are the flags of 'image extract'.
type imageExtractOptions struct {
	JSON        bool   // the global --json flag
	Digest      string // trusted fs-verity root digest, hex
	Owners      string // auto, restore, ignore
	NoXattrs    bool
	SkipDevices bool
	imageSourceOptions
}

func (o *imageExtractOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Digest, "digest", "", "check the whole fs-verity chain against this trusted root `HEX` (the digest 'image build' printed)")
	fs.StringVar(&o.Owners, "owners", "auto", "restore uid/gid by `MODE`: auto (only as root), restore (always; a refused chown fails) or ignore")
	fs.BoolVar(&o.NoXattrs, "no-xattrs", false, "do not restore extended attributes (for file systems without them)")
	fs.BoolVar(&o.SkipDevices, "skip-devices", false, "skip character and block devices instead of failing where mknod is not permitted")
	o.imageSourceOptions.AddFlags(fs)
}

const imageExtractLong = `Recreate the tree of image OCIDIR:TAG as directory DIR, which must not
exist or be an empty directory: regular files, directories, symbolic links,
hard links, fifos, character and block devices, sockets (as unbound socket
nodes), permission bits including setuid, setgid and sticky, and extended
attributes. Deleted files of a layered image (whiteouts) are not recreated.
The image records no timestamps; everything gets the time of extraction.

Every chunk is checked against its sha256 name, and with --digest against
the fs-verity chain from the trusted root digest, before a byte of it is
written. Nothing partial is ever left at DIR: the tree is built in a hidden
temporary directory beside it, synced to disk, and renamed into place only
when everything succeeded; on any failure it is removed.

Symbolic links are data: they may point anywhere, and none is ever followed
while extracting, so a link cannot redirect a write out of DIR. Ownership
is restored when running as root (--owners restore forces it, ignore skips
it); as another user, devices fail unless --skip-devices, and trusted.* and
security.* attributes the kernel refuses are skipped with a warning.

The image may be in a registry (REGISTRY/REPOSITORY:TAG or @DIGEST): its
chunks are then fetched first, several at a time, each checked as above and
kept in the cache (--cache), and the tree is extracted from there.

Exit status 4 means a blob failed its sha256 or fs-verity check, 5 that the
image is malformed, lacks a blob, or holds what Linux cannot create, 6 that
the tag does not exist, 1 any other failure (DIR not empty, permissions).
` + registryFlagsHelp

func newImageExtractCommand(g *globalOptions) *cobra.Command {
	opts := &imageExtractOptions{}
	cmd := &cobra.Command{
		Use:   "extract OCIDIR:TAG|REGISTRY/REPOSITORY:TAG DIR",
		Short: "Extract an image to a directory, verifying every blob first",
		Long:  imageExtractLong,
		Example: `  sealfs image extract oci:v1 rootfs/
  sealfs image extract --digest 314681a11bb20115649ae2894391ed414ddb3c8d2fed2dbf00b086b0b62f70fd oci:v1 rootfs/
  sealfs --json image extract --owners ignore --skip-devices oci:v2 /tmp/v2
  sealfs image extract --digest HEX registry.example.com/team/rootfs:v1 rootfs/`,
	}
	opts.AddFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		opts.JSON = g.JSON
		if err := runImageExtract(cmd.Context(), opts, args, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()); err != nil {
			return &runError{err}
		}
		return nil
	}
	return cmd
}

// imageExtractResult is the --json output.
type imageExtractResult struct {
	Image  string `json:"image"`
	Dir    string `json:"dir"`
	Verity bool   `json:"verity"` // the fs-verity chain was checked
	image.ExtractStats
	Warnings []string `json:"warnings"`
}

func runImageExtract(ctx context.Context, opts *imageExtractOptions, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if err := needArgs(args, "OCIDIR:TAG", "DIR"); err != nil {
		return err
	}
	remote := registry.IsReference(args[0])
	var ociDir, tag string
	if !remote {
		var err error
		if ociDir, tag, err = parseImageRef(args[0]); err != nil {
			return err
		}
	}
	root, err := parseRootDigest(opts.Digest)
	if err != nil {
		return err
	}
	eo := image.ExtractOptions{NoXattrs: opts.NoXattrs, SkipDevices: opts.SkipDevices}
	switch opts.Owners {
	case "auto":
		eo.Owners = image.OwnersAuto
	case "restore":
		eo.Owners = image.OwnersRestore
	case "ignore":
		eo.Owners = image.OwnersIgnore
	default:
		return usageErrorf("--owners %q: want auto, restore or ignore", opts.Owners)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	var im *image.Image
	if remote {
		if im, _, err = openRemoteImage(ctx, &opts.imageSourceOptions, args[0], root, stdin); err != nil {
			return err
		}
		// Fetch every chunk into the cache first, several at a time;
		// the extraction then reads them from there.
		if opts.Cache != "" {
			progress, finish := transferProgress(stderr, "fetching")
			err = im.Prefetch(ctx, opts.Concurrency, progress)
			finish()
			if err != nil {
				return imageError(err, ExitCorrupt)
			}
		}
	} else if im, err = openImageTag(ociDir, tag, root); err != nil {
		return err
	}
	warnings := []string{}
	eo.Warn = func(path string, err error) {
		w := path + ": " + err.Error()
		warnings = append(warnings, w)
		fmt.Fprintf(stderr, "sealfs: warning: %s\n", w)
	}
	update, finish := progressLine(stderr, "extracting")
	eo.Progress = update
	st, err := im.ExtractContext(ctx, args[1], eo)
	finish()
	if err != nil {
		// A blob missing from the layout is errs.ErrCorrupt (5); a missing
		// parent of DIR is the caller's (1).
		return imageError(err, ExitError)
	}
	if opts.JSON {
		return writeJSON(stdout, imageExtractResult{Image: args[0], Dir: args[1], Verity: root != nil, ExtractStats: st, Warnings: warnings})
	}
	_, err = fmt.Fprintf(stdout, "extracted %s to %s: %s\n", args[0], args[1], imageExtractSummary(st, root != nil))
	return err
}

// imageExtractSummary is the one-line text summary.
func imageExtractSummary(st image.ExtractStats, verity bool) string {
	n := func(k int, one, many string) string {
		if k == 1 {
			return "1 " + one
		}
		return fmt.Sprintf("%d %s", k, many)
	}
	parts := []string{
		n(st.Files, "file", "files"), n(st.Dirs, "directory", "directories"),
		n(st.Symlinks, "symlink", "symlinks"), n(st.Hardlinks, "hard link", "hard links"),
		n(st.Others, "other", "others"),
	}
	s := strings.Join(parts, ", ") + "; " + imageLsBytes(int64(st.Bytes))
	if verity {
		s += "; fs-verity chain checked"
	} else {
		s += "; sha256 checked"
	}
	if !st.Owners {
		s += "; ownership not restored"
	}
	if st.SkippedDevices > 0 {
		s += "; " + n(st.SkippedDevices, "device skipped", "devices skipped")
	}
	if st.SkippedXattrs > 0 {
		s += "; " + n(st.SkippedXattrs, "xattr skipped", "xattrs skipped")
	}
	return s
}
