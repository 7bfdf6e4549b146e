package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// layoutOptions are the size, algorithm and layout flags mkfs and mkfsinfo
// share. Sizes stay strings until run time so that runX callers get the
// same parsing and errors as the command line.
type layoutOptions struct {
	Size       string
	Hash       string
	Cipher     string
	Strength   int
	Salt       string // hex; empty: 32 random bytes
	AuxReserve string

	AllocBlock, IOBlock, AuthTreeDataBlock, AuthTreeNode, IndexNode, BitmapBlock string

	Overwrite bool
}

func (o *layoutOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Size, "size", "", "image size: `SIZE` bytes, or with a suffix K, M, G, T (or KiB, MiB, GiB, TiB: powers of 1024) or KB, MB, GB, TB (powers of 1000); a multiple of the IO block")
	fs.StringVar(&o.Hash, "hash", "sha2", "hash family: sha2, sha3 or sm3")
	fs.StringVar(&o.Cipher, "cipher", "aes", "block cipher: aes, camellia or sm4")
	fs.IntVar(&o.Strength, "strength", 128, "security strength in bits: 128, 192 or 256 (sm3 and sm4: 128 only)")
	fs.StringVar(&o.Salt, "salt", "", "key derivation salt as `HEX`, up to 255 bytes (default 32 random bytes)")
	fs.StringVar(&o.AuxReserve, "aux-reserve", "1KiB", "aux metadata extra reserve capacity: `SIZE` bytes (suffixes as for --size); 0: no second update group, so no offline aux metadata updates")
	for _, f := range []struct {
		p          *string
		name, what string
	}{
		{&o.AllocBlock, "alloc-block", "allocation block (default 128)"},
		{&o.IOBlock, "io-block", "IO block, the unit of atomic writes (default max(512, allocation block))"},
		{&o.AuthTreeDataBlock, "auth-tree-data-block", "authentication tree data block (default the IO block)"},
		{&o.AuthTreeNode, "auth-tree-node", "authentication tree node (default max(1 KiB, IO block))"},
		{&o.IndexNode, "index-node", "inode index node (default the allocation block)"},
		{&o.BitmapBlock, "bitmap-block", "allocation bitmap block (default max(512, auth tree data block))"},
	} {
		fs.StringVar(f.p, f.name, "", "the "+f.what+": `N` bytes, a power of two (suffixes as for --size)")
	}
	fs.BoolVar(&o.Overwrite, "overwrite", false, "format IMAGE even if it exists (its contents are lost); without it an existing IMAGE is refused untouched")
}

// parseSize parses a byte count: digits and an optional unit. A bare number
// is bytes (unlike the reference tool, which doubles it).
func parseSize(flag, s string) (int64, error) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	units := map[string]uint64{
		"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
		"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
		"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
	}
	unit, ok := units[strings.ToLower(s[i:])]
	n, err := strconv.ParseUint(s[:i], 10, 63)
	if i == 0 || !ok || err != nil || n > math.MaxInt64/unit {
		return 0, usageErrorf("%s: invalid size %q: want a number of bytes, optionally with a unit (K, M, G, T; KiB, MiB, GiB, TiB; KB, MB, GB, TB)", flag, s)
	}
	return int64(n * unit), nil
}

// optionalSize parses a size flag that may be empty (0).
func optionalSize(flag, s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := parseSize(flag, s)
	if err == nil && (n == 0 || n > 1<<30) {
		err = usageErrorf("%s: size %q is not between 1 byte and 1 GiB", flag, s)
	}
	return int(n), err
}

