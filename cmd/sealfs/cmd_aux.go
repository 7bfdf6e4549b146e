package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

const auxLong = `Auxiliary filesystem metadata is a list of plaintext records, each tagged with
a UUID, that CocoonFS keeps next to the encrypted filesystem so that it can be
read, and changed, without the key: a wrapped key for a key broker, for
example. Several records may share a UUID; UUID#INDEX names the INDEX-th
(from 0) of them, and INDEX defaults to 0.

Nothing in it is authenticated: anyone who can write the image can change it.
Whoever uses a record must authenticate it by other means.

Without a key, add, rm and set-reserve update the image offline, in place and
crash-safely: a power cut at any point leaves the old or the new records.
They use the room the image set aside for such offline updates (the extra
reserve). With a key (--key-file, --key-hex or SEALFS_KEY_FILE) they update
online instead, in a journaled transaction that lays out new update groups
sized for the records plus the reserve: that works when the reserve is used
up, and restores it.`

// auxOptions are the flags every aux subcommand shares.
type auxOptions struct {
	JSON  bool // the global --json flag
	Force bool // write even if the device block size exceeds the IO block
	Key   keyOptions
}

func (o *auxOptions) addForce(fs *pflag.FlagSet) {
	fs.BoolVarP(&o.Force, "force", "f", false,
		"write even if the device's block size exceeds the image's IO block (a power cut could then damage a neighbouring block)")
	o.Key.AddFlags(fs)
}

type auxReadOptions struct {
	auxOptions
	Output string
}

func newAuxCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "aux",
		Short: "List, read and change an image's auxiliary metadata (plaintext records)",
		Long:  auxLong,
		Example: `  sealfs aux ls disk.img
  sealfs aux read disk.img 12345678-9abc-def0-1122-334455667788#1 -o wrapped.key
  sealfs aux add disk.img 12345678-9abc-def0-1122-334455667788 wrapped.key
  sealfs aux rm disk.img 12345678-9abc-def0-1122-334455667788#0
  sealfs aux set-reserve disk.img 4096`,
	}
	bind := func(o *auxOptions, run func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			o.JSON = g.JSON
			o.Key.EnvFile = os.Getenv(keyFileEnv)
			o.Key.Stdin = cmd.InOrStdin()
			if err := run(cmd, args); err != nil {
				return &runError{err}
			}
			return nil
		}
	}

	lsOpts := &auxOptions{}
	ls := &cobra.Command{
		Use:   "ls IMAGE",
		Short: "List the auxiliary metadata records",
		Long: `List the auxiliary metadata records of IMAGE, one line each: UUID, index
among the records with that UUID, and size in bytes. --json adds the extra
reserve, the room an offline update has and the bytes in use.`,
		Example: `  sealfs aux ls disk.img
  sealfs aux ls --json disk.img`,
	}
	ls.RunE = bind(lsOpts, func(cmd *cobra.Command, args []string) error {
		return runAuxLs(cmd.Context(), lsOpts, args, cmd.OutOrStdout())
	})

	readOpts := &auxReadOptions{}
	read := &cobra.Command{
		Use:   "read IMAGE UUID[#INDEX]",
		Short: "Write a record's data to stdout or a file",
		Long: `Write the data of record UUID#INDEX of IMAGE to stdout, or with -o to FILE
(written to a temporary file and renamed, mode 0600). The data is not
authenticated.`,
		Example: `  sealfs aux read disk.img 12345678-9abc-def0-1122-334455667788 > wrapped.key`,
	}
	read.Flags().StringVarP(&readOpts.Output, "output", "o", "", "write to `FILE` instead of stdout")
	read.RunE = bind(&readOpts.auxOptions, func(cmd *cobra.Command, args []string) error {
		return runAuxRead(cmd.Context(), readOpts, args, cmd.OutOrStdout())
	})

	addOpts := &auxOptions{}
	add := &cobra.Command{
		Use:   "add IMAGE UUID FILE|-",
		Short: "Add a record (offline without a key, journaled with one)",
		Long: `Add a record tagged UUID holding the contents of FILE ("-": standard input)
to IMAGE. It comes after the existing records with the same UUID; the
index it gets is printed.`,
		Example: `  sealfs aux add disk.img 12345678-9abc-def0-1122-334455667788 wrapped.key`,
	}
	addOpts.addForce(add.Flags())
	add.RunE = bind(addOpts, func(cmd *cobra.Command, args []string) error {
		return runAuxAdd(cmd.Context(), addOpts, args, cmd.InOrStdin(), cmd.OutOrStdout())
	})

	rmOpts := &auxOptions{}
	rm := &cobra.Command{
		Use:     "rm IMAGE UUID[#INDEX]",
		Short:   "Remove a record (offline without a key, journaled with one)",
		Long:    `Remove record UUID#INDEX from IMAGE; later records with that UUID move up one index.`,
		Example: `  sealfs aux rm disk.img 12345678-9abc-def0-1122-334455667788#1`,
	}
	rmOpts.addForce(rm.Flags())
	rm.RunE = bind(rmOpts, func(cmd *cobra.Command, args []string) error {
		return runAuxRm(cmd.Context(), rmOpts, args, cmd.OutOrStdout())
	})

	resOpts := &auxOptions{}
	res := &cobra.Command{
		Use:   "set-reserve IMAGE BYTES|none",
		Short: "Set the extra reserve for future offline updates",
		Long: `Set the extra reserve capacity of IMAGE's auxiliary metadata: the bytes a
future (keyed) reallocation sets aside beyond the records, in both update
groups, so that records can later be added or grown without the key. "none"
removes it; the next reallocation then keeps no room for offline updates at
all. The value is stored now; the space itself changes only at that
reallocation.`,
		Example: `  sealfs aux set-reserve disk.img 4096`,
	}
	resOpts.addForce(res.Flags())
	res.RunE = bind(resOpts, func(cmd *cobra.Command, args []string) error {
		return runAuxSetReserve(cmd.Context(), resOpts, args, cmd.OutOrStdout())
	})

	cmd.AddCommand(ls, read, add, rm, res)
	return cmd
}

