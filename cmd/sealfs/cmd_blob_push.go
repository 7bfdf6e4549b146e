package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sealfs/sealfs/blob"
	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/registry"
)

// blobRegistryOptions are the flags of 'blob push' and 'blob pull'.
type blobRegistryOptions struct {
	JSON bool
	registryOptions
	MountFrom []string
}

func (o *blobRegistryOptions) AddFlags(fs *pflag.FlagSet, push bool) {
	o.registryOptions.AddFlags(fs)
	if push {
		fs.StringArrayVar(&o.MountFrom, "mount-from", nil, "mount blobs that `REPOSITORY` of the same registry has instead of uploading them (repeatable)")
	}
}

func newBlobPushCommand(g *globalOptions) *cobra.Command {
	opts := &blobRegistryOptions{}
	cmd := &cobra.Command{
		Use:   "push STORE REGISTRY/REPOSITORY:TAG",
		Short: "Upload a blob store to an OCI registry as one artifact",
		Long: `Upload every blob of STORE to a repository of an OCI registry as one artifact
(an OCI manifest of type ` + blob.ArtifactType + ` with one layer per
blob, annotated with the blob's name; see docs/format/oci-blob-store.md) and
tag it TAG. Each blob is read and verified to compute the sha256 registries
name it by; only blobs the registry lacks are uploaded (HEAD first, mounted
with --mount-from where another repository has them), several at a time. A
progress bar is drawn on a terminal; the summary line is always printed.
` + registryFlagsHelp,
		Example: `  sealfs blob push store registry.example.com/team/blobs:v1
  sealfs blob push --plain-http store 127.0.0.1:5000/blobs:latest`,
	}
	opts.AddFlags(cmd.Flags(), true)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		opts.JSON = g.JSON
		return asRunError(runBlobPush(cmd.Context(), opts, args, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()))
	}
	return cmd
}

func newBlobPullCommand(g *globalOptions) *cobra.Command {
	opts := &blobRegistryOptions{}
	cmd := &cobra.Command{
		Use:   "pull REGISTRY/REPOSITORY:TAG|@DIGEST STORE",
		Short: "Install a blob store artifact from an OCI registry into STORE",
		Long: `Install every blob of a blob store artifact (made by 'blob push') into STORE,
creating STORE if it does not exist. Each blob streams from the registry
into the store's verified install path: it becomes visible only if its
bytes match both the sha256 the registry names it by and the blob name the
artifact records. Blobs STORE has already are skipped, so an interrupted
pull resumes; blobs of STORE the artifact lacks are kept.

The names are those the manifest records: pin it with @DIGEST to be sure it
is the artifact you pushed. Exit status 13 means the registry served other
bytes than the sha256 names, 4 that the bytes do not match the name the
artifact gives them; nothing of such a blob is installed.
` + registryFlagsHelp,
		Example: `  sealfs blob pull registry.example.com/team/blobs:v1 store
  sealfs blob pull --plain-http 127.0.0.1:5000/blobs@sha256:... store`,
	}
	opts.AddFlags(cmd.Flags(), false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		opts.JSON = g.JSON
		return asRunError(runBlobPull(cmd.Context(), opts, args, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()))
	}
	return cmd
}

// blobRegistryError gives a push or pull failure its exit status.
func blobRegistryError(err error) error {
	if code := registryExitCode(err); code != 0 {
		return withCode(code, err)
	}
	switch {
	case errors.Is(err, errs.ErrAuthentication):
		return withCode(ExitAuthentication, err)
	case errors.Is(err, blob.ErrNotStore), errors.Is(err, errs.ErrUnsupported), errors.Is(err, errs.ErrCorrupt):
		return withCode(ExitCorrupt, err)
	}
	return withCode(ExitError, err)
}

type blobPushResult struct {
	Store    string             `json:"store"`
	To       string             `json:"to"`
	Manifest string             `json:"manifest"`
	Blobs    int                `json:"blobs"`
	Uploaded registry.Count     `json:"uploaded"`
	Mounted  registry.Count     `json:"mounted"`
	Skipped  registry.Count     `json:"skipped"`
	Traffic  registryTrafficOut `json:"traffic"`
}

func runBlobPush(ctx context.Context, o *blobRegistryOptions, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if err := needArgs(args, "STORE", "REGISTRY/REPOSITORY:TAG"); err != nil {
		return err
	}
	ref, err := parseRegistryRef(args[1], false)
	if err != nil {
		return err
	}
	if ref.Tag == "" || ref.Digest != "" {
		return usageErrorf("%q: want REGISTRY/REPOSITORY:TAG", args[1])
	}
	s, err := openBlobStore(args[0], false)
	if err != nil {
		return err
	}
	repo, err := o.open(ref, stdin)
	if err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	progress, finish := transferProgress(stderr, "pushing")
	res, err := blob.Push(ctx, s, repo, ref.Tag, &blob.RegistryOptions{Concurrency: o.Concurrency, MountFrom: o.MountFrom, Progress: progress})
	finish()
	if err != nil {
		return blobRegistryError(err)
	}
	out := blobPushResult{
		Store: args[0], To: ref.String(), Manifest: res.Manifest.String(), Blobs: res.Blobs,
		Uploaded: res.Transfer.Uploaded, Mounted: res.Transfer.Mounted, Skipped: res.Transfer.Skipped, Traffic: traffic(repo),
	}
	if o.JSON {
		return writeJSON(stdout, out)
	}
	_, err = fmt.Fprintf(stdout, "pushed %d blobs of %s to %s: %s uploaded, %s mounted, %s skipped (already there); manifest %s\n",
		out.Blobs, out.Store, out.To, countText(out.Uploaded), countText(out.Mounted), countText(out.Skipped), out.Manifest)
	return err
}

type blobPullResult struct {
	From      string             `json:"from"`
	Store     string             `json:"store"`
	Manifest  string             `json:"manifest"`
	Installed registry.Count     `json:"installed"`
	Present   registry.Count     `json:"present"`
	Traffic   registryTrafficOut `json:"traffic"`
}

func runBlobPull(ctx context.Context, o *blobRegistryOptions, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if err := needArgs(args, "REGISTRY/REPOSITORY:TAG", "STORE"); err != nil {
		return err
	}
	ref, err := parseRegistryRef(args[0], true)
	if err != nil {
		return err
	}
	repo, err := o.open(ref, stdin)
	if err != nil {
		return err
	}
	s, err := openBlobStore(args[1], true)
	if err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	progress, finish := transferProgress(stderr, "pulling")
	res, err := blob.Pull(ctx, repo, ref.Manifest(), s, &blob.RegistryOptions{Concurrency: o.Concurrency, Progress: progress})
	finish()
	if err != nil {
		return blobRegistryError(err)
	}
	out := blobPullResult{From: ref.String(), Store: args[1], Manifest: res.Manifest.String(), Installed: res.Installed, Present: res.Present, Traffic: traffic(repo)}
	if o.JSON {
		return writeJSON(stdout, out)
	}
	_, err = fmt.Fprintf(stdout, "pulled %s to %s: %s installed, %s already present; manifest %s\n",
		out.From, out.Store, countText(out.Installed), countText(out.Present), out.Manifest)
	return err
}
