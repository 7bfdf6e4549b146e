package ext2img

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrLayout reports an image normalizeInodes cannot read as the ext2 file
// system Build asked mke2fs for.
var ErrLayout = errors.New("ext2img: unexpected ext2 layout")

// ext2 on-disk constants (e2fsprogs lib/ext2fs/ext2_fs.h).
const (
	superOffset = 1024
	superMagic  = 0xef53
	rootIno     = 2

	incompatFiletype   = 0x0002
	roCompatSparse     = 0x0001
	roCompatLargeFile  = 0x0002
	groupDescSize      = 32
	inodeExtraIsizeOff = 128 // i_extra_isize, in inodes larger than 128 bytes
)

// imageRW is the finished image: Build passes the file; tests, memory.
type imageRW interface {
	io.ReaderAt
	io.WriterAt
}

// normalizeInodes sets the time stamps of every inode in use (atime, ctime,
// mtime, crtime; the nanosecond and epoch bits to zero) to t and, unless
// keepOwners, its owner and group to 0, in the ext2 image img of size
// bytes. mke2fs -d copies these from the source files, and a source file's
// ctime cannot be set. It reads and writes one block at a time, and touches
// only inode tables: ext2 without metadata_csum has no checksum over them.
func normalizeInodes(img imageRW, size int64, t uint32, keepOwners bool) error {
	sb := make([]byte, 1024)
	if _, err := img.ReadAt(sb, superOffset); err != nil {
		return fmt.Errorf("%w: superblock: %v", ErrLayout, err)
	}
	le := binary.LittleEndian
	inodesCount := uint64(le.Uint32(sb[0:]))
	blocksCount := uint64(le.Uint32(sb[4:]))
	firstDataBlock := uint64(le.Uint32(sb[20:]))
	logBlock := le.Uint32(sb[24:])
	blocksPerGroup := uint64(le.Uint32(sb[32:]))
	inodesPerGroup := uint64(le.Uint32(sb[40:]))
	magic := le.Uint16(sb[56:])
	revLevel := le.Uint32(sb[76:])
	firstIno := uint64(le.Uint32(sb[84:]))
	inodeSize := uint64(le.Uint16(sb[88:]))
	incompat, roCompat := le.Uint32(sb[96:]), le.Uint32(sb[100:])

	switch {
	case magic != superMagic:
		return fmt.Errorf("%w: no ext2 superblock (magic %#04x)", ErrLayout, magic)
	case revLevel != 1:
		return fmt.Errorf("%w: revision %d, want 1 (dynamic)", ErrLayout, revLevel)
	case incompat&^incompatFiletype != 0 || roCompat&^(roCompatSparse|roCompatLargeFile) != 0:
		// Anything else (extents, 64bit, flex_bg, checksums, ...) is not
		// what Build's mke2fs.conf asks for.
		return fmt.Errorf("%w: features incompat %#x ro_compat %#x", ErrLayout, incompat, roCompat)
	case logBlock > 6:
		return fmt.Errorf("%w: block size 1024<<%d", ErrLayout, logBlock)
	}
	bs := uint64(1024) << logBlock
	switch {
	case inodeSize < 128 || inodeSize > bs || inodeSize&(inodeSize-1) != 0:
		return fmt.Errorf("%w: inode size %d", ErrLayout, inodeSize)
	case blocksCount == 0 || blocksCount > uint64(size)/bs || firstDataBlock >= blocksCount:
		return fmt.Errorf("%w: %d blocks of %d bytes (first data block %d) in %d bytes", ErrLayout, blocksCount, bs, firstDataBlock, size)
	case blocksPerGroup == 0 || blocksPerGroup > 8*bs || inodesPerGroup == 0 || inodesPerGroup > 8*bs:
		return fmt.Errorf("%w: %d blocks and %d inodes per group", ErrLayout, blocksPerGroup, inodesPerGroup)
	}
	groups := (blocksCount - firstDataBlock + blocksPerGroup - 1) / blocksPerGroup
	itableBlocks := (inodesPerGroup*inodeSize + bs - 1) / bs
	switch {
	case inodesCount != groups*inodesPerGroup:
		return fmt.Errorf("%w: %d inodes, %d groups of %d", ErrLayout, inodesCount, groups, inodesPerGroup)
	case firstIno <= rootIno || firstIno > inodesCount:
		return fmt.Errorf("%w: first inode %d", ErrLayout, firstIno)
	case (firstDataBlock+1)*bs+groups*groupDescSize > blocksCount*bs:
		return fmt.Errorf("%w: group descriptors past the end", ErrLayout)
	}
	inBlocks := func(start, n uint64) bool {
		return start >= firstDataBlock && start < blocksCount && n <= blocksCount-start
	}

	gd := make([]byte, groupDescSize)
	bitmap := make([]byte, bs)
	block := make([]byte, bs)
	perBlock := bs / inodeSize
	for g := uint64(0); g < groups; g++ {
		if _, err := img.ReadAt(gd, int64((firstDataBlock+1)*bs+g*groupDescSize)); err != nil {
			return fmt.Errorf("%w: group %d descriptor: %v", ErrLayout, g, err)
		}
		inodeBitmap, inodeTable := uint64(le.Uint32(gd[4:])), uint64(le.Uint32(gd[8:]))
		if !inBlocks(inodeBitmap, 1) || !inBlocks(inodeTable, itableBlocks) {
			return fmt.Errorf("%w: group %d: inode bitmap at %d, table at %d", ErrLayout, g, inodeBitmap, inodeTable)
		}
		if _, err := img.ReadAt(bitmap, int64(inodeBitmap*bs)); err != nil {
			return fmt.Errorf("%w: group %d inode bitmap: %v", ErrLayout, g, err)
		}
		for b := uint64(0); b < itableBlocks; b++ {
			first := b * perBlock // index in the group of the block's first inode
			if first >= inodesPerGroup {
				break
			}
			used := false
			for i := first; i < min(first+perBlock, inodesPerGroup); i++ {
				used = used || bitmap[i/8]&(1<<(i%8)) != 0
			}
			if !used {
				continue
			}
			off := int64((inodeTable + b) * bs)
			if _, err := img.ReadAt(block, off); err != nil {
				return fmt.Errorf("%w: group %d inode table: %v", ErrLayout, g, err)
			}
			for i := first; i < min(first+perBlock, inodesPerGroup); i++ {
				ino := g*inodesPerGroup + i + 1
				// Reserved inodes other than the root are mke2fs's own,
				// stamped with E2FSPROGS_FAKE_TIME already.
				if bitmap[i/8]&(1<<(i%8)) == 0 || (ino != rootIno && ino < firstIno) {
					continue
				}
				normalizeInode(block[(i-first)*inodeSize:(i-first+1)*inodeSize], t, keepOwners)
			}
			if _, err := img.WriteAt(block, off); err != nil {
				return fmt.Errorf("ext2img: writing the inode table: %w", err)
			}
		}
	}
	return nil
}