// layout turns the flags into the library's options; size is 0 when --size
// is not given. Everything the command line can get wrong is a usage error
// here, before any file is touched.
func (o *layoutOptions) layout() (opts cocoonfs.MkfsOptions, size int64, err error) {
	opts = cocoonfs.MkfsOptions{Hash: o.Hash, Cipher: o.Cipher, Strength: o.Strength}
	if _, _, _, _, _, _, _, err := cocoonfs.SelectAlgorithms(o.Hash, o.Cipher, o.Strength); err != nil {
		return opts, 0, withCode(ExitUsage, err)
	}
	if o.Salt != "" {
		if opts.Salt, err = hex.DecodeString(o.Salt); err != nil || len(opts.Salt) > 255 {
			return opts, 0, usageErrorf("--salt: want up to 255 bytes as hex digits, got %q", o.Salt)
		}
	}
	for _, f := range []struct {
		p          *int
		name, flag string
	}{
		{&opts.AllocationBlock, o.AllocBlock, "--alloc-block"}, {&opts.IOBlock, o.IOBlock, "--io-block"},
		{&opts.AuthTreeDataBlock, o.AuthTreeDataBlock, "--auth-tree-data-block"}, {&opts.AuthTreeNode, o.AuthTreeNode, "--auth-tree-node"},
		{&opts.IndexNode, o.IndexNode, "--index-node"}, {&opts.BitmapBlock, o.BitmapBlock, "--bitmap-block"},
	} {
		if *f.p, err = optionalSize(f.flag, f.name); err != nil {
			return opts, 0, err
		}
		if *f.p&(*f.p-1) != 0 {
			return opts, 0, usageErrorf("%s: %d bytes is not a power of two", f.flag, *f.p)
		}
	}
	reserve, err := parseSize("--aux-reserve", o.AuxReserve)
	if err != nil {
		return opts, 0, err
	}
	if reserve > math.MaxInt32 {
		return opts, 0, usageErrorf("--aux-reserve: %s is more than 2 GiB", o.AuxReserve)
	}
	opts.AuxReserve, opts.NoAuxReserve = int(reserve), reserve == 0
	if o.Size != "" {
		if size, err = parseSize("--size", o.Size); err != nil {
			return opts, 0, err
		}
		io := opts.IOBlock
		if io == 0 {
			io = max(512, opts.AllocationBlock)
		}
		if size == 0 || size%int64(io) != 0 {
			return opts, 0, usageErrorf("--size: %d bytes is not a positive multiple of the %d-byte IO block", size, io)
		}
	}
	opts.Size = size
	return opts, size, nil
}

// target is the image file a formatting command writes: created if missing
// (removed again if the command fails), an existing one only with
// --overwrite and never changed before everything has been validated.
type target struct {
	path    string
	created bool
	dev     *blockdev.File
}

// openTarget checks IMAGE and opens or creates it with size bytes (a new
// file needs --size).
func openTarget(path string, size int64, overwrite, haveSize bool) (*target, error) {
	st, err := os.Stat(path)
	switch {
	case err == nil && st.IsDir():
		return nil, withCode(ExitError, fmt.Errorf("%s: is a directory", path))
	case err == nil && !overwrite:
		return nil, withCode(ExitError, fmt.Errorf("%s: %w; pass --overwrite to format it (its contents are lost)", path, fs.ErrExist))
	case err == nil:
		dev, err := blockdev.OpenFile(path, nil)
		return &target{path: path, dev: dev}, withCode(ExitError, err)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, withCode(ExitError, err)
	case !haveSize:
		return nil, usageErrorf("%s does not exist: --size is required to create it", path)
	}
	dev, err := blockdev.CreateFile(path, size, nil)
	if errors.Is(err, syscall.EFBIG) {
		return nil, withCode(ExitNoSpace, fmt.Errorf("%s: the file system cannot hold a file of %d bytes: %w", path, size, err))
	}
	if err != nil {
		return nil, withCode(ExitError, err)
	}
	return &target{path: path, created: true, dev: dev}, nil
}

// shrink cuts an overwritten regular file that was larger than the new
// image down to it, once the image is complete. Devices keep their size.
func (t *target) shrink(size int64) error {
	if t.created || size == 0 || size >= t.dev.Size() {
		return nil
	}
	if st, err := os.Stat(t.path); err != nil || !st.Mode().IsRegular() {
		return nil
	}
	if err := t.dev.Resize(size); err != nil {
		return withCode(ExitError, err)
	}
	return withCode(ExitError, t.dev.Sync())
}

// close closes the device and, if the command failed, removes what it
// created.
func (t *target) close(failed bool) {
	t.dev.Close()
	if failed && t.created {
		os.Remove(t.path)
	}
}

type mkfsOptions struct {
	imageOptions
	layoutOptions
	GenKey      string
	NoRandomize bool
}

func (o *mkfsOptions) AddFlags(fs *pflag.FlagSet) {
	o.layoutOptions.AddFlags(fs)
	fs.StringVar(&o.GenKey, "gen-key", "", "generate a key: write 32 random bytes to `FILE` (mode 0600, must not exist) and format with it")
	fs.BoolVar(&o.NoRandomize, "no-randomize-unallocated", false, "leave free space zeroed instead of filling it with random bytes (faster, but shows how much is in use)")
	fs.BoolVarP(&o.Force, "force", "f", false, "format even if the device's block size exceeds the IO block: a power cut during a journal update could then damage a neighbouring block")
	o.Key.AddFlags(fs)
}

