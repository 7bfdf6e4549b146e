package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sealfs/sealfs/bd"
	"github.com/sealfs/sealfs/bd/ext2img"
	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/errs"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

const bdLong = `Protected block devices over an image file (the nextfs / libbd model):

  std        plaintext, no protection
  crypt      AES-256-XTS per block, tweak = block number (dm-crypt aes-xts-plain64);
             confidentiality only: a modified block is NOT detected
  verity     an HMAC-SHA256 Merkle tree in a separate tree file, checked against a
             trusted root hash; any altered, swapped or replayed block is refused
  vericrypt  crypt, with the verity tree over the ciphertext
  dmverity   read-only; the tree is a 'veritysetup format' hash device

Keys: --key-file holds the 64-byte XTS key; or --passphrase-file derives it with
Argon2id, the salt and parameters kept in a sidecar (--kdf-file, default
IMAGE.kdf). --mac-key-file holds the tree's HMAC key (at least 16 bytes). The
tree file defaults to IMAGE.tree. Keep the printed root hash somewhere trusted.
Formats: docs/format/bd.md.`

func newBdCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bd",
		Short: "Make, check and serve protected block device images",
		Long:  bdLong,
	}
	cmd.AddCommand(newBdMakefsCommand(g), newBdMakemerkleCommand(g), newBdVerifyCommand(g), newBdServeCommand(g))
	return cmd
}

// bdOptions are the flags shared by the bd commands that open a variant.
type bdOptions struct {
	JSON           bool
	Variant        string
	BlockSize      int
	KeyFile        string
	PassphraseFile string
	KDFFile        string
	MACKeyFile     string
	Tree           string
	TreeCache      string
}

func (o *bdOptions) AddFlags(fs *pflag.FlagSet, variants string) {
	fs.StringVar(&o.Variant, "variant", strings.SplitN(variants, "|", 2)[0], "device `VARIANT`: "+strings.ReplaceAll(variants, "|", ", "))
	fs.IntVar(&o.BlockSize, "block-size", 4096, "device block size in `bytes`: 512, 1024, 2048 or 4096")
	fs.StringVar(&o.KeyFile, "key-file", "", "64-byte AES-256-XTS key `FILE` (crypt, vericrypt)")
	fs.StringVar(&o.PassphraseFile, "passphrase-file", "", "derive the XTS key from the passphrase in `FILE` (Argon2id; crypt, vericrypt)")
	fs.StringVar(&o.KDFFile, "kdf-file", "", "Argon2id salt and parameters sidecar `FILE` (default IMAGE.kdf)")
	fs.StringVar(&o.MACKeyFile, "mac-key-file", "", "HMAC key `FILE` of the Merkle tree (verity, vericrypt)")
	fs.StringVar(&o.Tree, "tree", "", "Merkle tree `FILE` (default IMAGE.tree), or the veritysetup hash device (dmverity)")
	fs.StringVar(&o.TreeCache, "tree-cache", "", "keep at most `SIZE` of the verity tree in memory (bytes, or with a unit: K, M, G; default 16M)")
}

// treeCache is --tree-cache in bytes (0: the library's default).
func (o *bdOptions) treeCache() (int64, error) {
	if o.TreeCache == "" {
		return 0, nil
	}
	n, err := parseSize("--tree-cache", o.TreeCache)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, usageErrorf("--tree-cache: must be more than 0 bytes")
	}
	return n, nil
}

func (o *bdOptions) check(allowed ...string) error {
	for _, v := range allowed {
		if o.Variant == v {
			return nil
		}
	}
	return usageErrorf("--variant: %q is not one of %s", o.Variant, strings.Join(allowed, ", "))
}

func (o *bdOptions) verity() bool { return o.Variant == "verity" || o.Variant == "vericrypt" }
func (o *bdOptions) crypt() bool  { return o.Variant == "crypt" || o.Variant == "vericrypt" }

func (o *bdOptions) treePath(image string) string {
	if o.Tree != "" {
		return o.Tree
	}
	return image + ".tree"
}

