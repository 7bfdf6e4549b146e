package bd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/merkle"
)

var (
	testCryptKey = pattern(CryptKeySize, 99)
	testMACKey   = bytes.Repeat([]byte{0x5a}, 32)
)

// pattern returns n reproducible pseudo-random bytes.
func pattern(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// rooted is implemented by the verity variants.
type rooted interface{ Root() []byte }

// instance is one opened variant over in-memory media.
type instance struct {
	dev  blockdev.Device
	data *blockdev.Memory // the lower (untrusted) data medium
	tree *blockdev.Memory // tree / hash device, nil if none
	// reopen opens the variant again over the same media, trusting root
	// (nil: the current Root of dev).
	reopen func(root []byte) (blockdev.Device, error)
}

// variant builds devices of one kind holding plaintext init.
type variant struct {
	name     string
	readOnly bool
	open     func(t testing.TB, init []byte, bs int) *instance
}

func variants() []variant {
	return []variant{
		{"Std", false, openStd},
		{"Crypt", false, openCrypt},
		{"Verity", false, openVerity},
		{"VeriCrypt", false, openVeriCrypt},
		{"DmVerity", true, openDmVerityTest},
		{"VerityCached", false, openVerityCached},
		{"VeriCryptCached", false, openVeriCryptCached},
	}
}

// testTreeCache is a tree cache so small that the test devices keep only
// the upper levels of their tree in memory, read leaf groups back from the
// tree device and evict them (see treeGeometry).
const testTreeCache = 600

// must is for test setup, where an error is a bug in the test.
func must[T any](v T, err error) T {
	if err != nil {
		panic("test setup: " + err.Error())
	}
	return v
}

func fill(t testing.TB, d blockdev.Device, init []byte) {
	t.Helper()
	if _, err := d.WriteAt(init, 0); err != nil {
		t.Fatalf("writing initial contents: %v", err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

func openStd(t testing.TB, init []byte, bs int) *instance {
	m := blockdev.NewMemory(int64(len(init)), 512)
	d := must(NewStd(m, &StdOptions{BlockSize: bs}))
	fill(t, d, init)
	return &instance{dev: d, data: m, reopen: func([]byte) (blockdev.Device, error) {
		return asDev(NewStd(m, &StdOptions{BlockSize: bs}))
	}}
}

func openCrypt(t testing.TB, init []byte, bs int) *instance {
	m := blockdev.NewMemory(int64(len(init)), 512)
	d := must(NewCrypt(m, testCryptKey, &CryptOptions{BlockSize: bs}))
	fill(t, d, init)
	return &instance{dev: d, data: m, reopen: func([]byte) (blockdev.Device, error) {
		return asDev(NewCrypt(m, testCryptKey, &CryptOptions{BlockSize: bs}))
	}}
}

func newTree(t testing.TB, size int64, bs int) *blockdev.Memory {
	return blockdev.NewMemory(must(TreeSize(size, bs)), 512)
}

func openVerity(t testing.TB, init []byte, bs int) *instance {
	return openVerityCache(t, init, bs, 0)
}

func openVerityCached(t testing.TB, init []byte, bs int) *instance {
	return openVerityCache(t, init, bs, testTreeCache)
}

func openVerityCache(t testing.TB, init []byte, bs int, cache int64) *instance {
	m := blockdev.NewMemory(int64(len(init)), 512)
	tr := newTree(t, int64(len(init)), bs)
	o := &VerityOptions{BlockSize: bs, TreeCache: cache}
	d := must(FormatVerity(context.Background(), m, tr, testMACKey, o))
	fill(t, d, init)
	return &instance{dev: d, data: m, tree: tr, reopen: func(root []byte) (blockdev.Device, error) {
		if root == nil {
			root = d.Root()
		}
		return asDev(OpenVerity(m, tr, testMACKey, root, o))
	}}
}

func openVeriCrypt(t testing.TB, init []byte, bs int) *instance {
	return openVeriCryptCache(t, init, bs, 0)
}

func openVeriCryptCached(t testing.TB, init []byte, bs int) *instance {
	return openVeriCryptCache(t, init, bs, testTreeCache)
}

func openVeriCryptCache(t testing.TB, init []byte, bs int, cache int64) *instance {
	m := blockdev.NewMemory(int64(len(init)), 512)
	tr := newTree(t, int64(len(init)), bs)
	o := &VeriCryptOptions{BlockSize: bs, TreeCache: cache}
	d := must(FormatVeriCrypt(context.Background(), m, tr, testCryptKey, testMACKey, o))
	fill(t, d, init)
	return &instance{dev: d, data: m, tree: tr, reopen: func(root []byte) (blockdev.Device, error) {
		if root == nil {
			root = d.Root()
		}
		return asDev(OpenVeriCrypt(m, tr, testCryptKey, testMACKey, root, o))
	}}
}

// openDmVerityTest formats a dm-verity hash device with package merkle
// (byte-identical to veritysetup's; see TestDmVerityVeritysetup).
func openDmVerityTest(t testing.TB, init []byte, bs int) *instance {
	m := blockdev.NewMemoryFrom(init, 512)
	mo := merkle.DmverityOptions{DataBlockSize: bs, HashBlockSize: 4096, Salt: []byte("salt")}
	l := must(mo.Layout(int64(len(init))))
	h := blockdev.NewMemory(l.HashAreaEnd, 512)
	root := must(merkle.DmverityFormat(m, int64(len(init)), h, mo))
	open := func(r []byte) (blockdev.Device, error) {
		if r == nil {
			r = root
		}
		return asDev(OpenDmVerity(m, h, r, nil))
	}
	return &instance{dev: must(open(nil)), data: m, tree: h, reopen: open}
}

// checkContents reads the whole device and compares it with want.
func checkContents(t testing.TB, d blockdev.Device, want []byte) {
	t.Helper()
	got := make([]byte, len(want))
	n, err := d.ReadAt(got, 0)
	if n != len(want) || (err != nil && err != io.EOF) {
		t.Fatalf("ReadAt(all) = %d, %v", n, err)
	}
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("contents differ at byte %d (block %d)", i, i/d.BlockSize())
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// readBlock reads block b of d.
func readBlock(d blockdev.Device, b int64) ([]byte, error) {
	p := make([]byte, d.BlockSize())
	_, err := d.ReadAt(p, b*int64(d.BlockSize()))
	if err == io.EOF {
		err = nil
	}
	return p, err
}

func isAuth(err error) bool { return errors.Is(err, errs.ErrAuthentication) }

func name(parts ...any) string { return fmt.Sprint(parts...) }

// asDev converts a constructor's result, keeping a nil interface on error.
func asDev[D blockdev.Device](d D, err error) (blockdev.Device, error) {
	if err != nil {
		return nil, err
	}
	return d, nil
}
