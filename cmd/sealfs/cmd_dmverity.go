package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/sealfs/sealfs/merkle"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// dmverityOptions mirror veritysetup's format/verify options.
type dmverityOptions struct {
	JSON          bool
	Format        int
	NoSuperblock  bool
	HashOffset    int64
	DataBlockSize int
	HashBlockSize int
	DataBlocks    int64
	Salt          string
	Hash          string
	UUID          string
}

func (o *dmverityOptions) AddFlags(fs *pflag.FlagSet, format bool) {
	fs.IntVar(&o.Format, "format", 1, "hash format `N`: 1 (normal) or 0 (original Chrome OS)")
	fs.BoolVar(&o.NoSuperblock, "no-superblock", false, "no superblock on the hash device (give every parameter on the command line)")
	fs.Int64Var(&o.HashOffset, "hash-offset", 0, "start of the hash area on the hash device, in `bytes` (a multiple of 512)")
	fs.IntVar(&o.DataBlockSize, "data-block-size", 4096, "data block size in `bytes`")
	fs.IntVar(&o.HashBlockSize, "hash-block-size", 4096, "hash block size in `bytes`")
	fs.Int64Var(&o.DataBlocks, "data-blocks", 0, "number of data `blocks` (default: the data size / data block size)")
	fs.StringVar(&o.Hash, "hash", "sha256", "hash `ALG`: sha256, sha1, sha224, sha384 or sha512")
	if format {
		fs.StringVarP(&o.Salt, "salt", "s", "", "salt `HEX`, or - for none (default: 32 random bytes, as veritysetup)")
		fs.StringVar(&o.UUID, "uuid", "", "superblock UUID (default: random)")
	} else {
		fs.StringVarP(&o.Salt, "salt", "s", "", "salt `HEX`, or - for none (needed with --no-superblock; with a superblock it must match)")
	}
}

// library turns the flags into library options; random fills in a salt and
// UUID where veritysetup would make them up.
func (o *dmverityOptions) library(cmd *cobra.Command, random bool) (merkle.DmverityOptions, error) {
	var mo merkle.DmverityOptions
	switch o.Format {
	case 0:
		mo.Format0 = true
	case 1:
	default:
		return mo, usageErrorf("--format: %d is not 0 or 1", o.Format)
	}
	h, err := merkle.DmverityHashByName(o.Hash)
	if err != nil {
		return mo, usageError(err)
	}
	mo.Hash = h
	mo.NoSuperblock, mo.HashOffset = o.NoSuperblock, o.HashOffset
	mo.DataBlockSize, mo.HashBlockSize, mo.DataBlocks = o.DataBlockSize, o.HashBlockSize, o.DataBlocks
	if o.DataBlocks < 0 {
		return mo, usageErrorf("--data-blocks: %d is negative", o.DataBlocks)
	}
	switch {
	case o.Salt == "-":
		mo.Salt = []byte{}
	case o.Salt != "":
		if mo.Salt, err = hex.DecodeString(o.Salt); err != nil {
			return mo, usageErrorf("--salt: %q is not hex (or - for none)", o.Salt)
		}
	case random:
		mo.Salt = make([]byte, 32)
		rand.Read(mo.Salt)
	}
	if o.UUID != "" {
		if mo.UUID, err = parseVerityUUID(o.UUID); err != nil {
			return mo, err
		}
	} else if random {
		rand.Read(mo.UUID[:])
		mo.UUID[6] = mo.UUID[6]&0x0f | 0x40 // version 4
		mo.UUID[8] = mo.UUID[8]&0x3f | 0x80 // RFC 4122 variant
	}
	if !random {
		// For verify, a flag the user did not set must not contradict the
		// superblock: leave it unset so the superblock's value is used.
		f := cmd.Flags()
		if !f.Changed("hash") {
			mo.Hash = 0
		}
		if !f.Changed("data-block-size") {
			mo.DataBlockSize = 0
		}
		if !f.Changed("hash-block-size") {
			mo.HashBlockSize = 0
		}
		if !f.Changed("salt") && !o.NoSuperblock {
			mo.Salt = nil
		}
	}
	return mo, nil
}

func parseVerityUUID(s string) ([16]byte, error) {
	var u [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, usageErrorf("--uuid: %q is not a UUID (8-4-4-4-12 hex digits)", s)
	}
	b, err := hex.DecodeString(s[:8] + s[9:13] + s[14:18] + s[19:23] + s[24:])
	if err != nil {
		return u, usageErrorf("--uuid: %q is not a UUID (8-4-4-4-12 hex digits)", s)
	}
	copy(u[:], b)
	return u, nil
}

func newDmverityCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dmverity",
		Short: "Make and check dm-verity hash devices, as veritysetup does",
		Long: `Make (format) and check (verify) dm-verity hash devices. The hash device
sealfs writes is byte for byte what "veritysetup format" writes with the same
options, so the kernel's dm-verity target and veritysetup accept it. Data and
hash devices may be plain files or block devices.`,
	}
	cmd.AddCommand(newDmverityFormatCommand(g), newDmverityVerifyCommand(g))
	return cmd
}

func newDmverityFormatCommand(g *globalOptions) *cobra.Command {
	opts := &dmverityOptions{}
	cmd := &cobra.Command{
		Use:   "format DATA HASH",
		Short: "Write the hash device for DATA and print the root hash",
		Long: `Hash DATA and write the hash tree (and, unless --no-superblock, the
superblock) to HASH, created if missing, then print the root hash and the
parameters as veritysetup does. Keep the root hash somewhere trusted: it is
what "dmverity verify" and the kernel check everything against. A trailing
partial data block is not covered, as with veritysetup. Without --salt and
--uuid random ones are used, as veritysetup does; give both for a
reproducible hash device.`,
		Example: `  sealfs dmverity format data.img hash.img
  sealfs dmverity format --salt - --uuid 12345678-1234-1234-1234-123456789abc data.img hash.img
  sealfs dmverity format --no-superblock --hash-offset 1048576 disk.img disk.img`,
	}
	opts.AddFlags(cmd.Flags(), true)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		opts.JSON = g.JSON
		return asRunError(runDmverityFormat(cmd.Context(), cmd, opts, args, cmd.OutOrStdout(), cmd.ErrOrStderr()))
	}
	return cmd
}

func newDmverityVerifyCommand(g *globalOptions) *cobra.Command {
	opts := &dmverityOptions{}
	cmd := &cobra.Command{
		Use:   "verify DATA HASH ROOT",
		Short: "Check DATA against the hash device and a trusted root hash",
		Long: `Check every data block of DATA against the hash tree on HASH and the
trusted root hash ROOT (hex). With a superblock, the parameters come from it
(and must agree with any given on the command line); with --no-superblock
give them all, including --salt and --data-blocks if format got them. Exits
4 if any data or hash block does not match.`,
		Example: `  sealfs dmverity verify data.img hash.img 4bc1...e0
  sealfs dmverity verify --no-superblock --salt - data.img hash.img 4bc1...e0`,
	}
	opts.AddFlags(cmd.Flags(), false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		opts.JSON = g.JSON
		return asRunError(runDmverityVerify(cmd.Context(), cmd, opts, args, cmd.OutOrStdout(), cmd.ErrOrStderr()))
	}
	return cmd
}

// deviceSize is the size of a file or block device (Stat reports 0 for the
// latter).
func deviceSize(f *os.File) (int64, error) {
	n, err := f.Seek(0, io.SeekEnd)
	return n, withCode(ExitError, err)
}

// dmverityReport is what format and verify print.
type dmverityReport struct {
	UUID           string `json:"uuid,omitempty"`
	HashType       int    `json:"hash_type"`
	DataBlocks     int64  `json:"data_blocks"`
	DataBlockSize  int    `json:"data_block_size"`
	HashBlocks     int64  `json:"hash_blocks"`
	HashBlockSize  int    `json:"hash_block_size"`
	HashAlgorithm  string `json:"hash_algorithm"`
	Salt           string `json:"salt"`
	RootHash       string `json:"root_hash"`
	HashOffset     int64  `json:"hash_offset"`
	HashDeviceSize int64  `json:"hash_device_size"`
	Verified       bool   `json:"verified,omitempty"`
}

func newDmverityReport(mo merkle.DmverityOptions, l merkle.DmverityLayout, name string, root []byte) dmverityReport {
	r := dmverityReport{
		HashType: 1, DataBlocks: l.DataBlocks, DataBlockSize: l.DataBlockSize, HashBlocks: l.HashBlocks,
		HashBlockSize: l.HashBlockSize, HashAlgorithm: name, Salt: "-", RootHash: hex.EncodeToString(root),
		HashOffset: mo.HashOffset, HashDeviceSize: l.HashAreaEnd,
	}
	if mo.Format0 {
		r.HashType = 0
	}
	if len(mo.Salt) > 0 {
		r.Salt = hex.EncodeToString(mo.Salt)
	}
	if !mo.NoSuperblock {
		r.UUID = formatUUID(mo.UUID)
	}
	return r
}