// readBdKey reads a key file; the key never appears in messages.
func readBdKey(path, flag string) ([]byte, error) {
	k, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, withCode(ExitError, fmt.Errorf("%s %s: %w", flag, path, err))
	}
	if len(k) == 0 {
		return nil, usageErrorf("%s %s: the key file is empty", flag, path)
	}
	return k, nil
}

// cryptKey returns the XTS key: from --key-file, or derived from
// --passphrase-file with the sidecar (created when create is set).
func (o *bdOptions) cryptKey(image string, create bool) ([]byte, error) {
	switch {
	case o.KeyFile != "" && o.PassphraseFile != "":
		return nil, usageErrorf("give the key once: --key-file and --passphrase-file are mutually exclusive")
	case o.KeyFile != "":
		k, err := readBdKey(o.KeyFile, "--key-file")
		if err == nil && len(k) != bd.CryptKeySize {
			clear(k)
			return nil, usageErrorf("--key-file %s: holds %d bytes, an AES-256-XTS key is %d", o.KeyFile, len(k), bd.CryptKeySize)
		}
		return k, err
	case o.PassphraseFile != "":
		pass, err := readBdKey(o.PassphraseFile, "--passphrase-file")
		if err != nil {
			return nil, err
		}
		defer clear(pass)
		kdf := o.KDFFile
		if kdf == "" {
			kdf = image + ".kdf"
		}
		if create {
			key, side, err := bd.NewPassphraseKey(pass, nil)
			if err != nil {
				return nil, err
			}
			if err := os.WriteFile(kdf, side, 0o644); err != nil {
				clear(key)
				return nil, withCode(ExitError, err)
			}
			return key, nil
		}
		side, err := os.ReadFile(kdf)
		if err != nil {
			return nil, withCode(ExitError, err)
		}
		return bd.OpenPassphraseKey(pass, side)
	}
	return nil, usageErrorf("variant %s needs --key-file or --passphrase-file", o.Variant)
}

func (o *bdOptions) macKey() ([]byte, error) {
	if o.MACKeyFile == "" {
		return nil, usageErrorf("variant %s needs --mac-key-file", o.Variant)
	}
	k, err := readBdKey(o.MACKeyFile, "--mac-key-file")
	if err == nil && len(k) < bd.MinMACKeySize {
		clear(k)
		return nil, usageErrorf("--mac-key-file %s: holds %d bytes, want at least %d", o.MACKeyFile, len(k), bd.MinMACKeySize)
	}
	return k, err
}

// bdReport is what makefs, makemerkle and verify print.
type bdReport struct {
	Image     string  `json:"image"`
	Variant   string  `json:"variant,omitempty"`
	Size      int64   `json:"size"`
	BlockSize int     `json:"block_size"`
	Blocks    int64   `json:"blocks,omitempty"`
	Tree      string  `json:"tree,omitempty"`
	KDFFile   string  `json:"kdf_file,omitempty"`
	FSUUID    string  `json:"fs_uuid,omitempty"`
	RootHash  string  `json:"root_hash,omitempty"`
	BadBlocks []int64 `json:"bad_blocks,omitempty"`
	BadNodes  int64   `json:"bad_tree_nodes,omitempty"`
	Verified  bool    `json:"verified,omitempty"`
}

func (r bdReport) write(w io.Writer, asJSON bool) error {
	if asJSON {
		return writeJSON(w, r)
	}
	fields := []field{{"image", r.Image}}
	if r.Variant != "" {
		fields = append(fields, field{"variant", r.Variant})
	}
	fields = append(fields, field{"size", strconv.FormatInt(r.Size, 10)}, field{"block size", strconv.Itoa(r.BlockSize)})
	if r.Tree != "" {
		fields = append(fields, field{"tree", r.Tree})
	}
	if r.KDFFile != "" {
		fields = append(fields, field{"kdf file", r.KDFFile})
	}
	if r.FSUUID != "" {
		fields = append(fields, field{"fs uuid", r.FSUUID})
	}
	if r.RootHash != "" {
		fields = append(fields, field{"root hash", r.RootHash})
	}
	if r.Blocks > 0 {
		fields = append(fields, field{"blocks checked", strconv.FormatInt(r.Blocks, 10)})
	}
	if len(r.BadBlocks) > 0 {
		s := make([]string, len(r.BadBlocks))
		for i, b := range r.BadBlocks {
			s[i] = strconv.FormatInt(b, 10)
		}
		fields = append(fields, field{"bad blocks", strings.Join(s, " ")})
	}
	if r.BadNodes > 0 {
		fields = append(fields, field{"bad tree nodes", strconv.FormatInt(r.BadNodes, 10)})
	}
	if r.Verified {
		fields = append(fields, field{"status", "verified"})
	}
	return writeFields(w, fields)
}

