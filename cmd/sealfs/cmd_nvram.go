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
	"unicode"

	"github.com/sealfs/sealfs/cocoonfs"
	"github.com/sealfs/sealfs/nvram"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// nvramOptions are the flags of the nvram subcommands (each uses its own).
type nvramOptions struct {
	imageOptions
	Type   string   // put --type
	Attrs  []string // put --attr NAME[=VALUE]
	Output string   // get -o
}

const nvramLong = `The NVRAM store keeps named state blobs — a vTPM's state, firmware
variables — with self-describing metadata in a CocoonFS image: one directory
file (inode 0x4e56524d00000001) in the QEMU blobstore scheme, a CER-encoded
SET of DER entries, each with a type, mandatory and optional attributes and
its data. Every change is one journaled transaction, so after a crash the
store is as it was before or after the change. The directory is DER:
'sealfs read IMAGE 0x4e56524d00000001 | openssl asn1parse -inform DER'
shows it.

An entry whose mandatory attributes include one this version does not
understand (written by a newer writer) is listed and kept, but cannot be read
(exit 5); unknown optional attributes are ignored and kept.

Exit status 3 means a wrong key, 4 an authentication failure, 5 a malformed
directory or an unusable entry, 6 no entry of that name.`

func newNvramCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "nvram",
		Short: "Named state blobs with metadata in an image (QEMU blobstore scheme)",
		Long:  nvramLong,
		Example: `  sealfs nvram put -k disk.key disk.img OVMF_VARS.fd vars.fd --type uefi-vars --attr origin=installer
  sealfs nvram ls -k disk.key disk.img
  sealfs nvram get -k disk.key disk.img OVMF_VARS.fd -o vars.fd
  sealfs nvram rm -k disk.key disk.img OVMF_VARS.fd`,
	}
	put := newNvramSub(g, "put IMAGE NAME [FILE|-]", "Create or replace an entry", `Store FILE (standard input if FILE is - or missing) as entry NAME of IMAGE's
NVRAM store, replacing an entry of that name (its attributes included), in one
transaction; the store is created by the first put. NAME is a file name
(UTF-8, no '/', at most 255 bytes). --type names the kind of state (printable
ASCII; default "data", "tpm" for TPM state). Each --attr adds an optional
attribute: NAME=VALUE a read-write one whose value is an OCTET STRING holding
VALUE, a bare NAME a flag. Prints the new root digest and update counter.
`+keyHelp, runNvramPut)
	put.Flags().StringVar(&put.opts.Type, "type", "data", "the entry's `TYPE`")
	put.Flags().StringArrayVar(&put.opts.Attrs, "attr", nil, "add an optional attribute `NAME[=VALUE]` (repeatable)")
	get := newNvramSub(g, "get IMAGE NAME", "Write an entry's data to stdout or a file", `Write the data of entry NAME to stdout, or to FILE with -o (atomically, mode
0600). The image authenticates every byte before it is written.
`+keyHelp, runNvramGet)
	get.Flags().StringVarP(&get.opts.Output, "output", "o", "", "write to `FILE` (atomically, mode 0600) instead of stdout")
	ls := newNvramSub(g, "ls IMAGE", "List entries: name, type, size", `List the entries of IMAGE's NVRAM store, one line each: name, type and size
in bytes, sorted by name. A name that is empty or holds white space or
non-printable characters is shown quoted (Go syntax). An entry that cannot be
used is listed with the reason. --json adds the attributes. An image without a
store lists nothing.
`+keyHelp, runNvramLs)
	rm := newNvramSub(g, "rm IMAGE NAME...", "Remove entries", `Remove the named entries in one transaction: all of them, or none if one does
not exist (exit 6). Prints the new root digest and update counter.
`+keyHelp, runNvramRm)
	cmd.AddCommand(put.cmd, get.cmd, ls.cmd, rm.cmd, newNvramMountCommand(g))
	return cmd
}