// normalizeInode rewrites the times and, unless keepOwners, the owner of
// one on-disk inode (struct ext2_inode_large).
func normalizeInode(in []byte, t uint32, keepOwners bool) {
	le := binary.LittleEndian
	le.PutUint32(in[8:], t)  // i_atime
	le.PutUint32(in[12:], t) // i_ctime
	le.PutUint32(in[16:], t) // i_mtime
	if !keepOwners {
		le.PutUint16(in[2:], 0)    // i_uid
		le.PutUint16(in[24:], 0)   // i_gid
		le.PutUint16(in[0x78:], 0) // l_i_uid_high
		le.PutUint16(in[0x7a:], 0) // l_i_gid_high
	}
	if len(in) <= inodeExtraIsizeOff+2 {
		return
	}
	extra := uint64(le.Uint16(in[inodeExtraIsizeOff:]))
	// The fields after i_extra_isize, each present if it fits in extra.
	for _, f := range []struct {
		off   uint64
		value uint32
	}{
		{0x84, 0}, // i_ctime_extra
		{0x88, 0}, // i_mtime_extra
		{0x8c, 0}, // i_atime_extra
		{0x90, t}, // i_crtime
		{0x94, 0}, // i_crtime_extra
	} {
		if f.off+4 <= inodeExtraIsizeOff+extra && f.off+4 <= uint64(len(in)) {
			le.PutUint32(in[f.off:], f.value)
		}
	}
}
