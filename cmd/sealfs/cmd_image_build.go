package main

import (
	"context"
	"fmt"
	"io"

	"github.com/sealfs/sealfs/image"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func init() { imageSubcommands = append(imageSubcommands, newImageBuildCommand) }

type imageBuildOptions struct {
	JSON     bool
	Base     string
	Compress bool
}

func (o *imageBuildOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&o.Base, "base", "b", "", "stack the image on `TAG` of the same layout: kept paths keep their inode numbers, removed names become whiteouts")
	fs.BoolVarP(&o.Compress, "compress", "c", false, "store chunks as seekable zstd when that makes them smaller")
}

func newImageBuildCommand(g *globalOptions) *cobra.Command {
	opts := &imageBuildOptions{}
	cmd := &cobra.Command{
		Use:   "build DIR OCIDIR:TAG",
		Short: "Build a PuzzleFS image of a directory tree",
		Long: `Build a PuzzleFS image of the tree DIR and tag it TAG in the OCI layout
OCIDIR, which is created if it does not exist. All regular files' bytes are
cut by one FastCDC stream into content-defined chunks (16/64/256 KiB), each
stored once by its sha256 and shared by every image in OCIDIR.

The image is what 'puzzlefs build' writes for the same tree, byte for byte
(sorted xattrs and correct fs-verity digests of compressed-build chunks
excepted: puzzlefs gets those wrong), so the printed digest is the same too.
It depends only on the tree: names, contents, types, permissions, owners,
xattrs and hard links; not on timestamps, directory order, where DIR is or
which machine builds it.

It prints the image manifest's fs-verity digest, the root of trust that
'image extract --digest' and 'image mount --digest' (and puzzlefs mount
--digest) check everything against, and how many chunks were new or already
in OCIDIR. Symlinks are stored as links and never followed; directories on
other file systems are stored empty. A file that changes while it is read
fails the build. The tag is switched only after every blob is on disk.`,
		Example: `  sealfs image build rootfs/ oci:v1
  sealfs image build --base v1 rootfs-v2/ oci:v2
  sealfs image build --compress rootfs/ oci:v1-zstd`,
	}
	opts.AddFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		opts.JSON = g.JSON
		return asRunError(runImageBuild(cmd.Context(), opts, args, cmd.OutOrStdout()))
	}
	return cmd
}

type imageBuildResult struct {
	Image        string `json:"image"`
	RootDigest   string `json:"root_digest"`
	Manifest     string `json:"manifest"`
	Inodes       int    `json:"inodes"`
	Files        int    `json:"files"`
	Bytes        int64  `json:"bytes"`
	Chunks       int    `json:"chunks"`
	NewChunks    int    `json:"new_chunks"`
	NewBytes     int64  `json:"new_bytes"`
	ReusedChunks int    `json:"reused_chunks"`
	ReusedBytes  int64  `json:"reused_bytes"`
}

func runImageBuild(ctx context.Context, opts *imageBuildOptions, args []string, stdout io.Writer) error {
	if err := needArgs(args, "DIR", "OCIDIR:TAG"); err != nil {
		return err
	}
	dir, tag, err := parseImageRef(args[1])
	if err != nil {
		return err
	}
	if !image.ValidTag(tag) {
		return usageErrorf("tag %q: want letters, digits, '_', '.' or '-' (at most 128, not starting with '.' or '-')", tag)
	}
	if opts.Base != "" && !image.ValidTag(opts.Base) {
		return usageErrorf("--base %q is not a valid tag", opts.Base)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	r, err := image.Build(ctx, args[0], dir, tag, image.BuildOptions{Base: opts.Base, Compress: opts.Compress})
	if err != nil {
		return err
	}
	res := imageBuildResult{
		Image: args[1], RootDigest: r.RootDigest.String(), Manifest: r.Manifest.OCI(),
		Inodes: r.Inodes, Files: r.Files, Bytes: r.Bytes, Chunks: r.Chunks,
		NewChunks: r.NewChunks, NewBytes: r.NewBytes, ReusedChunks: r.ReusedChunks, ReusedBytes: r.ReusedBytes,
	}
	if opts.JSON {
		return writeJSON(stdout, res)
	}
	_, err = fmt.Fprintf(stdout, "image manifest digest: %s\n%s: %d inodes, %d files, %s in %d chunks: %d new (%s stored), %d reused (%s)\n",
		res.RootDigest, res.Image, res.Inodes, res.Files, imageBytes(res.Bytes), res.Chunks,
		res.NewChunks, imageBytes(res.NewBytes), res.ReusedChunks, imageBytes(res.ReusedBytes))
	return err
}