type nvramRunFunc func(ctx context.Context, opts *nvramOptions, args []string, stdin io.Reader, stdout io.Writer) error

type nvramSub struct {
	cmd  *cobra.Command
	opts *nvramOptions
}

// Flags returns the subcommand's flag set, for flags of its own.
func (s nvramSub) Flags() *pflag.FlagSet { return s.cmd.Flags() }

func newNvramSub(g *globalOptions, use, short, long string, run nvramRunFunc) nvramSub {
	opts := &nvramOptions{}
	cmd := &cobra.Command{Use: use, Short: short, Long: long}
	opts.imageOptions.AddFlags(cmd.Flags())
	cmd.RunE = runE(g, &opts.imageOptions, func(cmd *cobra.Command, args []string) error {
		return run(cmd.Context(), opts, args, cmd.InOrStdin(), cmd.OutOrStdout())
	})
	return nvramSub{cmd, opts}
}

// openStore opens IMAGE (read-write if writable) and its NVRAM store; an
// image without a store opens as an empty one.
func openStore(o *imageOptions, path string, writable bool) (*nvram.Store, *cocoonfs.FS, func(), error) {
	open := openFS
	if writable {
		open = openFSWritable
	}
	f, closeFS, err := open(o, path)
	if err != nil {
		return nil, nil, nil, err
	}
	s, err := nvram.Open(f, &nvram.Options{Create: true})
	if err != nil {
		closeFS()
		return nil, nil, nil, err
	}
	return s, f, closeFS, nil
}

// nvramEntryError classifies what the library says about an entry the
// user named: an invalid name or attribute is a usage error.
func nvramEntryError(err error) error {
	if errors.Is(err, fs.ErrInvalid) {
		return usageError(err)
	}
	return err
}

// parseAttr turns --attr NAME[=VALUE] into an optional attribute.
func parseAttr(s string) nvram.Attribute {
	if name, value, ok := strings.Cut(s, "="); ok {
		return nvram.OctetsAttribute(name, []byte(value))
	}
	return nvram.FlagAttribute(s)
}

func runNvramPut(ctx context.Context, opts *nvramOptions, args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 2 {
		args = append(args, "-")
	}
	if err := needArgs(args, "IMAGE", "NAME", "FILE"); err != nil {
		return err
	}
	e := &nvram.Entry{Name: args[1], Type: opts.Type}
	for _, a := range opts.Attrs {
		e.Optional = append(e.Optional, parseAttr(a))
	}
	// Check the entry before reading anything: a bad name is a usage error.
	if err := nvram.NewDirectory().Put(e); err != nil {
		return usageError(err)
	}
	var err error
	if args[2] == "-" {
		if opts.Key.readsStdin() {
			return usageErrorf("the key and the data cannot both come from standard input")
		}
		e.Data, err = io.ReadAll(io.LimitReader(stdin, nvram.MaxDirectorySize+1))
	} else {
		e.Data, err = os.ReadFile(args[2])
	}
	if err != nil {
		return withCode(ExitError, err)
	}
	defer clear(e.Data)
	if len(e.Data) > nvram.MaxDirectorySize {
		return withCode(ExitNoSpace, fmt.Errorf("%s: more than the %d bytes an NVRAM store holds: %w", args[2], nvram.MaxDirectorySize, cocoonfs.ErrNoSpace))
	}
	s, f, closeFS, err := openStore(&opts.imageOptions, args[0], true)
	if err != nil {
		return err
	}
	defer closeFS()
	if err := s.Put(ctx, e); err != nil {
		return nvramEntryError(err)
	}
	return reportCommit(stdout, opts.JSON, fmt.Sprintf("stored %d bytes as %s (type %s)", len(e.Data), quoteName(e.Name), e.Type),
		hex.EncodeToString(f.RootDigest()), f.UpdateCounter().String())
}

