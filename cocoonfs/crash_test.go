package cocoonfs

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
)

// crashWorkload runs n random transactions on dev through a logging fault
// device and returns the log, the states (files) before and after each
// transaction, and for each write (1-based) the transaction it belongs to.
// crashState is what a transaction leaves: the files and the aux metadata
// (encoded).
type crashState struct {
	files map[uint64][]byte
	aux   []byte
}

func crashWorkload(t *testing.T, base []byte, n int, seed uint64, opts Options) ([]blockdev.LoggedOp, []crashState, []int) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, seed+1))
	faulty := blockdev.NewFaulty(blockdev.NewMemoryFrom(base, 512))
	opts.ReadWrite = true
	f, err := Open(faulty, txKey, &opts)
	if err != nil {
		t.Fatal(err)
	}
	m0, err := f.AuxMetadata()
	if err != nil {
		t.Fatal(err)
	}
	aux0, _ := encodeAux(m0)
	states := []crashState{{files: map[uint64][]byte{}, aux: aux0}}
	var txOf []int // txOf[k-1] = transaction of write k
	sizes := []int{0, 1, 200, 8000, 8100, 8200, 30000}
	for i := 0; i < n; i++ {
		prev := states[len(states)-1]
		cur := maps.Clone(prev.files)
		curAux := prev.aux
		// File contents are written as the transaction goes, so its
		// writes start at Begin.
		before := faulty.Writes()
		tx, err := f.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if i%7 == 3 {
			// An aux metadata edit rides along: add an entry or drop one.
			m, err := f.AuxMetadata()
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Entries) > 2 {
				m.Remove(m.Entries[0].UUID, 0)
			} else {
				m.Add([16]byte{byte(i)}, bytes.Repeat([]byte{byte(i)}, 100+r.IntN(3000)))
			}
			if err := tx.SetAuxMetadata(m); err != nil {
				t.Fatal(err)
			}
			if curAux, err = encodeAux(m); err != nil {
				t.Fatal(err)
			}
		}
		ops := 1 + r.IntN(3)
		if i%10 == 9 {
			ops = 6 // a larger multi-file transaction
		}
		for k := 0; k < ops; k++ {
			ino := FirstUserInode + uint64(r.IntN(24))
			if _, exists := cur[ino]; exists && r.IntN(3) == 0 {
				if err := tx.Remove(ino); err != nil {
					t.Fatal(err)
				}
				delete(cur, ino)
				continue
			}
			data := make([]byte, sizes[r.IntN(len(sizes))]+r.IntN(64))
			for j := range data {
				data[j] = byte(r.Uint32())
			}
			if err := tx.WriteFile(ino, data, uint32(r.IntN(256))); err != nil {
				t.Fatal(err)
			}
			cur[ino] = data
		}
		if err := tx.Commit(t.Context()); err != nil {
			t.Fatalf("transaction %d: %v", i, err)
		}
		for w := before; w < faulty.Writes(); w++ {
			txOf = append(txOf, i)
		}
		states = append(states, crashState{files: cur, aux: curAux})
	}
	return faulty.Log(), states, txOf
}

// sameState reports whether the opened image holds exactly want's files
// and aux metadata.
func sameState(f *FS, want crashState) (bool, error) {
	m, err := f.AuxMetadata()
	if err != nil {
		return false, err
	}
	if aux, err := encodeAux(m); err != nil || !bytes.Equal(aux, want.aux) {
		return false, err
	}
	return sameFiles(f, want.files)
}

// sameFiles reports whether the opened image holds exactly want.
func sameFiles(f *FS, want map[uint64][]byte) (bool, error) {
	got := map[uint64][]byte{}
	for ino, err := range f.Inodes() {
		if err != nil {
			return false, err
		}
		data, err := f.ReadFile(ino.Ino)
		if err != nil {
			return false, err
		}
		got[ino.Ino] = data
	}
	return maps.EqualFunc(got, want, bytes.Equal), nil
}

// TestCrashHarness cuts the power after every write of a 100-transaction
// workload (creates, overwrites crossing the direct/indirect boundary,
// removes, multi-file transactions, aux metadata edits), and tears every
// write at 128-byte pivots, old-then-new and new-then-old: the image must
// then open read-write (replaying a pending journal), pass Verify, and hold
// exactly the files and aux metadata of the last committed transaction or
// of the one in flight — never anything else.
func TestCrashHarness(t *testing.T) {
	if raceDetector {
		t.Skip("single-threaded and exhaustive: make test runs it without -race (go test -run TestCrashHarness ./cocoonfs)")
	}
	t.Run("plain", func(t *testing.T) { crashHarness(t, 100, Options{}) })
	// With disguised staging copies, replays must undisguise them.
	t.Run("disguised", func(t *testing.T) { crashHarness(t, 30, Options{DisguiseStagingCopies: true}) })
	// Journals with a trim script: replays trim after invalidating.
	t.Run("trimmed", func(t *testing.T) { crashHarness(t, 20, Options{Trim: true}) })
}

