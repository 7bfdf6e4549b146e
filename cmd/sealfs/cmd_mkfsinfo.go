package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

type mkfsinfoOptions struct {
	imageOptions // only JSON and Force: mkfsinfo takes no key
	layoutOptions
	Trim     bool
	AuxFiles []string // UUID=PATH
}

func (o *mkfsinfoOptions) AddFlags(fs *pflag.FlagSet) {
	o.layoutOptions.AddFlags(fs)
	fs.BoolVar(&o.Trim, "trim", false, "cut IMAGE down to the header and its aux metadata; the first open grows it back to --size")
	fs.StringArrayVar(&o.AuxFiles, "aux-file", nil, "store the contents of file PATH as an aux metadata entry tagged UUID (`UUID=PATH`; repeatable)")
	fs.BoolVarP(&o.Force, "force", "f", false, "write even if the device's block size exceeds the IO block (the image could not be used safely there)")
}

func newMkfsinfoCommand(g *globalOptions) *cobra.Command {
	opts := &mkfsinfoOptions{}
	cmd := &cobra.Command{
		Use:   "mkfsinfo IMAGE",
		Short: "Mark an image for CocoonFS creation on first use (no key needed)",
		Long: `Write a filesystem creation info header to IMAGE: the size, algorithms, layout
and salt of a CocoonFS filesystem to create, without the key. Whoever first
opens IMAGE read-write with a key formats it as asked (the first key claims
it), so a volume can be provisioned by a party that never sees the key.

The header is not authenticated: whoever formats the image must check its
algorithms and salt (sealfs info shows them) by other means if an attacker
could have changed them.

--aux-file UUID=PATH stores the contents of PATH as plaintext aux metadata
tagged UUID (for example a wrapped key for an attestation service); the
filesystem keeps it after formatting. IMAGE is created if it does not exist;
an existing IMAGE is overwritten only with --overwrite. With --trim only the
header and the aux metadata remain; without it the image is made --size bytes
(or keeps its size if larger).`,
		Example: `  sealfs mkfsinfo disk.img --size 64M
  sealfs mkfsinfo disk.img --size 64M --trim --aux-file 12345678-9abc-def0-1122-334455667788=wrapped.key
  sealfs mkfsinfo /dev/vdb --overwrite --hash sha3 --cipher camellia --strength 256`,
	}
	opts.AddFlags(cmd.Flags())
	cmd.RunE = runE(g, &opts.imageOptions, func(cmd *cobra.Command, args []string) error {
		return runMkfsinfo(cmd.Context(), opts, args, cmd.OutOrStdout(), cmd.ErrOrStderr())
	})
	return cmd
}

// parseUUID accepts the canonical 8-4-4-4-12 form or 32 hex digits.
func parseUUID(s string) ([16]byte, error) {
	var u [16]byte
	h := s
	if len(s) == 36 && s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-' {
		h = s[:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 16 {
		return u, usageErrorf("--aux-file: invalid UUID %q: want 8-4-4-4-12 hex digits", s)
	}
	copy(u[:], b)
	if u == ([16]byte{}) {
		return u, usageErrorf("--aux-file: the all-zero UUID is reserved")
	}
	return u, nil
}

func formatUUID(u [16]byte) string {
	h := hex.EncodeToString(u[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// auxEntryInfo describes a stored aux entry in the output.
type auxEntryInfo struct {
	UUID string `json:"uuid"`
	Size int    `json:"size"`
	File string `json:"file"`
}

// mkfsinfoResult is mkfsinfo's JSON output.
type mkfsinfoResult struct {
	Image      string         `json:"image"`
	Created    bool           `json:"created"`
	AuxEntries []auxEntryInfo `json:"aux_entries"`
	*cocoonfs.HeaderInfo
}

func runMkfsinfo(_ context.Context, opts *mkfsinfoOptions, args []string, stdout, _ io.Writer) (err error) {
	if err := needArgs(args, "IMAGE"); err != nil {
		return err
	}
	mo, size, err := opts.layout()
	if err != nil {
		return err
	}
	io := &cocoonfs.MkfsInfoOptions{
		Size: size, Hash: mo.Hash, Cipher: mo.Cipher, Strength: mo.Strength, Salt: mo.Salt,
		AllocationBlock: mo.AllocationBlock, IOBlock: mo.IOBlock, AuthTreeDataBlock: mo.AuthTreeDataBlock,
		AuthTreeNode: mo.AuthTreeNode, IndexNode: mo.IndexNode, BitmapBlock: mo.BitmapBlock,
		AuxReserve: mo.AuxReserve, NoAuxReserve: mo.NoAuxReserve, Trim: opts.Trim, Force: opts.Force,
	}
	entries := []auxEntryInfo{}
	for _, a := range opts.AuxFiles {
		u, path, ok := strings.Cut(a, "=")
		if !ok || path == "" {
			return usageErrorf("--aux-file %q: want UUID=PATH", a)
		}
		uuid, err := parseUUID(u)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return withCode(ExitError, fmt.Errorf("--aux-file: %w", err))
		}
		if int64(len(data)) > 1<<32-1 {
			return usageErrorf("--aux-file %s: %d bytes exceed 4 GiB", path, len(data))
		}
		io.AuxEntries = append(io.AuxEntries, cocoonfs.AuxEntry{UUID: uuid, Data: data})
		entries = append(entries, auxEntryInfo{UUID: formatUUID(uuid), Size: len(data), File: path})
	}

	// A new file starts empty when trimmed anyway; WriteMkfsInfo sizes it.
	create := size
	if opts.Trim {
		create = 0
	}
	t, err := openTarget(args[0], create, opts.Overwrite, opts.Size != "")
	if err != nil {
		return err
	}
	defer func() { t.close(err != nil) }()
	if err := cocoonfs.WriteMkfsInfo(t.dev, io); err != nil {
		if errors.Is(err, blockdev.ErrReadOnly) {
			return withCode(ExitError, err)
		}
		return err
	}
	hi, err := cocoonfs.ReadHeaderInfo(t.dev)
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(stdout, mkfsinfoResult{Image: t.path, Created: t.created, AuxEntries: entries, HeaderInfo: hi})
	}
	fields := append([]field{{"image", createdNote(t)}}, headerFields(hi)...)
	for _, e := range entries {
		fields = append(fields, field{"aux entry", fmt.Sprintf("%s, %d bytes from %s", e.UUID, e.Size, e.File)})
	}
	return writeFields(stdout, fields)
}
