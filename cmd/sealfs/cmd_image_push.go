package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sealfs/sealfs/image"
	"github.com/sealfs/sealfs/registry"
)

func init() {
	imageSubcommands = append(imageSubcommands, newImagePushCommand, newImagePullCommand)
}

// imagePushOptions are the flags of 'image push'.
type imagePushOptions struct {
	JSON bool
	registryOptions
	MountFrom []string
}

func (o *imagePushOptions) AddFlags(fs *pflag.FlagSet) {
	o.registryOptions.AddFlags(fs)
	fs.StringArrayVar(&o.MountFrom, "mount-from", nil, "mount blobs that `REPOSITORY` of the same registry has instead of uploading them (repeatable)")
}

func newImagePushCommand(g *globalOptions) *cobra.Command {
	opts := &imagePushOptions{}
	cmd := &cobra.Command{
		Use:   "push OCIDIR:TAG REGISTRY/REPOSITORY[:TAG]",
		Short: "Upload an image to an OCI registry, only the blobs it lacks",
		Long: `Upload image OCIDIR:TAG to a repository of an OCI registry and tag it there
(with the local tag when the reference names none). The manifest is pushed
byte for byte, so the image keeps its digest and its fs-verity root digest:
mount or pull it with the --digest 'image build' printed.

Each blob is first checked with a HEAD request and skipped if the registry
has it; blobs another repository of the registry has are mounted from it
with --mount-from (no bytes uploaded); the rest are uploaded, several at a
time (--concurrency), each checked against its name as it is read. The
manifest goes last, once the registry has every blob it names. A progress
bar (blobs, bytes, rate) is drawn on a terminal; the summary line of
uploaded, mounted and skipped bytes is always printed.
` + registryFlagsHelp,
		Example: `  sealfs image push oci:v1 registry.example.com/team/rootfs:v1
  sealfs image push --plain-http oci:v2 127.0.0.1:5000/rootfs
  echo "$TOKEN" | sealfs image push -u ci --password-stdin --mount-from team/base oci:v2 ghcr.io/team/app:v2`,
	}
	opts.AddFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		opts.JSON = g.JSON
		return asRunError(runImagePush(cmd.Context(), opts, args, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()))
	}
	return cmd
}

type imagePushResult struct {
	Image      string             `json:"image"`
	To         string             `json:"to"`
	Manifest   string             `json:"manifest"`
	RootDigest string             `json:"root_digest"`
	Uploaded   registry.Count     `json:"uploaded"`
	Mounted    registry.Count     `json:"mounted"`
	Skipped    registry.Count     `json:"skipped"`
	Traffic    registryTrafficOut `json:"traffic"`
}

// registryTrafficOut is the HTTP body bytes a command moved.
type registryTrafficOut struct {
	Requests int64 `json:"requests"`
	Sent     int64 `json:"sent"`
	Received int64 `json:"received"`
}

func traffic(repo *registry.Repository) registryTrafficOut {
	s := repo.Stats()
	return registryTrafficOut{s.Requests, s.BytesSent, s.BytesReceived}
}

func runImagePush(ctx context.Context, o *imagePushOptions, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if err := needArgs(args, "OCIDIR:TAG", "REGISTRY/REPOSITORY[:TAG]"); err != nil {
		return err
	}
	dir, tag, err := parseImageRef(args[0])
	if err != nil {
		return err
	}
	ref, err := parseRegistryRef(args[1], false)
	if err != nil {
		return err
	}
	if ref.Digest != "" {
		return usageErrorf("%q: a push names a tag, not a digest", args[1])
	}
	if ref.Tag == "" {
		ref.Tag = tag
	}
	if ctx == nil {
		ctx = context.Background()
	}
	l, err := image.OpenLayout(dir)
	if err != nil {
		return imageError(err, ExitError)
	}
	if _, err := l.Manifest(tag); err != nil {
		return imageError(err, ExitNotFound)
	}
	repo, err := o.open(ref, stdin)
	if err != nil {
		return err
	}
	progress, finish := transferProgress(stderr, "pushing")
	res, err := image.Push(ctx, l, tag, repo, ref.Tag, image.PushOptions{Concurrency: o.Concurrency, MountFrom: o.MountFrom, Progress: progress})
	finish()
	if err != nil {
		return imageError(err, ExitCorrupt)
	}
	out := imagePushResult{
		Image: args[0], To: ref.String(), Manifest: res.Manifest.OCI(), RootDigest: res.RootDigest.String(),
		Uploaded: res.Blobs.Uploaded, Mounted: res.Blobs.Mounted, Skipped: res.Blobs.Skipped, Traffic: traffic(repo),
	}
	if o.JSON {
		return writeJSON(stdout, out)
	}
	_, err = fmt.Fprintf(stdout, "pushed %s to %s: %s uploaded, %s mounted, %s skipped (already there); manifest %s, root digest %s\n",
		out.Image, out.To, countText(out.Uploaded), countText(out.Mounted), countText(out.Skipped), out.Manifest, out.RootDigest)
	return err
}

