package nvram

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs"
)

// storeState renders the whole store as a reader sees it.
func storeState(t *testing.T, f *cocoonfs.FS) string {
	t.Helper()
	s, err := Open(f, &Options{Create: true})
	if err != nil {
		t.Fatalf("nvram.Open: %v", err)
	}
	d, err := s.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return describe(d)
}

// crashWorkload runs n random store updates through a logging fault
// device and returns the log, the store's state before and after each
// update, and for each write (1-based) the update it belongs to.
func crashWorkload(t *testing.T, base []byte, n int, seed uint64) ([]blockdev.LoggedOp, []string, []int) {
	t.Helper()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	faulty := blockdev.NewFaulty(blockdev.NewMemoryFrom(base, 512))
	f, err := cocoonfs.Open(faulty, testKey, &cocoonfs.Options{ReadWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := Open(f, &Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	states := []string{storeState(t, f)}
	var txOf []int
	sizes := []int{0, 1, 300, 5000, 9000, 20000}
	names := []string{"tpm2-00.permall", "tpm2-00.volatile", "tpm2-00.savestate", "vars", "nvram ä", "blob"}
	for i := 0; i < n; i++ {
		before := faulty.Writes()
		err := s.Update(ctx, func(d *Directory) error {
			// Like a TPM: one to three entries change together.
			for k := 0; k <= r.IntN(3); k++ {
				name := names[r.IntN(len(names))]
				if d.Has(name) && r.IntN(4) == 0 {
					if err := d.Remove(name); err != nil {
						return err
					}
					continue
				}
				data := make([]byte, sizes[r.IntN(len(sizes))]+r.IntN(50))
				for j := range data {
					data[j] = byte(r.Uint32())
				}
				e := &Entry{Name: name, Type: TypeTPM, Data: data}
				if r.IntN(2) == 0 {
					e.Type = "data"
					e.Optional = []Attribute{OctetsAttribute("generation", []byte(fmt.Sprint(i)))}
				}
				if err := d.Put(e); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
		for w := before; w < faulty.Writes(); w++ {
			txOf = append(txOf, i)
		}
		states = append(states, storeState(t, f))
		if states[i] == states[i+1] {
			t.Fatalf("update %d changed nothing", i)
		}
	}
	return faulty.Log(), states, txOf
}

// TestCrashHarness cuts the power after every write of a workload of
// store updates (one to three entries each, TPM-sized and larger, puts and
// removes), and tears every write at 128-byte pivots: the image must then
// open read-write (replaying a pending journal), pass Verify, and hold
// exactly the store as it was before the update in flight or after it —
// never anything else.
func TestCrashHarness(t *testing.T) {
	updates, tornPerWrite := 30, 2
	if raceDetector {
		updates, tornPerWrite = 6, 1
	}
	if os.Getenv("SEALFS_LONG") != "" {
		updates, tornPerWrite = 100, 6
	}
	dev, _ := newImage(t, 1<<20)
	base := dev.Bytes()
	log, states, txOf := crashWorkload(t, base, updates, 7)

	cur := bytes.Clone(base)
	var points, torn, sawOld, sawNew int
	check := func(k int, img []byte, what string) {
		t.Helper()
		f, err := cocoonfs.Open(blockdev.NewMemoryFrom(img, 512), testKey, &cocoonfs.Options{ReadWrite: true})
		if err != nil {
			t.Fatalf("%s: reopen: %v", what, err)
		}
		defer f.Close()
		if rep, err := f.Verify(context.Background(), nil); err != nil {
			t.Fatalf("%s: Verify: %v\n%v", what, err, rep.Problems)
		}
		i := txOf[k-1]
		switch storeState(t, f) {
		case states[i]:
			sawOld++
		case states[i+1]:
			sawNew++
		default:
			t.Fatalf("%s: the store matches neither the state before nor after update %d", what, i)
		}
	}
	k := 0
	for _, op := range log {
		if op.Kind != blockdev.OpWrite {
			continue
		}
		k++
		for j := 0; j < tornPerWrite; j++ {
			pivots := blockdev.TearPivots(op.Off, len(op.Data), 512)
			pivot := pivots[(k*7+j*13)%len(pivots)]
			img := bytes.Clone(cur)
			newFirst := j%2 == 0
			if newFirst {
				copy(img[op.Off:], op.Data[:pivot])
			} else {
				copy(img[op.Off+int64(pivot):], op.Data[pivot:])
			}
			check(k, img, fmt.Sprintf("write %d torn at %d (new first %v)", k, pivot, newFirst))
			torn++
		}
		copy(cur[op.Off:], op.Data)
		check(k, slices.Clone(cur), fmt.Sprintf("power cut after write %d", k))
		points++
	}
	if sawOld == 0 || sawNew == 0 {
		t.Fatalf("the harness never saw the old (%d) or the new (%d) state", sawOld, sawNew)
	}
	t.Logf("%d updates, %d writes: %d power-cut points and %d torn writes checked; the old state %d times, the new one %d times",
		updates, k, points, torn, sawOld, sawNew)
}