// --- makefs ---

type bdMakefsOptions struct {
	bdOptions
	Size       string
	Overwrite  bool
	UUID       string
	KeepOwners bool
	// SourceDateEpoch is $SOURCE_DATE_EPOCH: the time stamp of everything
	// in the filesystem ("" for ext2img.DefaultTime).
	SourceDateEpoch string
}

func newBdMakefsCommand(g *globalOptions) *cobra.Command {
	o := &bdMakefsOptions{}
	cmd := &cobra.Command{
		Use:   "makefs IMAGE DIR --size SIZE [--variant std|crypt|verity|vericrypt] [keys]",
		Short: "Make an ext2 filesystem of DIR's contents as a protected image",
		Long: `Format an ext2 filesystem holding DIR's contents (mke2fs -t ext2 -d DIR, from
e2fsprogs) into a temporary plain file, write it through the chosen device to
IMAGE, and for verity variants build the tree file and print the root hash.

The build is reproducible: the same tree gives the same filesystem, byte for
byte, and so the same root hash, whatever the files' time stamps, owners or
directory order. Every time stamp is $SOURCE_DATE_EPOCH (seconds since 1970)
or else 2000-01-01 00:00:00 UTC; every file belongs to root unless
--keep-owners; the filesystem UUID is --uuid or else derived from the tree's
contents and the options (printed as "fs uuid"), and the directory hash seed
from the UUID. File contents, names, links, permission bits and extended
attributes are kept. (crypt and vericrypt images with --passphrase-file
differ each time: the key derivation draws a fresh salt.)`,
		Example: `  sealfs bd makefs --size 64M --variant vericrypt --key-file xts.key --mac-key-file mac.key disk.img ./rootfs
  sealfs bd makefs --size 16M --variant crypt --passphrase-file pass disk.img ./files
  SOURCE_DATE_EPOCH=1700000000 sealfs bd makefs --size 64M --variant verity --mac-key-file mac.key --uuid 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 disk.img ./rootfs`,
	}
	o.AddFlags(cmd.Flags(), "std|crypt|verity|vericrypt")
	cmd.Flags().StringVar(&o.Size, "size", "", "image `SIZE` (bytes, or with a unit: K, M, G; a multiple of the block size)")
	cmd.Flags().BoolVar(&o.Overwrite, "overwrite", false, "replace an existing IMAGE")
	cmd.Flags().StringVar(&o.UUID, "uuid", "", "filesystem `UUID` (default: derived from DIR's contents and the options)")
	cmd.Flags().BoolVar(&o.KeepOwners, "keep-owners", false, "keep the files' numeric owners and groups (default: everything belongs to root)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		o.JSON = g.JSON
		o.SourceDateEpoch = os.Getenv("SOURCE_DATE_EPOCH")
		return asRunError(runBdMakefs(cmd.Context(), o, args, cmd.OutOrStdout(), cmd.ErrOrStderr()))
	}
	return cmd
}

// ext2Options turns the flags into ext2img options; errors are usage errors.
func (o *bdMakefsOptions) ext2Options(size int64) (*ext2img.Options, error) {
	e := &ext2img.Options{Size: size, BlockSize: max(o.BlockSize, 1024), KeepOwners: o.KeepOwners}
	if o.UUID != "" {
		u, err := ext2img.ParseUUID(o.UUID)
		if err != nil {
			return nil, usageErrorf("--uuid: %v", err)
		}
		if u == (ext2img.UUID{}) {
			return nil, usageErrorf("--uuid: the all-zero UUID means no UUID; give another")
		}
		e.UUID = &u
	}
	if o.SourceDateEpoch != "" {
		sec, err := strconv.ParseInt(o.SourceDateEpoch, 10, 64)
		if err != nil || sec < 1 || sec > 1<<31-1 {
			return nil, usageErrorf("SOURCE_DATE_EPOCH=%q: want whole seconds since 1970, from 1 to %d", o.SourceDateEpoch, 1<<31-1)
		}
		e.Time = time.Unix(sec, 0)
	}
	return e, nil
}