func (r dmverityReport) write(w io.Writer, asJSON bool) error {
	if asJSON {
		return writeJSON(w, r)
	}
	var fields []field
	if r.UUID != "" {
		fields = append(fields, field{"UUID", r.UUID})
	}
	fields = append(fields,
		field{"Hash type", strconv.Itoa(r.HashType)},
		field{"Data blocks", strconv.FormatInt(r.DataBlocks, 10)},
		field{"Data block size", strconv.Itoa(r.DataBlockSize)},
		field{"Hash blocks", strconv.FormatInt(r.HashBlocks, 10)},
		field{"Hash block size", strconv.Itoa(r.HashBlockSize)},
		field{"Hash algorithm", r.HashAlgorithm},
		field{"Salt", r.Salt},
		field{"Root hash", r.RootHash},
	)
	if r.HashOffset != 0 {
		fields = append(fields, field{"Hash offset", fmt.Sprintf("%d [bytes]", r.HashOffset)})
	}
	fields = append(fields, field{"Hash device size", fmt.Sprintf("%d [bytes]", r.HashDeviceSize)})
	if r.Verified {
		fields = append(fields, field{"Status", "verified"})
	}
	return writeFields(w, fields)
}

func runDmverityFormat(ctx context.Context, cmd *cobra.Command, opts *dmverityOptions, args []string, stdout, stderr io.Writer) error {
	if err := needArgs(args, "DATA", "HASH"); err != nil {
		return err
	}
	mo, err := opts.library(cmd, true)
	if err != nil {
		return err
	}
	data, err := os.Open(args[0])
	if err != nil {
		return withCode(ExitError, err)
	}
	defer data.Close()
	size, err := deviceSize(data)
	if err != nil {
		return err
	}
	l, err := mo.Layout(size)
	if err != nil {
		return usageError(err)
	}
	// Like veritysetup: create the hash file if missing, never truncate it
	// (it may be the data device itself, with the tree after the data).
	hash, err := os.OpenFile(args[1], os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return withCode(ExitError, err)
	}
	update, finish := progressLine(stderr, "hashing")
	root, err := merkle.DmverityFormatContext(ctx, data, size, hash, mo, update)
	finish()
	if err != nil {
		hash.Close()
		return withCode(ExitError, err)
	}
	if err := hash.Sync(); err != nil {
		hash.Close()
		return withCode(ExitError, err)
	}
	if err := hash.Close(); err != nil {
		return withCode(ExitError, err)
	}
	return newDmverityReport(mo, l, opts.Hash, root).write(stdout, opts.JSON)
}

func runDmverityVerify(ctx context.Context, cmd *cobra.Command, opts *dmverityOptions, args []string, stdout, _ io.Writer) error {
	if err := needArgs(args, "DATA", "HASH", "ROOT"); err != nil {
		return err
	}
	mo, err := opts.library(cmd, false)
	if err != nil {
		return err
	}
	root, err := hex.DecodeString(args[2])
	if err != nil || len(root) == 0 {
		return usageErrorf("ROOT: %q is not a hex root hash", args[2])
	}
	data, err := os.Open(args[0])
	if err != nil {
		return withCode(ExitError, err)
	}
	defer data.Close()
	hash, err := os.Open(args[1])
	if err != nil {
		return withCode(ExitError, err)
	}
	defer hash.Close()
	size, err := deviceSize(data)
	if err != nil {
		return err
	}
	if !mo.NoSuperblock {
		if mo, err = merkle.DmverityOptionsFromDevice(hash, mo); err != nil {
			return err
		}
		mo.NoSuperblock = false
	}
	l, err := mo.Layout(size)
	if err != nil {
		return usageError(err)
	}
	if err := merkle.DmverityVerify(ctx, data, size, hash, root, mo, 0, -1); err != nil {
		return err
	}
	name := opts.Hash
	if !cmd.Flags().Changed("hash") && !mo.NoSuperblock {
		for _, n := range []string{"sha256", "sha1", "sha224", "sha384", "sha512"} {
			if h, _ := merkle.DmverityHashByName(n); h == mo.Hash {
				name = n
			}
		}
	}
	r := newDmverityReport(mo, l, name, root)
	r.Verified = true
	return r.write(stdout, opts.JSON)
}