// parseAuxUUID parses an RFC 4122 UUID in its usual 8-4-4-4-12 hex form or
// as 32 hex digits. The all-zero UUID is reserved by the format.
func parseAuxUUID(s string) ([16]byte, error) {
	var u [16]byte
	h := s
	if len(s) == 36 && s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-' {
		h = s[:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	}
	if len(h) != 32 {
		return u, usageErrorf("invalid UUID %q: want xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (hex)", s)
	}
	if _, err := hex.Decode(u[:], []byte(h)); err != nil {
		return u, usageErrorf("invalid UUID %q: want xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (hex)", s)
	}
	if u == ([16]byte{}) {
		return u, usageErrorf("invalid UUID %q: the all-zero UUID is reserved", s)
	}
	return u, nil
}

// parseAuxRef parses UUID[#INDEX].
func parseAuxRef(s string) ([16]byte, int, error) {
	us, is, hasIndex := strings.Cut(s, "#")
	u, err := parseAuxUUID(us)
	if err != nil {
		return u, 0, err
	}
	if !hasIndex {
		return u, 0, nil
	}
	i, err := strconv.ParseUint(is, 10, 31)
	if err != nil {
		return u, 0, usageErrorf("invalid index %q in %q: want a decimal number", is, s)
	}
	return u, int(i), nil
}