func runBdMakefs(ctx context.Context, o *bdMakefsOptions, args []string, stdout, stderr io.Writer) error {
	if err := needArgs(args, "IMAGE", "DIR"); err != nil {
		return err
	}
	image, dir := args[0], args[1]
	if err := o.check("std", "crypt", "verity", "vericrypt"); err != nil {
		return err
	}
	if o.Size == "" {
		return usageErrorf("--size is required")
	}
	size, err := parseSize("--size", o.Size)
	if err != nil {
		return err
	}
	if size == 0 || size%int64(o.BlockSize) != 0 {
		return usageErrorf("--size: %d is not a positive multiple of the block size %d", size, o.BlockSize)
	}
	eopts, err := o.ext2Options(size)
	if err != nil {
		return err
	}
	cache, err := o.treeCache()
	if err != nil {
		return err
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return usageErrorf("DIR %s is not a directory", dir)
	}
	if _, err := os.Stat(image); err == nil && !o.Overwrite {
		return usageErrorf("%s exists; pass --overwrite to replace it", image)
	}
	if _, err := exec.LookPath("mke2fs"); err != nil {
		return withCode(ExitError, fmt.Errorf("mke2fs not found (install e2fsprogs): %w", err))
	}
	var cryptKey, macKey []byte
	defer func() { clear(cryptKey); clear(macKey) }()
	if o.crypt() {
		if cryptKey, err = o.cryptKey(image, true); err != nil {
			return err
		}
	}
	if o.verity() {
		if macKey, err = o.macKey(); err != nil {
			return err
		}
	}

	// 1. The plaintext filesystem in a temporary file.
	tmp, err := os.CreateTemp(filepath.Dir(image), ".sealfs-makefs-*.img")
	if err != nil {
		return withCode(ExitError, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	fsInfo, err := ext2img.Build(ctx, dir, tmp.Name(), eopts)
	if err != nil {
		return withCode(ExitError, err)
	}

	// 2. Written through the device.
	raw, err := blockdev.CreateFile(image, size, &blockdev.FileOptions{BlockSize: 512})
	if err != nil {
		return withCode(ExitError, err)
	}
	defer raw.Close()
	var dev blockdev.Device
	if o.crypt() {
		dev, err = bd.NewCrypt(raw, cryptKey, &bd.CryptOptions{BlockSize: o.BlockSize})
	} else {
		dev, err = bd.NewStd(raw, &bd.StdOptions{BlockSize: o.BlockSize})
	}
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		n := min(int64(len(buf)), size-off)
		if _, err := io.ReadFull(io.NewSectionReader(tmp, off, n), buf[:n]); err != nil {
			return withCode(ExitError, err)
		}
		if _, err := dev.WriteAt(buf[:n], off); err != nil {
			return withCode(ExitError, err)
		}
		off += n
	}
	if err := dev.Sync(); err != nil {
		return withCode(ExitError, err)
	}
	r := bdReport{Image: image, Variant: o.Variant, Size: size, BlockSize: o.BlockSize, FSUUID: fsInfo.UUID.String()}
	if o.PassphraseFile != "" {
		r.KDFFile = o.KDFFile
		if r.KDFFile == "" {
			r.KDFFile = image + ".kdf"
		}
	}

	// 3. The tree over what is on the medium (ciphertext for vericrypt).
	if o.verity() {
		r.Tree = o.treePath(image)
		root, err := makeBdTree(ctx, raw, r.Tree, macKey, o.BlockSize, cache, stderr)
		if err != nil {
			return err
		}
		r.RootHash = hex.EncodeToString(root)
	}
	if err := raw.Close(); err != nil {
		return withCode(ExitError, err)
	}
	return r.write(stdout, o.JSON)
}

// makeBdTree writes the tree file for data and returns the root.
func makeBdTree(ctx context.Context, data blockdev.Device, path string, macKey []byte, bs int, cache int64, stderr io.Writer) ([]byte, error) {
	ts, err := bd.TreeSize(data.Size(), bs)
	if err != nil {
		return nil, usageError(err)
	}
	os.Remove(path) // CreateFile refuses an existing file; the tree is rebuilt whole
	tree, err := blockdev.CreateFile(path, ts, &blockdev.FileOptions{BlockSize: 512})
	if err != nil {
		return nil, withCode(ExitError, err)
	}
	defer tree.Close()
	update, finish := progressLine(stderr, "hashing")
	v, err := bd.FormatVerity(ctx, data, tree, macKey, &bd.VerityOptions{BlockSize: bs, TreeCache: cache, Progress: update})
	finish()
	if err != nil {
		return nil, withCode(ExitError, err)
	}
	if err := tree.Close(); err != nil {
		return nil, withCode(ExitError, err)
	}
	return v.Root(), nil
}

// --- makemerkle ---

type bdMakemerkleOptions struct {
	bdOptions
}

func newBdMakemerkleCommand(g *globalOptions) *cobra.Command {
	o := &bdMakemerkleOptions{}
	cmd := &cobra.Command{
		Use:   "makemerkle IMAGE TREE --mac-key-file F",
		Short: "Build the verity Merkle tree of IMAGE and print its root hash",
		Long: `Hash every block of IMAGE as it is on disk (the ciphertext of a crypt image,
which makes it a vericrypt image), write the tree to TREE (replaced if it
exists) and print the root hash. This accepts IMAGE's current contents as
genuine: run it only on an image you trust.`,
		Example: `  sealfs bd makemerkle --mac-key-file mac.key disk.img disk.img.tree`,
	}
	o.AddFlags(cmd.Flags(), "verity")
	cmd.Flags().MarkHidden("variant")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		o.JSON = g.JSON
		return asRunError(runBdMakemerkle(cmd.Context(), o, args, cmd.OutOrStdout(), cmd.ErrOrStderr()))
	}
	return cmd
}

