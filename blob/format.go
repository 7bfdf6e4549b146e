package blob

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/merkle"
)

// Blob file: header(32) || data (size bytes) || tree (treeSize bytes).
//
//	off  size  field
//	  0     8  magic "sealblob"
//	  8     4  u32le version = 1
//	 12     4  u32le flags = 0 (unknown bits: refused)
//	 16     8  u64le data size
//	 24     8  u64le tree size = merkle.FuchsiaTreeSize(data size)
//
// The tree is the Fuchsia Merkle tree's levels below the root, as
// merkle.FuchsiaBuilder.Finish returns them; the root is the file name.
const (
	headerSize    = 32
	headerMagic   = "sealblob"
	headerVersion = 1
)

type header struct {
	size     int64
	treeSize int64
}

func (h header) encode() []byte {
	b := make([]byte, headerSize)
	copy(b, headerMagic)
	binary.LittleEndian.PutUint32(b[8:], headerVersion)
	binary.LittleEndian.PutUint64(b[16:], uint64(h.size))
	binary.LittleEndian.PutUint64(b[24:], uint64(h.treeSize))
	return b
}

// fileLen is the blob file's length for this header.
func (h header) fileLen() int64 { return headerSize + h.size + h.treeSize }

// readHeader reads and checks the header of an open blob file against the
// file's length. The store wrote it consistently, so any inconsistency is
// an alteration: ErrIntegrity. A newer version or unknown flags are
// errs.ErrUnsupported.
func readHeader(f *os.File) (header, error) {
	fi, err := f.Stat()
	if err != nil {
		return header{}, err
	}
	var b [headerSize]byte
	if _, err := f.ReadAt(b[:], 0); err != nil {
		if err == io.EOF {
			return header{}, fmt.Errorf("blob file shorter than its header: %w", ErrIntegrity)
		}
		return header{}, err
	}
	if string(b[:8]) != headerMagic {
		return header{}, fmt.Errorf("blob file header damaged (bad magic): %w", ErrIntegrity)
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != headerVersion {
		return header{}, fmt.Errorf("blob file version %d: %w", v, errs.ErrUnsupported)
	}
	if fl := binary.LittleEndian.Uint32(b[12:]); fl != 0 {
		return header{}, fmt.Errorf("blob file flags %#x: %w", fl, errs.ErrUnsupported)
	}
	size := binary.LittleEndian.Uint64(b[16:])
	tree := binary.LittleEndian.Uint64(b[24:])
	const maxSize = 1 << 60
	if size > maxSize || tree != uint64(merkle.FuchsiaTreeSize(int64(size))) {
		return header{}, fmt.Errorf("blob file header damaged (size %d, tree %d bytes): %w", size, tree, ErrIntegrity)
	}
	h := header{size: int64(size), treeSize: int64(tree)}
	if fi.Size() != h.fileLen() {
		return header{}, fmt.Errorf("blob file is %d bytes, header says %d: %w", fi.Size(), h.fileLen(), ErrIntegrity)
	}
	return h, nil
}