func runNvramGet(_ context.Context, opts *nvramOptions, args []string, _ io.Reader, stdout io.Writer) error {
	if err := needArgs(args, "IMAGE", "NAME"); err != nil {
		return err
	}
	s, _, closeFS, err := openStore(&opts.imageOptions, args[0], false)
	if err != nil {
		return err
	}
	defer closeFS()
	e, err := s.Get(args[1])
	if err != nil {
		return err
	}
	defer clear(e.Data) // decrypted contents
	if opts.Output == "" {
		_, err = stdout.Write(e.Data)
		return err
	}
	return withCode(ExitError, writeFileAtomic(opts.Output, e.Data))
}

// nvramAttr is the JSON form of an attribute: a flag, a read-write value
// (the OCTET STRING's contents, hex) or another value (its DER, hex).
type nvramAttr struct {
	Name   string `json:"name"`
	Flag   bool   `json:"flag,omitempty"`
	Octets string `json:"octets,omitempty"`
	DER    string `json:"der,omitempty"`
}

type nvramLsEntry struct {
	Name      string      `json:"name"`
	Type      string      `json:"type"`
	Size      int64       `json:"size"`
	Mandatory []nvramAttr `json:"mandatory"`
	Optional  []nvramAttr `json:"optional"`
	Error     string      `json:"error,omitempty"`
}

func jsonAttrs(as []nvram.Attribute) []nvramAttr {
	out := []nvramAttr{}
	for _, a := range as {
		j := nvramAttr{Name: a.Name, Flag: a.Flag}
		if v, ok := a.Octets(); ok {
			j.Octets = hex.EncodeToString(v)
		} else if !a.Flag {
			j.DER = hex.EncodeToString(a.Value)
		}
		out = append(out, j)
	}
	return out
}

// quoteName shows a name as it is unless that would be ambiguous on a
// space-separated line.
func quoteName(s string) string {
	if s == "" || strings.HasPrefix(s, `"`) || strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

func runNvramLs(_ context.Context, opts *nvramOptions, args []string, _ io.Reader, stdout io.Writer) error {
	if err := needArgs(args, "IMAGE"); err != nil {
		return err
	}
	s, _, closeFS, err := openStore(&opts.imageOptions, args[0], false)
	if err != nil {
		return err
	}
	defer closeFS()
	list, err := s.List()
	if err != nil {
		return err
	}
	if opts.JSON {
		out := []nvramLsEntry{}
		for _, in := range list {
			j := nvramLsEntry{Name: in.Name, Type: in.Type, Size: in.Size, Mandatory: jsonAttrs(in.Mandatory), Optional: jsonAttrs(in.Optional)}
			if in.Err != nil {
				j.Error = in.Err.Error()
			}
			out = append(out, j)
		}
		return writeJSON(stdout, out)
	}
	var b strings.Builder
	for _, in := range list {
		fmt.Fprintf(&b, "%s %s %d", quoteName(in.Name), quoteName(in.Type), in.Size)
		if in.Err != nil {
			fmt.Fprintf(&b, " unusable: %v", in.Err)
		}
		b.WriteByte('\n')
	}
	_, err = io.WriteString(stdout, b.String())
	return err
}

func runNvramRm(ctx context.Context, opts *nvramOptions, args []string, _ io.Reader, stdout io.Writer) error {
	if len(args) < 2 {
		return needArgs(args, "IMAGE", "NAME")
	}
	s, f, closeFS, err := openStore(&opts.imageOptions, args[0], true)
	if err != nil {
		return err
	}
	defer closeFS()
	if err := s.Remove(ctx, args[1:]...); err != nil {
		return err
	}
	what := "removed " + quoteName(args[1])
	if len(args) > 2 {
		what = fmt.Sprintf("removed %d entries", len(args)-1)
	}
	return reportCommit(stdout, opts.JSON, what, hex.EncodeToString(f.RootDigest()), f.UpdateCounter().String())
}