func runBdMakemerkle(ctx context.Context, o *bdMakemerkleOptions, args []string, stdout, stderr io.Writer) error {
	if err := needArgs(args, "IMAGE", "TREE"); err != nil {
		return err
	}
	o.Variant = "verity"
	macKey, err := o.macKey()
	if err != nil {
		return err
	}
	defer clear(macKey)
	data, err := blockdev.OpenFile(args[0], &blockdev.FileOptions{ReadOnly: true, BlockSize: 512})
	if err != nil {
		return withCode(ExitError, err)
	}
	defer data.Close()
	cache, err := o.treeCache()
	if err != nil {
		return err
	}
	root, err := makeBdTree(ctx, data, args[1], macKey, o.BlockSize, cache, stderr)
	if err != nil {
		return err
	}
	size := data.Size() / int64(o.BlockSize) * int64(o.BlockSize)
	return bdReport{Image: args[0], Size: size, BlockSize: o.BlockSize, Tree: args[1], RootHash: hex.EncodeToString(root)}.write(stdout, o.JSON)
}

// --- verify ---

type bdVerifyOptions struct {
	bdOptions
	Root string
}

func newBdVerifyCommand(g *globalOptions) *cobra.Command {
	o := &bdVerifyOptions{}
	cmd := &cobra.Command{
		Use:   "verify IMAGE --variant verity|vericrypt|dmverity --root HEX [--tree F] [--mac-key-file F]",
		Short: "Check every block of IMAGE against its tree and a trusted root hash",
		Long: `Authenticate every block of IMAGE against the tree and the trusted root hash,
and list the blocks that fail. vericrypt needs no XTS key (the tree covers the
ciphertext). dmverity checks against a veritysetup hash device given as --tree.
Exits 4 if the tree does not match the root or any block fails.`,
		Example: `  sealfs bd verify disk.img --variant vericrypt --mac-key-file mac.key --root 3a7f...
  sealfs bd verify data.img --variant dmverity --tree hash.img --root 4bc1...`,
	}
	o.AddFlags(cmd.Flags(), "verity|vericrypt|dmverity")
	cmd.Flags().StringVar(&o.Root, "root", "", "trusted root hash `HEX`")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		o.JSON = g.JSON
		return asRunError(runBdVerify(cmd.Context(), o, args, cmd.OutOrStdout(), cmd.ErrOrStderr()))
	}
	return cmd
}

