package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/image"
	"github.com/sealfs/sealfs/registry"
	"github.com/spf13/cobra"
)

func init() {
	imageSubcommands = append(imageSubcommands, newImageLsCommand, newImageDuCommand)
}

// imageLsOptions are the flags of 'image ls' and 'image du'.
type imageLsOptions struct {
	JSON bool // the global --json flag
	imageSourceOptions
}

const imageLsLong = `List the images of the OCI layout OCIDIR, one line per tag, in index.json
order: the tag, the first 12 hex digits of its manifest's sha256, its
regular files (hard links counted once), their total size (logical), and
the bytes of the blobs it needs in the layout (stored: manifest, config,
metadata and every chunk its files reference, each once; chunks shared with
other images included). Sizes are shown in binary units with the exact
byte count; --json gives every field in bytes.

The manifests and metadata are read and checked against their sha256
names; chunks are only measured. Exit status 4 means a manifest or metadata
blob failed its check, 5 that the layout is malformed or lacks one.

Given a registry repository (REGISTRY/REPOSITORY, every tag) or an image in
one (REGISTRY/REPOSITORY:TAG or @DIGEST), ls lists those images instead:
their manifests and metadata are fetched and checked (the metadata is kept
in the cache, --cache), no chunk is fetched, and stored is the size of the
blobs the manifest names as the registry holds them. Tags that are not
PuzzleFS images are listed with a note.
` + registryFlagsHelp

const imageDuLong = `Show how the blobs of the OCI layout OCIDIR are used: how many blobs and
bytes are shared by two images or more, unique to one image, and garbage
(referenced by no image: what a garbage collection would free), and the
total in blobs/sha256; then, for each image, the bytes only it references,
which removing it would free. An image references its manifest, config and
metadata blobs, the chunks its manifest lists and every chunk of the files
it shows; a layered image's top layer holds its whole tree, so chunks only
its base uses are not counted for it. Blobs an
image references but the layout lacks are counted as missing.

Exit status 4 means a manifest or metadata blob failed its sha256 check, 5
that the layout is malformed or lacks one.`

func newImageLsCommand(g *globalOptions) *cobra.Command {
	cmd, opts := newImageLsSub(g, "ls OCIDIR|REGISTRY/REPOSITORY[:TAG]", "List the images of a layout or a registry repository with their sizes", imageLsLong,
		`  sealfs image ls oci
  sealfs --json image ls oci
  sealfs image ls --plain-http 127.0.0.1:5000/rootfs`, runImageLs)
	opts.imageSourceOptions.AddFlags(cmd.Flags())
	return cmd
}

func newImageDuCommand(g *globalOptions) *cobra.Command {
	cmd, _ := newImageLsSub(g, "du OCIDIR", "Show shared, unique and garbage bytes of a layout", imageDuLong,
		`  sealfs image du oci
  sealfs --json image du oci`, runImageDu)
	return cmd
}

func newImageLsSub(g *globalOptions, use, short, long, example string, run func(context.Context, *imageLsOptions, []string, io.Reader, io.Writer, io.Writer) error) (*cobra.Command, *imageLsOptions) {
	opts := &imageLsOptions{}
	cmd := &cobra.Command{Use: use, Short: short, Long: long, Example: example}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		opts.JSON = g.JSON
		if err := run(cmd.Context(), opts, args, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()); err != nil {
			return &runError{err}
		}
		return nil
	}
	return cmd, opts
}

// imageLsUsage opens OCIDIR and accounts for its blobs.
func imageLsUsage(args []string) (*image.Usage, error) {
	if err := needArgs(args, "OCIDIR"); err != nil {
		return nil, err
	}
	l, err := image.OpenLayout(args[0])
	if err != nil {
		return nil, imageError(err, ExitError)
	}
	u, err := l.Usage()
	if err != nil {
		// The manifests are listed in index.json: a missing one, or a
		// missing rootfs, is a broken layout.
		return nil, imageError(err, ExitCorrupt)
	}
	return u, nil
}

// imageLsTag is one image in --json output.
type imageLsTag struct {
	Tag          string `json:"tag"`
	Manifest     string `json:"manifest"`
	RootfsSize   int64  `json:"rootfs_size"`
	Files        int    `json:"files"`
	LogicalBytes uint64 `json:"logical_bytes"`
	Chunks       int    `json:"chunks"`
	StoredBytes  int64  `json:"stored_bytes"`
	UniqueBytes  int64  `json:"unique_bytes"`
	Missing      int    `json:"missing"`
	// Note says why a registry tag is not described (not a PuzzleFS image).
	Note string `json:"note,omitempty"`
}

func imageLsTags(u *image.Usage) []imageLsTag {
	out := []imageLsTag{}
	for _, t := range u.Tags {
		out = append(out, imageLsTag{
			Tag: t.Tag, Manifest: t.Manifest.OCI(), RootfsSize: t.RootfsSize,
			Files: t.Files, LogicalBytes: t.LogicalBytes, Chunks: t.Chunks,
			StoredBytes: t.StoredBytes, UniqueBytes: t.UniqueBytes, Missing: t.Missing,
		})
	}
	return out
}

func imageLsTagName(tag string) string {
	if tag == "" {
		return "(untagged)"
	}
	return tag
}

