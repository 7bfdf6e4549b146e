package ext2img

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultTime is the time stamp of every inode and of the superblock when
// Options.Time is zero: 2000-01-01 00:00:00 UTC.
var DefaultTime = time.Unix(946684800, 0).UTC()

// Options say what to build. Size is required.
type Options struct {
	// Size of the image in bytes, a multiple of BlockSize.
	Size int64
	// BlockSize of the filesystem: 1024, 2048 or 4096; 0 means 4096.
	BlockSize int
	// UUID of the filesystem; nil derives one from TreeDigest of the
	// directory and the other options.
	UUID *UUID
	// Time for every time stamp in the image, whole seconds from 1970-01-01
	// 00:00:01 to 2038-01-19 03:14:07 UTC (the superblock's 32-bit range);
	// zero means DefaultTime.
	Time time.Time
	// KeepOwners keeps each file's numeric owner and group (and the
	// directory's for the root); by default everything belongs to 0:0.
	KeepOwners bool
	// Mke2fs is the mke2fs program; "" looks it up in $PATH.
	Mke2fs string
}

// Result describes a built image.
type Result struct {
	UUID      UUID
	HashSeed  UUID
	BlockSize int
	Time      time.Time
	// TreeDigest is the digest the UUID was derived from; nil when the
	// UUID was given.
	TreeDigest []byte
}

// ErrMke2fs reports that mke2fs is missing or failed; its output is in the
// message.
var ErrMke2fs = errors.New("ext2img: mke2fs")

// Build writes an ext2 filesystem holding dir's contents to the file image
// (created if missing, truncated to opts.Size), reproducibly: see the
// package documentation. It stops early if ctx is cancelled.
func Build(ctx context.Context, dir, image string, opts *Options) (*Result, error) {
	o, err := opts.resolve()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("ext2img: source: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("ext2img: source %s is not a directory", dir)
	}
	mke2fs := o.Mke2fs
	if mke2fs == "" {
		if mke2fs, err = exec.LookPath("mke2fs"); err != nil {
			return nil, fmt.Errorf("%w not found (install e2fsprogs): %v", ErrMke2fs, err)
		}
	}
	r := &Result{BlockSize: o.BlockSize, Time: o.Time}
	if o.UUID != nil {
		r.UUID = *o.UUID
	} else {
		if r.TreeDigest, err = TreeDigest(ctx, dir, o.KeepOwners); err != nil {
			return nil, err
		}
		r.UUID = deriveUUID(r.TreeDigest, o)
	}
	r.HashSeed = hashSeed(r.UUID)

	f, err := os.OpenFile(image, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("ext2img: %w", err)
	}
	defer f.Close()
	// Start from zeros: mke2fs leaves unused blocks as they are.
	if err := f.Truncate(0); err != nil {
		return nil, fmt.Errorf("ext2img: %w", err)
	}
	if err := f.Truncate(o.Size); err != nil {
		return nil, fmt.Errorf("ext2img: %w", err)
	}

	tmp, err := os.MkdirTemp("", "sealfs-ext2img-")
	if err != nil {
		return nil, fmt.Errorf("ext2img: %w", err)
	}
	defer os.RemoveAll(tmp)
	conf := filepath.Join(tmp, "mke2fs.conf")
	if err := os.WriteFile(conf, []byte(mke2fsConf), 0o600); err != nil {
		return nil, fmt.Errorf("ext2img: %w", err)
	}
	owner := "0:0"
	if o.KeepOwners {
		if s, ok := st.Sys().(*syscall.Stat_t); ok {
			owner = fmt.Sprintf("%d:%d", s.Uid, s.Gid)
		}
	}
	args := []string{"-q", "-F", "-t", "ext2",
		"-b", strconv.Itoa(o.BlockSize), "-I", "256",
		"-U", r.UUID.String(),
		"-E", "hash_seed=" + r.HashSeed.String() + ",root_owner=" + owner + ",nodiscard",
		"-d", dir, image}
	cmd := exec.CommandContext(ctx, mke2fs, args...)
	// Nothing from the caller's environment: MKE2FS_* and E2FSPROGS_*
	// variables change the result, and the locale changes the order in
	// which directory entries are copied.
	cmd.Env = []string{
		"LC_ALL=C",
		"TZ=UTC",
		"MKE2FS_CONFIG=" + conf,
		"E2FSPROGS_FAKE_TIME=" + strconv.FormatInt(o.Time.Unix(), 10),
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %v: %s", ErrMke2fs, err, strings.TrimSpace(string(out)))
	}
	if err := normalizeInodes(f, o.Size, uint32(o.Time.Unix()), o.KeepOwners); err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("ext2img: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("ext2img: %w", err)
	}
	return r, nil
}

