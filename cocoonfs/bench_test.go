package cocoonfs

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
)

// BenchmarkOpen measures the bootstrap: key derivation, pre-authentication of
// the entry leaf and the tree/bitmap extents lists, root verification, the
// bitmap read through the tree and the index root.
func BenchmarkOpen(b *testing.B) {
	for _, image := range []string{"v01-sha2-aes128.img", "v04-sha3-camellia128.img", "v05-sm3-sm4.img", "v06-sha2-aes128-io4k.img"} {
		b.Run(image, func(b *testing.B) {
			dev := blockdev.NewMemoryFrom(vectorBytesB(b, image), 512)
			for b.Loop() {
				f, err := Open(dev, vectorKey, nil)
				if err != nil {
					b.Fatal(err)
				}
				f.Close()
			}
		})
	}
}

// BenchmarkReadFile measures authenticated reads: every data block is
// HMACed and checked against the tree, then the file is CBC-decrypted. The
// bytes/s reported is plaintext throughput. Each iteration opens the image
// anew so no tree node stays cached between iterations.
func BenchmarkReadFile(b *testing.B) {
	for _, c := range []struct {
		name  string
		image string
		ino   uint64
	}{
		{"100KiB-aes", "v01-sha2-aes128.img", 43},
		{"100KiB-camellia", "v04-sha3-camellia128.img", 43},
		{"100KiB-sm4", "v05-sm3-sm4.img", 43},
		{"1MiB-aes-io4k", "v06-sha2-aes128-io4k.img", 44},
	} {
		b.Run(c.name, func(b *testing.B) {
			dev := blockdev.NewMemoryFrom(vectorBytesB(b, c.image), 512)
			f, err := Open(dev, vectorKey, nil)
			if err != nil {
				b.Fatal(err)
			}
			data, err := f.ReadFile(c.ino)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				b.StopTimer()
				f, _ := Open(dev, vectorKey, nil)
				b.StartTimer()
				if _, err := f.ReadFile(c.ino); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReadFileLarge reads 1 MiB and 16 MiB files from images made by
// Mkfs (the reference vectors hold nothing larger than 1 MiB).
func BenchmarkReadFileLarge(b *testing.B) {
	for _, size := range []int{1 << 20, 16 << 20} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(i * 7)
			}
			dev := blockdev.NewMemory(int64(size)+size64MiBOverhead, 512)
			key := []byte("benchmark key, 32 bytes long....")
			if _, err := Mkfs(dev, key, &MkfsOptions{Files: map[uint64][]byte{42: data}, NoRandomizeUnallocated: true}); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(size))
			for b.Loop() {
				b.StopTimer()
				f, err := Open(dev, key, nil)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if _, err := f.ReadFile(42); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// size64MiBOverhead leaves room for the tree (~1/16 of the image at the
// default layout), bitmap and headers.
const size64MiBOverhead = 4 << 20

// BenchmarkVerify measures a full-image verification (8 MiB images).
func BenchmarkVerify(b *testing.B) {
	dev := blockdev.NewMemoryFrom(vectorBytesB(b, "v01-sha2-aes128.img"), 512)
	f, err := Open(dev, vectorKey, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(dev.Size())
	for b.Loop() {
		if _, err := f.Verify(b.Context(), nil); err != nil {
			b.Fatal(err)
		}
	}
}

func vectorBytesB(b *testing.B, name string) []byte {
	b.Helper()
	data, err := readVector(b, name)
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// BenchmarkBaselineCryptoFloor is the floor under ReadFile, measured in the
// same run: AES-128-CBC decryption of the buffer plus one HMAC-SHA-256 per
// 512-byte data block, with no I/O, tree or allocation work.
func BenchmarkBaselineCryptoFloor(b *testing.B) {
	const size = 16 << 20
	buf := make([]byte, size)
	out := make([]byte, size)
	blk, _ := aes.NewCipher(make([]byte, 16))
	mac := hmac.New(sha256.New, make([]byte, 32))
	b.SetBytes(size)
	for b.Loop() {
		for off := 0; off < size; off += 512 {
			mac.Reset()
			mac.Write(buf[off : off+512])
			mac.Sum(nil)
		}
		cipher.NewCBCDecrypter(blk, make([]byte, 16)).CryptBlocks(out, buf)
	}
}
