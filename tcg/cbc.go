package tcg

import (
	"crypto/cipher"
	"fmt"
	"unsafe"
)

// CocoonFS encrypts whole, block-aligned units, so these helpers do no
// padding. Their job is to turn the conditions under which crypto/cipher
// panics (wrong IV length, unaligned input, short or badly overlapping
// output) into errors, because those lengths ultimately come from image
// contents that may be corrupt.

// CBCEncrypt encrypts src into dst in CBC mode with block cipher b and
// initialization vector iv. len(iv) must equal b.BlockSize(), len(src) must
// be a multiple of it and dst must be at least as long as src; otherwise the
// error wraps ErrInvalidLength. dst and src may be the same slice but must
// not otherwise overlap. iv is not modified.
func CBCEncrypt(b cipher.Block, iv, dst, src []byte) error {
	if err := checkCBC("CBCEncrypt", b, iv, dst, src); err != nil {
		return err
	}
	cipher.NewCBCEncrypter(b, iv).CryptBlocks(dst[:len(src)], src)
	return nil
}

// CBCDecrypt decrypts src into dst in CBC mode, with the same requirements
// as CBCEncrypt.
func CBCDecrypt(b cipher.Block, iv, dst, src []byte) error {
	if err := checkCBC("CBCDecrypt", b, iv, dst, src); err != nil {
		return err
	}
	cipher.NewCBCDecrypter(b, iv).CryptBlocks(dst[:len(src)], src)
	return nil
}

func checkCBC(op string, b cipher.Block, iv, dst, src []byte) error {
	if b == nil {
		return fmt.Errorf("tcg: %s: nil block cipher", op)
	}
	bs := b.BlockSize()
	switch {
	case len(iv) != bs:
		return fmt.Errorf("tcg: %s: %w: IV is %d bytes, block size is %d", op, ErrInvalidLength, len(iv), bs)
	case len(src)%bs != 0:
		return fmt.Errorf("tcg: %s: %w: input of %d bytes is not a multiple of the %d-byte block size", op, ErrInvalidLength, len(src), bs)
	case len(dst) < len(src):
		return fmt.Errorf("tcg: %s: %w: output of %d bytes is shorter than input of %d bytes", op, ErrInvalidLength, len(dst), len(src))
	case inexactOverlap(dst[:len(src)], src):
		return fmt.Errorf("tcg: %s: output and input overlap but are not the same slice", op)
	}
	return nil
}

// inexactOverlap reports whether x and y share memory at different offsets,
// the case in which crypto/cipher panics. It compares addresses only and
// never dereferences them.
func inexactOverlap(x, y []byte) bool {
	if len(x) == 0 || len(y) == 0 || &x[0] == &y[0] {
		return false
	}
	xs, ys := uintptr(unsafe.Pointer(&x[0])), uintptr(unsafe.Pointer(&y[0]))
	return xs < ys+uintptr(len(y)) && ys < xs+uintptr(len(x))
}