// imagePullOptions are the flags of 'image pull'.
type imagePullOptions struct {
	JSON   bool
	Digest string
	imageSourceOptions
}

func (o *imagePullOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Digest, "digest", "", "check the manifest, metadata and every chunk against this trusted fs-verity root `HEX` before tagging")
	o.imageSourceOptions.AddFlags(fs)
}

func newImagePullCommand(g *globalOptions) *cobra.Command {
	opts := &imagePullOptions{}
	cmd := &cobra.Command{
		Use:   "pull REGISTRY/REPOSITORY:TAG|@DIGEST OCIDIR:TAG",
		Short: "Download an image from an OCI registry into a layout",
		Long: `Download an image from a repository of an OCI registry into the OCI layout
OCIDIR (created if needed) and tag it TAG there.

Every blob is fetched whole, several at a time (--concurrency), checked
against its sha256 (and with --digest against the fs-verity chain from the
trusted root digest) and only then linked into the layout under its name,
as 'image build' writes them; blobs are synced before the manifest, and
index.json is replaced last. An interrupted pull leaves the layout's tags
as they were and only whole blobs, and pulling again fetches only what is
missing. Blobs already in the layout, or in the cache lazy mounts fill
(--cache), are not fetched. A progress bar is drawn on a terminal; the
summary of fetched and present bytes is always printed.

Without --digest, the image is whatever the registry says the tag is: give
the digest 'image build' printed to make sure it is the image you built.
` + registryFlagsHelp,
		Example: `  sealfs image pull --digest HEX registry.example.com/team/rootfs:v1 oci:v1
  sealfs image pull --plain-http 127.0.0.1:5000/rootfs@sha256:... oci:pinned`,
	}
	opts.AddFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		opts.JSON = g.JSON
		return asRunError(runImagePull(cmd.Context(), opts, args, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()))
	}
	return cmd
}

type imagePullResult struct {
	From       string             `json:"from"`
	Image      string             `json:"image"`
	Manifest   string             `json:"manifest"`
	RootDigest string             `json:"root_digest"`
	Verity     bool               `json:"verity"`
	Fetched    registry.Count     `json:"fetched"`
	Cached     registry.Count     `json:"cached"`
	Present    registry.Count     `json:"present"`
	Traffic    registryTrafficOut `json:"traffic"`
}

func runImagePull(ctx context.Context, o *imagePullOptions, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if err := needArgs(args, "REGISTRY/REPOSITORY:TAG", "OCIDIR:TAG"); err != nil {
		return err
	}
	ref, err := parseRegistryRef(args[0], true)
	if err != nil {
		return err
	}
	dir, tag, err := parseImageRef(args[1])
	if err != nil {
		return err
	}
	if !image.ValidTag(tag) {
		return usageErrorf("tag %q: want letters, digits, '_', '.' or '-' (at most 128, not starting with '.' or '-')", tag)
	}
	root, err := parseRootDigest(o.Digest)
	if err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	repo, err := o.open(ref, stdin)
	if err != nil {
		return err
	}
	progress, finish := transferProgress(stderr, "pulling")
	res, err := image.Pull(ctx, repo, ref.Manifest(), dir, tag, image.PullOptions{
		RootDigest: root, CacheDir: o.Cache, Concurrency: o.Concurrency, Progress: progress,
	})
	finish()
	if err != nil {
		return imageError(err, ExitError)
	}
	out := imagePullResult{
		From: ref.String(), Image: args[1], Manifest: res.Manifest.OCI(), RootDigest: res.RootDigest.String(), Verity: res.Verity,
		Fetched: res.Fetched, Cached: res.Cached, Present: res.Present, Traffic: traffic(repo),
	}
	if o.JSON {
		return writeJSON(stdout, out)
	}
	check := "sha256 checked"
	if res.Verity {
		check = "fs-verity chain checked"
	}
	_, err = fmt.Fprintf(stdout, "pulled %s to %s: %s fetched, %s from the cache, %s already present; root digest %s; %s\n",
		out.From, out.Image, countText(out.Fetched), countText(out.Cached), countText(out.Present), out.RootDigest, check)
	return err
}
