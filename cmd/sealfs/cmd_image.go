package main

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/sealfs/sealfs/errs"

	"github.com/sealfs/sealfs/image"
	"github.com/spf13/cobra"
)

const ociImageLong = `PuzzleFS container images (manifest version 3), interoperable with the
puzzlefs tool: an OCI image layout whose manifests point at a Cap'n Proto
metadata blob and at content-defined (FastCDC) chunks named by their sha256,
shared between every image in the layout.

An image is named OCIDIR:TAG. The root of trust is the fs-verity digest of
the image's manifest blob, printed by 'image build'; given with --digest, it
checks the whole chain (manifest, metadata, every chunk) before any byte is
used. Without --digest every blob is still checked against its sha256 name.

Images travel through OCI registries: 'image push' uploads the blobs a
registry lacks, 'image pull' downloads into a layout, and extract, mount
and ls take a registry reference (REGISTRY/REPOSITORY:TAG) wherever they
take OCIDIR:TAG; a mount of one is lazy, fetching each chunk when first
read, verified, into a local cache.

Exit status 4 means a blob failed its sha256 or fs-verity check, 5 that the
layout or metadata is malformed or of an unsupported kind, 6 that the tag
does not exist; 11 to 14 are registry failures (unauthorized, not found,
digest mismatch, unreachable).`

// imageSubcommands are the 'image' subcommands; each file registers its own
// in an init function so that they stay independent.
var imageSubcommands []func(g *globalOptions) *cobra.Command

func newImageCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Build, extract and mount PuzzleFS container images",
		Long:  ociImageLong,
		Example: `  sealfs image build rootfs/ oci:v1
  sealfs image build --base v1 rootfs-v2/ oci:v2
  sealfs image extract --digest HEX oci:v2 out/
  sealfs image mount --digest HEX oci:v2 /mnt/v2
  sealfs image push oci:v2 registry.example.com/team/rootfs:v2
  sealfs image mount --digest HEX registry.example.com/team/rootfs:v2 /mnt/v2`,
	}
	for _, sub := range imageSubcommands {
		cmd.AddCommand(sub(g))
	}
	return cmd
}

// parseImageRef splits OCIDIR:TAG at its last colon (OCIDIR may contain
// colons; tags may not).
func parseImageRef(ref string) (dir, tag string, err error) {
	i := strings.LastIndexByte(ref, ':')
	if i <= 0 || i == len(ref)-1 {
		return "", "", usageErrorf("image %q: want OCIDIR:TAG", ref)
	}
	dir, tag = ref[:i], ref[i+1:]
	if strings.ContainsAny(tag, "/") {
		return "", "", usageErrorf("image %q: tag %q may not contain '/'", ref, tag)
	}
	return dir, tag, nil
}

// parseRootDigest parses an optional --digest value; "" means none.
func parseRootDigest(s string) (*image.Digest, error) {
	if s == "" {
		return nil, nil
	}
	d, err := image.ParseVerityDigest(s)
	if err != nil {
		return nil, usageErrorf("--digest: want the 64 hex digits 'image build' printed")
	}
	return &d, nil
}

// openImageTag opens OCIDIR and the image TAG for extract, mount and ls. A missing OCIDIR is a
// plain error (1), a missing tag 6; once the tag exists, a missing blob
// means a broken layout (5).
func openImageTag(ociDir, tag string, root *image.Digest) (*image.Image, error) {
	l, err := image.OpenLayout(ociDir)
	if err != nil {
		return nil, imageError(err, ExitError)
	}
	tags, err := l.Tags()
	if err != nil {
		return nil, imageError(err, ExitError)
	}
	if !slices.Contains(tags, tag) {
		return nil, withCode(ExitNotFound, fmt.Errorf("image: %s has no tag %q: %w", ociDir, tag, fs.ErrNotExist))
	}
	im, err := l.OpenImage(tag, root)
	if err != nil {
		return nil, imageError(err, ExitCorrupt)
	}
	return im, nil
}

// imageError gives a library error its exit code; notExist is the
// code for fs.ErrNotExist, whose meaning depends on what was being opened.
func imageError(err error, notExist int) error {
	if code := registryExitCode(err); code != 0 {
		return withCode(code, err)
	}
	switch {
	case errors.Is(err, errs.ErrAuthentication):
		return withCode(ExitAuthentication, err)
	case errors.Is(err, errs.ErrCorrupt), errors.Is(err, errs.ErrUnsupported), errors.Is(err, errs.ErrUnsupportedAlgorithm):
		return withCode(ExitCorrupt, err)
	case errors.Is(err, fs.ErrNotExist):
		return withCode(notExist, err)
	}
	return withCode(ExitError, err)
}

// imageBytes prints a byte count in binary units ("1.5 MiB", "12 B").
func imageBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, u := float64(n), 0
	for v >= unit && u < 6 {
		v /= unit
		u++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[u-1])
}
