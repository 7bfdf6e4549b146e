package bd

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
)

// region is a window [off, off+size) of a device, so data and tree can sit
// on one Faulty medium and one power cut hits both.
type region struct {
	d         blockdev.Device
	off, size int64
}

func (r *region) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, nil
	}
	n := int(min(int64(len(p)), r.size-off))
	m, err := r.d.ReadAt(p[:n], r.off+off)
	if m == n && err != nil && n < len(p) {
		err = nil
	}
	return m, err
}

func (r *region) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > r.size {
		return 0, fmt.Errorf("region: write of %d at %d: %w", len(p), off, blockdev.ErrOutOfRange)
	}
	return r.d.WriteAt(p, r.off+off)
}
func (r *region) Sync() error    { return r.d.Sync() }
func (r *region) Size() int64    { return r.size }
func (r *region) BlockSize() int { return r.d.BlockSize() }

// state is a root the caller could have kept, with the plaintext it covers.
type state struct {
	root  []byte
	model []byte
}

// TestCrashVerity cuts the power after every write (and tears writes) of
// a workload on Verity and VeriCrypt, then reopens the medium with every
// root the program ever saw. Whatever opens must return, for every block,
// either exactly that root's data or ErrAuthentication: never wrong data.
func TestCrashVerity(t *testing.T) {
	for _, crypt := range []bool{false, true} {
		for _, cache := range []int64{0, testTreeCache} {
			name := map[bool]string{false: "Verity", true: "VeriCrypt"}[crypt]
			if cache != 0 {
				name += "Cached"
			}
			t.Run(name, func(t *testing.T) {
				testCrash(t, crypt, cache)
			})
		}
	}
}

func testCrash(t *testing.T, crypt bool, cache int64) {
	const bs, blocks = 512, 12
	dsize := int64(bs * blocks)
	tsize := must(TreeSize(dsize, bs))
	open := func(med blockdev.Device, root []byte, format bool) (blockdev.Device, error) {
		data, tree := &region{med, 0, dsize}, &region{med, dsize, tsize}
		o := &VeriCryptOptions{BlockSize: bs, TreeCache: cache}
		vo := &VerityOptions{BlockSize: bs, TreeCache: cache}
		switch {
		case crypt && format:
			return asDev(FormatVeriCrypt(context.Background(), data, tree, testCryptKey, testMACKey, o))
		case crypt:
			return asDev(OpenVeriCrypt(data, tree, testCryptKey, testMACKey, root, o))
		case format:
			return asDev(FormatVerity(context.Background(), data, tree, testMACKey, vo))
		}
		return asDev(OpenVerity(data, tree, testMACKey, root, vo))
	}
	// The starting image.
	base := blockdev.NewMemory(dsize+tsize, bs)
	d0 := must(open(base, nil, true))
	model0 := pattern(int(dsize), 40)
	fill(t, d0, model0)
	root0 := d0.(rooted).Root()
	snapshot := bytes.Clone(base.Bytes())

	type op struct {
		blk, n int // write n blocks at blk; n == 0: Sync
	}
	workload := []op{{2, 1}, {0, 0}, {5, 3}, {9, 1}, {0, 0}, {0, 12}, {7, 1}, {0, 0}, {11, 1}}

	// run performs the workload on a fresh copy with faults armed by arm,
	// and returns the medium and every state the program saw.
	run := func(arm func(*blockdev.Faulty)) (*blockdev.Memory, []state, int) {
		med := blockdev.NewMemoryFrom(snapshot, bs)
		f := blockdev.NewFaulty(med)
		arm(f)
		d, err := open(f, root0, false)
		if err != nil {
			t.Fatalf("open before the workload: %v", err)
		}
		model := bytes.Clone(model0)
		states := []state{{root0, bytes.Clone(model)}}
		for i, o := range workload {
			if o.n == 0 {
				if d.Sync() != nil {
					break
				}
				continue
			}
			data := pattern(o.n*bs, uint64(100+i))
			if _, err := d.WriteAt(data, int64(o.blk*bs)); err != nil {
				// The write may have reached the medium in part: the
				// program knows no root for it.
				break
			}
			copy(model[o.blk*bs:], data)
			states = append(states, state{d.(rooted).Root(), bytes.Clone(model)})
		}
		return med, states, f.Writes()
	}

	check := func(t *testing.T, med *blockdev.Memory, states []state) (opened int) {
		for si, s := range states {
			d, err := open(med, s.root, false)
			if err != nil {
				if !isAuth(err) {
					t.Errorf("state %d: open = %v; want success or ErrAuthentication", si, err)
				}
				continue
			}
			opened++
			for b := int64(0); b < blocks; b++ {
				got, err := readBlock(d, b)
				if err != nil {
					if !isAuth(err) {
						t.Errorf("state %d block %d: %v", si, b, err)
					}
					continue
				}
				if !bytes.Equal(got, s.model[b*bs:(b+1)*bs]) {
					t.Fatalf("state %d block %d: WRONG DATA returned after a crash", si, b)
				}
			}
		}
		return opened
	}

	_, _, total := run(func(*blockdev.Faulty) {})
	cleanOpened := 0
	for k := 1; k <= total; k++ {
		t.Run(fmt.Sprint("cut", k), func(t *testing.T) {
			med, states, _ := run(func(f *blockdev.Faulty) { f.CutAfter(k) })
			if check(t, med, states) > 0 {
				cleanOpened++
			}
		})
		for _, pivot := range []int{128, bs / 2} {
			for _, newFirst := range []bool{true, false} {
				t.Run(fmt.Sprint("tear", k, "/", pivot, "/", newFirst), func(t *testing.T) {
					med, states, _ := run(func(f *blockdev.Faulty) { f.TearWrite(k, pivot, newFirst) })
					check(t, med, states)
				})
			}
		}
	}
	// With in-order writes a cut right after a complete tree update leaves
	// a medium that matches the last root: at least those must reopen.
	if cleanOpened == 0 {
		t.Errorf("no crash point left a medium that opens with any root the program saw")
	}
	t.Logf("%d writes; %d of the cut points reopen with a known root", total, cleanOpened)
}
