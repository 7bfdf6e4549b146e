package blockdev_test

import (
	"errors"
	"fmt"

	"github.com/sealfs/sealfs/blockdev"
)

// commit stands in for a format's update: two data writes, a barrier, then
// the commit record.
func commit(d blockdev.Device) error {
	for _, w := range []struct {
		off  int64
		data string
	}{{0, "data-A"}, {512, "data-B"}} {
		if _, err := d.WriteAt([]byte(w.data), w.off); err != nil {
			return err
		}
	}
	if err := d.Sync(); err != nil {
		return err
	}
	_, err := d.WriteAt([]byte("committed"), 1024)
	return err
}

// The crash harness every format shares: count the writes of a clean run,
// then cut the power after each of them and inspect what is left. A cut
// after the last write is invisible to the program, which already
// finished; the image is the complete one.
func ExampleFaulty() {
	start := blockdev.NewMemory(4096, 512).Bytes()

	clean := blockdev.NewFaulty(blockdev.NewMemoryFrom(start, 512))
	if err := commit(clean); err != nil {
		panic(err)
	}
	for n := 0; n <= clean.Writes(); n++ {
		medium := blockdev.NewMemoryFrom(start, 512)
		f := blockdev.NewFaulty(medium)
		f.CutAfter(n)
		err := commit(f)
		img := medium.Bytes()
		fmt.Printf("cut after %d: failed %v, A=%q B=%q commit=%q\n",
			n, errors.Is(err, blockdev.ErrPowerCut), img[0:6], img[512:518], img[1024:1033])
	}
	// Output:
	// cut after 0: failed true, A="\x00\x00\x00\x00\x00\x00" B="\x00\x00\x00\x00\x00\x00" commit="\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	// cut after 1: failed true, A="data-A" B="\x00\x00\x00\x00\x00\x00" commit="\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	// cut after 2: failed true, A="data-A" B="data-B" commit="\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	// cut after 3: failed false, A="data-A" B="data-B" commit="committed"
}

// Tears of one write, as a harness enumerates them: TearPivots lists the
// split points, ReplayTorn builds each image from a clean run's log.
func ExampleReplayTorn() {
	start := make([]byte, 1024)
	clean := blockdev.NewFaulty(blockdev.NewMemoryFrom(start, 512))
	data := make([]byte, 512)
	for i := range data {
		data[i] = 0xff
	}
	clean.WriteAt(data, 512)
	log := clean.Log()

	for _, pivot := range blockdev.TearPivots(512, 512, 512) {
		img := blockdev.NewMemoryFrom(start, 512)
		if err := blockdev.ReplayTorn(img, log, 1, pivot, true); err != nil {
			panic(err)
		}
		b := img.Bytes()
		newBytes := 0
		for _, c := range b[512:] {
			if c == 0xff {
				newBytes++
			}
		}
		fmt.Printf("pivot %3d: %3d new bytes\n", pivot, newBytes)
	}
	// Output:
	// pivot   0:   0 new bytes
	// pivot 128: 128 new bytes
	// pivot 256: 256 new bytes
	// pivot 384: 384 new bytes
	// pivot 512: 512 new bytes
}