func crashHarness(t *testing.T, transactions int, opts Options) {
	base := mkfsMem(t, 1<<20, nil).Bytes()
	log, states, txOf := crashWorkload(t, base, transactions, 11, opts)
	checkCrashLog(t, base, log, states, txOf)
}

// checkCrashLog cuts the power after each write of log (applied to base),
// and tears each write at 128-byte pivots: every image must open
// read-write, verify, and hold the state before or after the transaction
// the write belongs to (txOf).
func checkCrashLog(t *testing.T, base []byte, log []blockdev.LoggedOp, states []crashState, txOf []int) {
	tornPerWrite := 2
	if longTests {
		tornPerWrite = 8
	}
	cur := bytes.Clone(base)
	var points, torn, sawOld, sawNew int
	check := func(k int, img []byte, what string) {
		t.Helper()
		f, err := Open(blockdev.NewMemoryFrom(img, 512), txKey, &Options{ReadWrite: true})
		if err != nil {
			t.Fatalf("%s: reopen: %v", what, err)
		}
		if rep, err := f.Verify(t.Context(), nil); err != nil {
			t.Fatalf("%s: Verify: %v\n%v", what, err, rep.Problems)
		}
		i := txOf[k-1]
		if ok, err := sameState(f, states[i]); err != nil {
			t.Fatalf("%s: %v", what, err)
		} else if ok {
			sawOld++
			return
		}
		if ok, err := sameState(f, states[i+1]); err != nil || !ok {
			t.Fatalf("%s: files match neither the state before nor after transaction %d (%v)", what, i, err)
		}
		sawNew++
	}
	k := 0
	for _, op := range log {
		if op.Kind == blockdev.OpTrim {
			// Trims follow a journal's invalidation: the state is final and
			// trimmed blocks are free, so zeros are as good as anything.
			clear(cur[op.Off : op.Off+op.Len])
			continue
		}
		if op.Kind != blockdev.OpWrite {
			continue
		}
		k++
		// Torn k-th write: some 128-byte-aligned prefix (or suffix) new.
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
	t.Logf("%d transactions, %d writes: %d power-cut points and %d torn writes checked; recovered to the old state %d times, to the new one %d times",
		len(states)-1, k, points, torn, sawOld, sawNew)
}

// TestCrashLargeFiles runs the crash checks over transactions whose files
// span several writer segments (so several extents, an extents list in
// chained extents, digests of whole data blocks computed as written) and
// over staged files adopted at commit: create, overwrite with another
// size, adopt a staged file, remove.
func TestCrashLargeFiles(t *testing.T) {
	if raceDetector {
		t.Skip("single-threaded and exhaustive: make test runs it without -race (go test -run TestCrashLargeFiles ./cocoonfs)")
	}
	// 4 KiB IO blocks keep the tree small (128 entries a node), so the
	// crash points are the segments, the journal and a few nodes.
	dev := blockdev.NewMemory(8<<20, 4096)
	if _, err := Mkfs(dev, txKey, &MkfsOptions{IOBlock: 4096, NoRandomizeUnallocated: true}); err != nil {
		t.Fatal(err)
	}
	base := dev.Bytes()
	faulty := blockdev.NewFaulty(blockdev.NewMemoryFrom(base, 4096))
	f, err := Open(faulty, txKey, &Options{ReadWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	m0, _ := f.AuxMetadata()
	aux0, _ := encodeAux(m0)
	states := []crashState{{files: map[uint64][]byte{}, aux: aux0}}
	var txOf []int
	step := func(change func(tx *Tx) map[uint64][]byte) {
		i := len(states) - 1
		before := faulty.Writes()
		tx, err := f.Begin()
		if err != nil {
			t.Fatal(err)
		}
		files := change(tx)
		if err := tx.Commit(t.Context()); err != nil {
			t.Fatal(err)
		}
		for w := before; w < faulty.Writes(); w++ {
			txOf = append(txOf, i)
		}
		states = append(states, crashState{files: files, aux: aux0})
	}
	big, other := patterned(2<<20+77, 1), patterned(5000, 2)
	step(func(tx *Tx) map[uint64][]byte {
		tx.WriteFile(20, big, 0)
		tx.WriteFile(21, other, 0)
		return map[uint64][]byte{20: big, 21: other}
	})
	smaller := patterned(1<<20+999, 3)
	step(func(tx *Tx) map[uint64][]byte {
		tx.WriteFile(20, smaller, 0)
		return map[uint64][]byte{20: smaller, 21: other}
	})
	staged := patterned(1<<20+4096*3+5, 4)
	before := faulty.Writes()
	w, err := f.Stage(22, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(staged)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for k := before; k < faulty.Writes(); k++ {
		txOf = append(txOf, len(states)-1) // staged writes belong to the adopting transaction
	}
	step(func(tx *Tx) map[uint64][]byte {
		if err := tx.Adopt(w); err != nil {
			t.Fatal(err)
		}
		return map[uint64][]byte{20: smaller, 21: other, 22: staged}
	})
	step(func(tx *Tx) map[uint64][]byte {
		tx.Remove(20)
		return map[uint64][]byte{21: other, 22: staged}
	})
	checkCrashLog(t, base, faulty.Log(), states, txOf)
}