func runBdVerify(ctx context.Context, o *bdVerifyOptions, args []string, stdout, stderr io.Writer) error {
	if err := needArgs(args, "IMAGE"); err != nil {
		return err
	}
	image := args[0]
	if err := o.check("verity", "vericrypt", "dmverity"); err != nil {
		return err
	}
	root, err := hex.DecodeString(o.Root)
	if err != nil || len(root) == 0 {
		return usageErrorf("--root: %q is not a hex root hash", o.Root)
	}
	cache, err := o.treeCache()
	if err != nil {
		return err
	}
	data, err := blockdev.OpenFile(image, &blockdev.FileOptions{ReadOnly: true, BlockSize: 512})
	if err != nil {
		return withCode(ExitError, err)
	}
	defer data.Close()
	treePath := o.treePath(image)
	tree, err := blockdev.OpenFile(treePath, &blockdev.FileOptions{ReadOnly: true, BlockSize: 512})
	if err != nil {
		return withCode(ExitError, err)
	}
	defer tree.Close()
	r := bdReport{Image: image, Variant: o.Variant, Tree: treePath, RootHash: o.Root}
	update, finish := progressLine(stderr, "verifying")
	defer finish()
	if o.Variant == "dmverity" {
		d, err := bd.OpenDmVerity(data, tree, root, nil)
		if err != nil {
			return err
		}
		r.Size, r.BlockSize = d.Size(), d.BlockSize()
		r.Blocks, r.BadBlocks, err = checkAllBlocks(ctx, d, update)
		if err != nil {
			return err
		}
	} else {
		macKey, err := o.macKey()
		if err != nil {
			return err
		}
		defer clear(macKey)
		v, err := bd.OpenVerity(data, tree, macKey, root, &bd.VerityOptions{BlockSize: o.BlockSize, TreeCache: cache})
		if err != nil {
			return err
		}
		r.Size, r.BlockSize = v.Size(), v.BlockSize()
		cr, err := v.Check(ctx, update)
		if err != nil && !errors.Is(err, errs.ErrAuthentication) {
			return err
		}
		r.Blocks, r.BadBlocks, r.BadNodes = cr.Blocks, cr.BadBlocks, cr.BadNodes
	}
	finish()
	r.Verified = len(r.BadBlocks) == 0 && r.BadNodes == 0
	if err := r.write(stdout, o.JSON); err != nil {
		return err
	}
	if !r.Verified {
		return fmt.Errorf("%s: %d bad blocks, %d bad tree nodes: %w", image, len(r.BadBlocks), r.BadNodes, errs.ErrAuthentication)
	}
	return nil
}

// checkAllBlocks reads every block of d and lists those failing
// authentication.
func checkAllBlocks(ctx context.Context, d blockdev.Device, progress func(done, total uint64)) (int64, []int64, error) {
	bs := int64(d.BlockSize())
	n := d.Size() / bs
	buf := make([]byte, max(bs, 1<<20))
	var bad []int64
	for b := int64(0); b < n; {
		if err := ctx.Err(); err != nil {
			return b, bad, err
		}
		k := min(int64(len(buf))/bs, n-b)
		got, err := d.ReadAt(buf[:k*bs], b*bs)
		switch {
		case err == nil || err == io.EOF:
			b += k
		case errors.Is(err, errs.ErrAuthentication):
			bad = append(bad, b+int64(got)/bs)
			b += int64(got)/bs + 1
		default:
			return b, bad, err
		}
		if progress != nil {
			progress(uint64(b), uint64(n))
		}
	}
	return n, bad, nil
}