func runImageLs(ctx context.Context, opts *imageLsOptions, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 1 && registry.IsReference(args[0]) {
		return runImageLsRemote(ctx, opts, args[0], stdin, stdout)
	}
	u, err := imageLsUsage(args)
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(stdout, struct {
			Layout string       `json:"layout"`
			Tags   []imageLsTag `json:"tags"`
		}{args[0], imageLsTags(u)})
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TAG\tMANIFEST\tFILES\tLOGICAL\tSTORED")
	for _, t := range u.Tags {
		stored := imageLsBytes(t.StoredBytes)
		if t.Missing > 0 {
			stored += fmt.Sprintf(", %d blobs missing", t.Missing)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", imageLsTagName(t.Tag), t.Manifest.String()[:12], t.Files, imageLsBytes(int64(t.LogicalBytes)), stored)
	}
	return tw.Flush()
}

// imageDuSet is a BlobSet in --json output.
type imageDuSet struct {
	Count int   `json:"count"`
	Bytes int64 `json:"bytes"`
}

func runImageDu(_ context.Context, opts *imageLsOptions, args []string, _ io.Reader, stdout, _ io.Writer) error {
	u, err := imageLsUsage(args)
	if err != nil {
		return err
	}
	set := func(s image.BlobSet) imageDuSet { return imageDuSet(s) }
	if opts.JSON {
		return writeJSON(stdout, struct {
			Layout  string       `json:"layout"`
			Shared  imageDuSet   `json:"shared"`
			Unique  imageDuSet   `json:"unique"`
			Garbage imageDuSet   `json:"garbage"`
			Total   imageDuSet   `json:"total"`
			Missing int          `json:"missing"`
			Tags    []imageLsTag `json:"tags"`
		}{args[0], set(u.Shared), set(u.Unique), set(u.Garbage), set(u.Total), u.Missing, imageLsTags(u)})
	}
	blobs := func(s image.BlobSet) string {
		if s.Count == 1 {
			return "1 blob, " + imageLsBytes(s.Bytes)
		}
		return fmt.Sprintf("%d blobs, %s", s.Count, imageLsBytes(s.Bytes))
	}
	fields := []field{
		{"images", fmt.Sprint(len(u.Tags))},
		{"shared", blobs(u.Shared) + " (referenced by 2 or more images)"},
		{"unique", blobs(u.Unique) + " (referenced by 1 image)"},
		{"garbage", blobs(u.Garbage) + " (referenced by no image)"},
		{"total", blobs(u.Total) + " in blobs/sha256"},
	}
	if u.Missing > 0 {
		fields = append(fields, field{"missing", fmt.Sprintf("%d blobs referenced but absent", u.Missing)})
	}
	for _, t := range u.Tags {
		fields = append(fields, field{"only " + imageLsTagName(t.Tag), imageLsBytes(t.UniqueBytes) + " of " + imageLsBytes(t.StoredBytes)})
	}
	return writeFields(stdout, fields)
}

// imageLsBytes shows a size in binary units with the exact byte count:
// "15 B", "300.0 KiB (307200 B)".
func imageLsBytes(n int64) string {
	if n < 1024 {
		return imageBytes(n)
	}
	return fmt.Sprintf("%s (%d B)", imageBytes(n), n)
}

// runImageLsRemote lists the images of a registry repository (every tag)
// or one image in it, from their manifests and metadata.
func runImageLsRemote(ctx context.Context, opts *imageLsOptions, arg string, stdin io.Reader, stdout io.Writer) error {
	ref, err := parseRegistryRef(arg, false)
	if err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	repo, err := opts.open(ref, stdin)
	if err != nil {
		return err
	}
	refs := []string{ref.Manifest()}
	if ref.Manifest() == "" {
		if refs, err = repo.Tags(ctx); err != nil {
			return imageError(err, ExitRegistryNotFound)
		}
	}
	remote, err := image.NewRemote(repo, &image.RemoteOptions{CacheDir: opts.Cache})
	if err != nil {
		return withCode(ExitError, err)
	}
	tags := []imageLsTag{}
	for _, r := range refs {
		im, err := image.OpenImageFrom(ctx, remote, r, nil)
		if errors.Is(err, errs.ErrUnsupported) && ref.Manifest() == "" {
			// Another kind of artifact shares the repository.
			tags = append(tags, imageLsTag{Tag: r, Note: "not a PuzzleFS image"})
			continue
		}
		if err != nil {
			return imageError(err, ExitRegistryNotFound)
		}
		u, err := im.Usage()
		if err != nil {
			return imageError(err, ExitCorrupt)
		}
		tags = append(tags, imageLsTag{
			Tag: r, Manifest: u.Manifest.OCI(), RootfsSize: u.RootfsSize, Files: u.Files,
			LogicalBytes: u.LogicalBytes, Chunks: u.Chunks, StoredBytes: u.StoredBytes,
		})
	}
	if opts.JSON {
		return writeJSON(stdout, struct {
			Repository string       `json:"repository"`
			Tags       []imageLsTag `json:"tags"`
		}{ref.Name(), tags})
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TAG\tMANIFEST\tFILES\tLOGICAL\tSTORED")
	for _, t := range tags {
		if t.Note != "" {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t(%s)\n", t.Tag, t.Note)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", t.Tag, strings.TrimPrefix(t.Manifest, "sha256:")[:12], t.Files, imageLsBytes(int64(t.LogicalBytes)), imageLsBytes(t.StoredBytes))
	}
	return tw.Flush()
}