func formatAuxUUID(u [16]byte) string {
	h := hex.EncodeToString(u[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// auxRecord and auxListing are the JSON forms.
type auxRecord struct {
	UUID  string `json:"uuid"`
	Index int    `json:"index"`
	Size  int    `json:"size"`
}

type auxListing struct {
	Entries []auxRecord `json:"entries"`
	// Reserve is the extra reserve capacity; null when none is defined.
	Reserve *uint64 `json:"reserve"`
	// Used is the encoded size of the records; Capacity what the update
	// groups hold (0 for a creation info image, whose blob is not sized).
	Used               uint64 `json:"used"`
	Capacity           uint64 `json:"capacity"`
	Group              int    `json:"group"`
	ReallocationNeeded bool   `json:"reallocation_needed"`
}

func listAux(md *cocoonfs.AuxMetadata) auxListing {
	l := auxListing{Entries: []auxRecord{}, Reserve: md.Reserve, Used: md.EncodedLen(), Capacity: md.Capacity,
		Group: md.Group, ReallocationNeeded: md.ReallocationNeeded}
	seen := map[[16]byte]int{}
	for _, e := range md.Entries {
		l.Entries = append(l.Entries, auxRecord{formatAuxUUID(e.UUID), seen[e.UUID], len(e.Data)})
		seen[e.UUID]++
	}
	return l
}

func readAux(path string) (*cocoonfs.AuxMetadata, error) {
	dev, err := openDevice(path)
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	return cocoonfs.ReadAuxMetadata(dev)
}

func runAuxLs(_ context.Context, opts *auxOptions, args []string, stdout io.Writer) error {
	if err := needArgs(args, "IMAGE"); err != nil {
		return err
	}
	md, err := readAux(args[0])
	if err != nil {
		return err
	}
	l := listAux(md)
	if opts.JSON {
		return writeJSON(stdout, l)
	}
	var b strings.Builder
	for _, e := range l.Entries {
		fmt.Fprintf(&b, "%s %d %d\n", e.UUID, e.Index, e.Size)
	}
	_, err = io.WriteString(stdout, b.String())
	return err
}

// auxNotFoundError is a missing record; it matches fs.ErrNotExist (exit 6).
type auxNotFoundError struct {
	uuid  [16]byte
	index int
}

func (e *auxNotFoundError) Error() string {
	return fmt.Sprintf("no aux metadata record %s#%d", formatAuxUUID(e.uuid), e.index)
}
func (e *auxNotFoundError) Is(target error) bool { return target == fs.ErrNotExist }

func errNoAuxEntry(u [16]byte, index int) error { return &auxNotFoundError{u, index} }

func runAuxRead(_ context.Context, opts *auxReadOptions, args []string, stdout io.Writer) error {
	if err := needArgs(args, "IMAGE", "UUID[#INDEX]"); err != nil {
		return err
	}
	u, index, err := parseAuxRef(args[1])
	if err != nil {
		return err
	}
	md, err := readAux(args[0])
	if err != nil {
		return err
	}
	data, ok := md.Get(u, index)
	if !ok {
		return errNoAuxEntry(u, index)
	}
	if opts.Output == "" {
		_, err = stdout.Write(data)
		return err
	}
	return withCode(ExitError, writeFileAtomic(opts.Output, data))
}

// updateAux changes the records: online in a transaction when a key is
// given, else offline.
func updateAux(opts *auxOptions, path string, update func(*cocoonfs.AuxMetadata) error) (*cocoonfs.AuxMetadata, error) {
	if opts.Key.given() {
		return updateAuxOnline(opts, path, update)
	}
	release, err := lockImage(path, true)
	if err != nil {
		return nil, err
	}
	defer release()
	dev, err := blockdev.OpenFile(path, nil)
	if err != nil {
		return nil, withCode(ExitError, err)
	}
	defer dev.Close()
	err = cocoonfs.UpdateAuxMetadataOfflineOptions(dev, &cocoonfs.Options{Force: opts.Force}, update)
	if errors.Is(err, cocoonfs.ErrAuxOnlineUpdateNeeded) {
		return nil, fmt.Errorf("%w: pass the key (--key-file) to update online", err)
	}
	if err != nil {
		return nil, err
	}
	return cocoonfs.ReadAuxMetadata(dev)
}

// updateAuxOnline applies the change in a journaled transaction.
func updateAuxOnline(opts *auxOptions, path string, update func(*cocoonfs.AuxMetadata) error) (*cocoonfs.AuxMetadata, error) {
	f, closeFS, err := openFSWritable(&imageOptions{Force: opts.Force, Key: opts.Key}, path)
	if err != nil {
		return nil, err
	}
	defer closeFS()
	return f.UpdateAuxMetadata(context.Background(), update)
}

// report prints the outcome of a change: msg, or with --json the listing.
func (o *auxOptions) report(stdout io.Writer, md *cocoonfs.AuxMetadata, msg string) error {
	if o.JSON {
		return writeJSON(stdout, listAux(md))
	}
	_, err := fmt.Fprintln(stdout, msg)
	return err
}

func runAuxAdd(_ context.Context, opts *auxOptions, args []string, stdin io.Reader, stdout io.Writer) error {
	if err := needArgs(args, "IMAGE", "UUID", "FILE"); err != nil {
		return err
	}
	u, err := parseAuxUUID(args[1])
	if err != nil {
		return err
	}
	var data []byte
	if args[2] == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(args[2])
	}
	if err != nil {
		return withCode(ExitError, err)
	}
	index := 0
	md, err := updateAux(opts, args[0], func(m *cocoonfs.AuxMetadata) error {
		for _, e := range m.Entries {
			if e.UUID == u {
				index++
			}
		}
		return m.Add(u, data)
	})
	if err != nil {
		return err
	}
	return opts.report(stdout, md, fmt.Sprintf("added %s#%d (%d bytes)", formatAuxUUID(u), index, len(data)))
}

func runAuxRm(_ context.Context, opts *auxOptions, args []string, stdout io.Writer) error {
	if err := needArgs(args, "IMAGE", "UUID[#INDEX]"); err != nil {
		return err
	}
	u, index, err := parseAuxRef(args[1])
	if err != nil {
		return err
	}
	size := 0
	md, err := updateAux(opts, args[0], func(m *cocoonfs.AuxMetadata) error {
		data, ok := m.Get(u, index)
		if !ok {
			return errNoAuxEntry(u, index)
		}
		size = len(data)
		m.Remove(u, index)
		return nil
	})
	if err != nil {
		return err
	}
	return opts.report(stdout, md, fmt.Sprintf("removed %s#%d (%d bytes)", formatAuxUUID(u), index, size))
}

func runAuxSetReserve(_ context.Context, opts *auxOptions, args []string, stdout io.Writer) error {
	if err := needArgs(args, "IMAGE", "BYTES"); err != nil {
		return err
	}
	var reserve *uint64
	msg := "extra reserve removed"
	if args[1] != "none" {
		v, err := strconv.ParseUint(args[1], 10, 64)
		if err != nil {
			return usageErrorf("invalid reserve %q: want a number of bytes or \"none\"", args[1])
		}
		reserve = &v
		msg = fmt.Sprintf("extra reserve set to %d bytes", v)
	}
	md, err := updateAux(opts, args[0], func(m *cocoonfs.AuxMetadata) error {
		m.Reserve = reserve
		return nil
	})
	if err != nil {
		return err
	}
	return opts.report(stdout, md, msg)
}