// resolve checks the options and fills in the defaults.
func (opts *Options) resolve() (Options, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.BlockSize == 0 {
		o.BlockSize = 4096
	}
	switch o.BlockSize {
	case 1024, 2048, 4096:
	default:
		return o, fmt.Errorf("ext2img: block size %d: want 1024, 2048 or 4096", o.BlockSize)
	}
	// 16 blocks: below that mke2fs cannot place the group's metadata.
	if o.Size < 16*int64(o.BlockSize) || o.Size%int64(o.BlockSize) != 0 {
		return o, fmt.Errorf("ext2img: size %d: want a multiple of the block size %d, at least %d", o.Size, o.BlockSize, 16*o.BlockSize)
	}
	// ext2 counts blocks in 32 bits.
	if o.Size/int64(o.BlockSize) > 1<<32-1 {
		return o, fmt.Errorf("ext2img: size %d: more than 2^32-1 blocks of %d bytes", o.Size, o.BlockSize)
	}
	if o.Time.IsZero() {
		o.Time = DefaultTime
	}
	if s := o.Time.Unix(); s < 1 || s > 1<<31-1 || o.Time.Nanosecond() != 0 {
		return o, fmt.Errorf("ext2img: time %s: want whole seconds from 1970-01-01T00:00:01Z to 2038-01-19T03:14:07Z", o.Time.UTC().Format(time.RFC3339Nano))
	}
	o.Time = o.Time.UTC()
	if o.UUID != nil && *o.UUID == (UUID{}) {
		return o, errors.New("ext2img: the all-zero UUID means no UUID; give another")
	}
	return o, nil
}

// deriveUUID makes an RFC 9562 version 8 UUID from the tree digest and the
// options that change the image, so that different images get different
// UUIDs.
func deriveUUID(tree []byte, o Options) UUID {
	h := sha256.New()
	h.Write([]byte("sealfs ext2img uuid v1\x00"))
	h.Write(tree)
	var b [8 * 4]byte
	binary.LittleEndian.PutUint64(b[0:], uint64(o.Size))
	binary.LittleEndian.PutUint64(b[8:], uint64(o.BlockSize))
	binary.LittleEndian.PutUint64(b[16:], uint64(o.Time.Unix()))
	if o.KeepOwners {
		b[24] = 1
	}
	h.Write(b[:])
	var u UUID
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x80 // version 8: custom
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
	return u
}

// hashSeed is the directory index hash seed for an image with UUID u. It
// need not be secret (the image is fixed when it is built); it only has to
// be the same for the same image.
func hashSeed(u UUID) UUID {
	sum := sha256.Sum256(append([]byte("sealfs ext2img hash seed v1\x00"), u[:]...))
	var s UUID
	copy(s[:], sum[:])
	return s
}

// UUID is a filesystem UUID.
type UUID [16]byte

// ParseUUID accepts the 8-4-4-4-12 form or 32 hex digits.
func ParseUUID(s string) (UUID, error) {
	var u UUID
	h := s
	if len(s) == 36 && s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-' {
		h = s[:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 16 {
		return u, fmt.Errorf("ext2img: invalid UUID %q: want 8-4-4-4-12 hex digits", s)
	}
	copy(u[:], b)
	return u, nil
}

// String is the 8-4-4-4-12 form.
func (u UUID) String() string {
	h := hex.EncodeToString(u[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// mke2fsConf is e2fsprogs 1.47's stock mke2fs.conf for the types an ext2
// image can get, so that the host's /etc/mke2fs.conf does not change the
// result. Block and inode size come from the command line.
const mke2fsConf = `[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384
	reserved_ratio = 5.0

[fs_types]
	ext2 = {
	}
	small = {
		inode_ratio = 4096
	}
	floppy = {
		inode_ratio = 8192
	}
	big = {
		inode_ratio = 32768
	}
	huge = {
		inode_ratio = 65536
	}
`