func newMkfsCommand(g *globalOptions) *cobra.Command {
	opts := &mkfsOptions{}
	cmd := &cobra.Command{
		Use:   "mkfs IMAGE",
		Short: "Create a new CocoonFS image",
		Long: `Create an empty CocoonFS filesystem in IMAGE, encrypted and authenticated with
the key. IMAGE is created with --size bytes if it does not exist; an existing
IMAGE (a file or a device) is formatted only with --overwrite, and then only
after every option has been checked; without --size the image fills it, and a
larger existing file is cut to --size once the image is complete. A new file
is removed again if mkfs fails.

The defaults are the reference cocoonfs tool's: SHA-256 and AES-128, 128-byte
allocation blocks, 512-byte IO blocks, 1 KiB authentication tree nodes, a
random salt and 1 KiB of aux metadata reserve. The IO block must not be
smaller than the block size the host reports for IMAGE (often 4 KiB for files)
unless --force is given; see the README.

--gen-key FILE makes a fresh 32-byte key and stores it in FILE; keep it safe,
nothing else can open the image. mkfs prints the new image's parameters, its
root digest and its update counter.
` + keyHelp,
		Example: `  sealfs mkfs disk.img --size 8M --gen-key disk.key
  sealfs mkfs disk.img --size 64MiB --io-block 4K --hash sha3 --cipher camellia -k disk.key
  sealfs mkfs /dev/vdb --overwrite -k disk.key`,
	}
	opts.AddFlags(cmd.Flags())
	cmd.RunE = runE(g, &opts.imageOptions, func(cmd *cobra.Command, args []string) error {
		return runMkfs(cmd.Context(), opts, args, cmd.OutOrStdout(), cmd.ErrOrStderr())
	})
	return cmd
}

// mkfsResult is mkfs's JSON output.
type mkfsResult struct {
	Image   string `json:"image"`
	Created bool   `json:"created"`
	KeyFile string `json:"key_file,omitempty"`
	*cocoonfs.Info
}

func runMkfs(_ context.Context, opts *mkfsOptions, args []string, stdout, _ io.Writer) (err error) {
	if err := needArgs(args, "IMAGE"); err != nil {
		return err
	}
	mo, size, err := opts.layout()
	if err != nil {
		return err
	}
	mo.Force, mo.NoRandomizeUnallocated = opts.Force, opts.NoRandomize
	if opts.GenKey != "" && (opts.Key.File != "" || opts.Key.Hex != "") {
		return usageErrorf("--gen-key makes a new key: it cannot be combined with --key-file or --key-hex")
	}
	var key []byte
	if opts.GenKey == "" {
		if key, err = opts.Key.load(); err != nil {
			return err
		}
	} else {
		if _, err := os.Lstat(opts.GenKey); err == nil {
			return withCode(ExitError, fmt.Errorf("--gen-key %s: %w: refusing to replace a key", opts.GenKey, fs.ErrExist))
		}
		key = make([]byte, 32)
		rand.Read(key)
	}
	defer clear(key)

	t, err := openTarget(args[0], size, opts.Overwrite, opts.Size != "")
	if err != nil {
		return err
	}
	defer func() { t.close(err != nil) }()
	if opts.GenKey != "" {
		if err := writeKeyFile(opts.GenKey, key); err != nil {
			return err
		}
		defer func() {
			if err != nil {
				os.Remove(opts.GenKey)
			}
		}()
	}
	f, err := cocoonfs.Mkfs(t.dev, key, &mo)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := t.shrink(size); err != nil {
		return err
	}
	in, err := f.Info()
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(stdout, mkfsResult{Image: t.path, Created: t.created, KeyFile: opts.GenKey, Info: in})
	}
	fields := []field{{"image", createdNote(t)}}
	if opts.GenKey != "" {
		fields = append(fields, field{"key file", opts.GenKey + " (32 random bytes, new)"})
	}
	fields = append(fields, headerFields(&in.HeaderInfo)...)
	return writeFields(stdout, append(fields,
		field{"root digest", in.RootDigest},
		field{"update counter", in.UpdateCounter},
		field{"allocated blocks", fmt.Sprint(in.AllocatedBlocks)},
		field{"total blocks", fmt.Sprint(in.TotalBlocks)},
	))
}

func createdNote(t *target) string {
	if t.created {
		return t.path + " (created)"
	}
	return t.path + " (overwritten)"
}

// writeKeyFile stores a new key durably with mode 0600; it never replaces a
// file.
func writeKeyFile(path string, key []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return withCode(ExitError, fmt.Errorf("--gen-key: %w", err))
	}
	_, err = f.Write(key)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return withCode(ExitError, fmt.Errorf("--gen-key %s: %w", path, err))
	}
	return nil
}
