package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/sealfs/sealfs/cocoonfs"
	"github.com/spf13/cobra"
)

// infoOptions has only the shared flags (AddFlags comes with them); the key
// is optional.
type infoOptions struct {
	imageOptions
}

func newInfoCommand(g *globalOptions) *cobra.Command {
	opts := &infoOptions{}
	cmd := &cobra.Command{
		Use:   "info IMAGE",
		Short: "Show an image's header; with a key, its root digest and update counter",
		Long: `Show the header of IMAGE: its kind, layout sizes, the seven algorithms (TCG
name and id), salt, image and device size and journal state. These need no key.

With a key, info also opens and authenticates the image and shows the root
digest, update counter, file count, allocated and total blocks and the
authentication tree height. Store the root digest and update counter
somewhere trusted: an image later presented with a lower counter, or the same
counter and another digest, has been rolled back or replaced.

An image holding only a filesystem creation info header (keyless
provisioning) has no root digest yet; info shows its parameters and ignores
the key.
` + keyHelp,
		Example: `  sealfs info disk.img
  sealfs info --key-file disk.key disk.img
  SEALFS_KEY_FILE=disk.key sealfs info --json disk.img`,
	}
	opts.AddFlags(cmd.Flags())
	cmd.RunE = runE(g, &opts.imageOptions, func(cmd *cobra.Command, args []string) error {
		return runInfo(cmd.Context(), opts, args, cmd.OutOrStdout(), cmd.ErrOrStderr())
	})
	return cmd
}

func runInfo(_ context.Context, opts *infoOptions, args []string, stdout, _ io.Writer) error {
	if err := needArgs(args, "IMAGE"); err != nil {
		return err
	}
	var key []byte
	if opts.Key.given() {
		var err error
		if key, err = opts.Key.load(); err != nil {
			return err
		}
		defer clear(key)
	}
	dev, err := openDevice(args[0])
	if err != nil {
		return err
	}
	defer dev.Close()
	hi, err := cocoonfs.ReadHeaderInfo(dev)
	if err != nil {
		return err
	}
	if key == nil || hi.Kind != cocoonfs.KindFilesystem {
		if opts.JSON {
			return writeJSON(stdout, hi)
		}
		fields := headerFields(hi)
		if key != nil {
			fields = append(fields, field{"key", "not checked: the image holds no filesystem yet"})
		}
		return writeFields(stdout, fields)
	}
	f, err := cocoonfs.Open(dev, key, &cocoonfs.Options{Force: opts.Force})
	clear(key)
	if err != nil {
		return err
	}
	defer f.Close()
	in, err := f.Info()
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(stdout, in)
	}
	return writeFields(stdout, append(headerFields(&in.HeaderInfo),
		field{"root digest", in.RootDigest},
		field{"update counter", in.UpdateCounter},
		field{"files", fmt.Sprint(in.Files)},
		field{"allocated blocks", fmt.Sprint(in.AllocatedBlocks)},
		field{"total blocks", fmt.Sprint(in.TotalBlocks)},
		field{"auth tree height", fmt.Sprint(in.AuthTree.Height)},
	))
}

// kindNotes says what a header-only image means for its owner.
var kindNotes = map[cocoonfs.HeaderKind]string{
	cocoonfs.KindMkfsInfo: "filesystem creation info header only: the image is formatted on its first read-write open with a key",
	cocoonfs.KindMkfsInfoBackup: "the primary header is invalid but the backup filesystem creation info header is intact " +
		"(an interrupted format): the image is formatted on its first read-write open with a key",
}

func headerFields(h *cocoonfs.HeaderInfo) []field {
	bytes := func(n uint64) string { return fmt.Sprintf("%d bytes", n) }
	alg := func(a cocoonfs.Algorithm) string { return fmt.Sprintf("%s (0x%04x)", a.Name, a.ID) }
	l, a := h.Layout, h.Algorithms
	fs := []field{{"kind", string(h.Kind)}}
	if note, ok := kindNotes[h.Kind]; ok {
		fs = append(fs, field{"note", note})
	}
	fs = append(fs,
		field{"image size", bytes(h.ImageSize)},
		field{"device size", bytes(h.DeviceSize)},
		field{"allocation block", bytes(l.AllocationBlock)},
		field{"io block", bytes(l.IOBlock)},
		field{"auth tree node", bytes(l.AuthTreeNode)},
		field{"auth tree data block", bytes(l.AuthTreeDataBlock)},
		field{"allocation bitmap block", bytes(l.AllocationBitmapBlock)},
		field{"index leaf node", bytes(l.IndexLeafNode)},
		field{"index internal node", bytes(l.IndexInternalNode)},
		field{"auth tree node hash", alg(a.AuthTreeNodeHash)},
		field{"auth tree data hmac hash", alg(a.AuthTreeDataHMACHash)},
		field{"auth tree root hmac hash", alg(a.AuthTreeRootHMACHash)},
		field{"preauth cca hmac hash", alg(a.PreauthCCAHMACHash)},
		field{"kdf hash", alg(a.KDFHash)},
		field{"block cipher", fmt.Sprintf("%s, %d-bit key, %s mode", alg(a.BlockCipher), a.BlockCipherKeyBits, a.BlockCipherMode)},
		field{"salt", h.Salt},
	)
	if len(a.UnsupportedAlgorithms) > 0 {
		fs = append(fs, field{"unsupported algorithms", strings.Join(a.UnsupportedAlgorithms, ", ")})
	}
	if h.Kind == cocoonfs.KindFilesystem {
		fs = append(fs, field{"journal", cmp.Or(h.Journal, "unknown")})
	} else {
		fs = append(fs, field{"aux metadata length", bytes(h.AuxMetadataLen)})
	}
	return fs
}
