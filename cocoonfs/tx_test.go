package cocoonfs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"math/rand/v2"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
)

var txKey = []byte("transaction test key, 32 bytes!!")

func mkfsMem(t testing.TB, size int64, opts *MkfsOptions) *blockdev.Memory {
	t.Helper()
	dev := blockdev.NewMemory(size, 512)
	if _, err := Mkfs(dev, txKey, opts); err != nil {
		t.Fatal(err)
	}
	return dev
}

func openRW(t testing.TB, dev blockdev.Device) *FS {
	t.Helper()
	f, err := Open(dev, txKey, &Options{ReadWrite: true})
	if err != nil {
		t.Fatalf("Open read-write: %v", err)
	}
	return f
}

// checkState verifies the image and compares its files with want.
func checkState(t testing.TB, f *FS, want map[uint64][]byte) {
	t.Helper()
	if rep, err := f.Verify(t.Context(), nil); err != nil {
		t.Fatalf("Verify: %v\n%v", err, rep.Problems)
	}
	n := 0
	for ino, err := range f.Inodes() {
		if err != nil {
			t.Fatal(err)
		}
		n++
		got, err := f.ReadFile(ino.Ino)
		if err != nil {
			t.Fatalf("ReadFile(%d): %v", ino.Ino, err)
		}
		if w, ok := want[ino.Ino]; !ok || !bytes.Equal(got, w) {
			t.Fatalf("inode %d: got %d bytes, want %d (present %v)", ino.Ino, len(got), len(w), ok)
		}
	}
	if n != len(want) {
		t.Fatalf("%d inodes, want %d", n, len(want))
	}
}

func TestTxBasic(t *testing.T) {
	dev := mkfsMem(t, 4<<20, &MkfsOptions{Files: map[uint64][]byte{100: []byte("old")}})
	f := openRW(t, dev)
	counter := f.UpdateCounter()
	root := f.RootDigest()
	tx, err := f.Begin()
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1000)
	for _, op := range []error{
		tx.WriteFile(42, []byte("hello"), 0x5),
		tx.WriteFile(43, big, 0),
		tx.WriteFile(100, []byte("new"), 0),
	} {
		if op != nil {
			t.Fatal(op)
		}
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	want := map[uint64][]byte{42: []byte("hello"), 43: big, 100: []byte("new")}
	checkState(t, f, want)
	if f.UpdateCounter().Cmp(counter) <= 0 || bytes.Equal(root, f.RootDigest()) {
		t.Errorf("counter %v → %v, root changed %v", counter, f.UpdateCounter(), !bytes.Equal(root, f.RootDigest()))
	}
	st, _ := f.Stat(42)
	if st.Flags != 5 {
		t.Errorf("flags %d", st.Flags)
	}
	// Reopen from the bytes alone.
	checkState(t, openRW(t, blockdev.NewMemoryFrom(dev.Bytes(), 512)), want)

	tx, _ = f.Begin()
	if err := tx.Remove(100); err != nil {
		t.Fatal(err)
	}
	if err := tx.Remove(7777); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Remove(missing) = %v", err)
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	delete(want, 100)
	checkState(t, f, want)
	checkState(t, openRW(t, blockdev.NewMemoryFrom(dev.Bytes(), 512)), want)
}

// TestTxRandom runs many transactions of random creates, overwrites and
// removes (crossing the direct/indirect extent boundary) and checks the
// whole image after each.
func TestTxRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	dev := mkfsMem(t, 8<<20, nil)
	f := openRW(t, dev)
	want := map[uint64][]byte{}
	for i := 0; i < 60; i++ {
		tx, _ := f.Begin()
		staged := map[uint64][]byte{}
		for k := 0; k < 1+r.IntN(4); k++ {
			ino := FirstUserInode + uint64(r.IntN(40))
			_, exists := want[ino]
			if _, s := staged[ino]; exists && !s && r.IntN(3) == 0 {
				if err := tx.Remove(ino); err != nil {
					t.Fatal(err)
				}
				staged[ino] = nil
				continue
			}
			sizes := []int{0, 1, 100, 8000, 8200, 20000}
			data := make([]byte, sizes[r.IntN(len(sizes))]+r.IntN(50))
			for j := range data {
				data[j] = byte(r.Uint32())
			}
			if err := tx.WriteFile(ino, data, 0); err != nil {
				t.Fatal(err)
			}
			staged[ino] = data
		}
		if err := tx.Commit(t.Context()); err != nil {
			t.Fatalf("tx %d: %v", i, err)
		}
		for ino, d := range staged {
			if d == nil {
				delete(want, ino)
			} else {
				want[ino] = d
			}
		}
		checkState(t, f, want)
	}
	checkState(t, openRW(t, blockdev.NewMemoryFrom(dev.Bytes(), 512)), want)
}

// TestTxConcurrentReaders: readers running while transactions commit see a
// committed state every time (under -race).
func TestTxConcurrentReaders(t *testing.T) {
	dev := mkfsMem(t, 4<<20, &MkfsOptions{Files: map[uint64][]byte{50: []byte("v0")}})
	f := openRW(t, dev)
	done := make(chan struct{})
	errs := make(chan error, 4)
	for g := 0; g < 3; g++ {
		go func() {
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				data, err := f.ReadFile(50)
				if err != nil || !bytes.HasPrefix(data, []byte("v")) {
					errs <- fmt.Errorf("reader saw %q, %v", data, err)
					return
				}
				for _, err := range f.Inodes() {
					if err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	for i := 1; i <= 20; i++ {
		tx, _ := f.Begin()
		tx.WriteFile(50, []byte(fmt.Sprintf("v%d", i)), 0)
		tx.WriteFile(uint64(60+i), bytes.Repeat([]byte{byte(i)}, 5000), 0)
		if err := tx.Commit(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	for g := 0; g < 3; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestTxNoSpace: a file that does not fit fails with ErrNoSpace, as it is
// written or at the latest at the commit; the committed state is unchanged
// (only free space was written) and still valid, and the next transaction
// works.
func TestTxNoSpace(t *testing.T) {
	dev := mkfsMem(t, 1<<20, &MkfsOptions{Files: map[uint64][]byte{20: []byte("keep")}})
	f := openRW(t, dev)
	root, counter := f.RootDigest(), f.UpdateCounter()
	for _, size := range []int{2 << 20, 1000 << 10} {
		tx, _ := f.Begin()
		err := tx.WriteFile(21, make([]byte, size), 0)
		if err == nil {
			if err = tx.WriteFile(22, []byte("small"), 0); err == nil {
				err = tx.Commit(t.Context())
			}
		}
		tx.Rollback()
		if !errors.Is(err, ErrNoSpace) {
			t.Fatalf("%d bytes: %v, want ErrNoSpace", size, err)
		}
		g, err := Open(dev, txKey, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(g.RootDigest(), root) || g.UpdateCounter().Cmp(counter) != 0 {
			t.Fatalf("%d bytes: a failed transaction changed the committed state", size)
		}
	}
	checkState(t, f, map[uint64][]byte{20: []byte("keep")})
	tx, _ := f.Begin()
	tx.WriteFile(22, []byte("small"), 0)
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkState(t, f, map[uint64][]byte{20: []byte("keep"), 22: []byte("small")})
}

func TestTxBadInput(t *testing.T) {
	dev := mkfsMem(t, 1<<20, nil)
	ro, err := Open(dev, txKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ro.Begin(); !errors.Is(err, ErrReadOnlyFS) {
		t.Errorf("Begin on a read-only open: %v", err)
	}
	f := openRW(t, dev)
	tx, _ := f.Begin()
	for _, c := range []struct {
		err  error
		want error
	}{
		{tx.WriteFile(0, nil, 0), fs.ErrInvalid},
		{tx.WriteFile(3, nil, 0), fs.ErrInvalid},
		{tx.WriteFile(15, nil, 0), fs.ErrInvalid},
		{tx.WriteFile(16, nil, 0x100), fs.ErrInvalid},
		{tx.Remove(1), fs.ErrInvalid},
		{tx.Remove(99), fs.ErrNotExist},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("got %v, want %v", c.err, c.want)
		}
	}
	tx.Rollback()
	if err := tx.Commit(t.Context()); !errors.Is(err, ErrTxDone) {
		t.Errorf("Commit after Rollback: %v", err)
	}
	// The writer lock was released: a new transaction can begin.
	tx2, _ := f.Begin()
	tx2.Rollback()
	roDev := blockdev.NewMemoryFrom(dev.Bytes(), 512)
	roDev.SetReadOnly(true)
	if _, err := Open(roDev, txKey, &Options{ReadWrite: true}); !errors.Is(err, blockdev.ErrReadOnly) {
		t.Errorf("read-write open of a read-only device: %v", err)
	}
}

func TestRollbackGuard(t *testing.T) {
	dev := mkfsMem(t, 1<<20, nil)
	f := openRW(t, dev)
	old := blockdev.NewMemoryFrom(dev.Bytes(), 512) // the image before the update
	root0, c0 := f.RootDigest(), f.UpdateCounter()
	tx, _ := f.Begin()
	tx.WriteFile(30, []byte("x"), 0)
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	root1, c1 := f.RootDigest(), f.UpdateCounter()
	if _, err := Open(dev, txKey, &Options{ExpectRoot: root1, MinCounter: c1}); err != nil {
		t.Errorf("current state refused: %v", err)
	}
	if _, err := Open(old, txKey, &Options{ExpectRoot: root1}); !errors.Is(err, ErrRollback) {
		t.Errorf("rolled-back image with ExpectRoot: %v", err)
	}
	if _, err := Open(old, txKey, &Options{MinCounter: c1}); !errors.Is(err, ErrRollback) {
		t.Errorf("rolled-back image with MinCounter: %v", err)
	}
	if _, err := Open(old, txKey, &Options{ExpectRoot: root0, MinCounter: c0}); err != nil {
		t.Errorf("old image with its own state: %v", err)
	}
}

func TestCounterBefore(t *testing.T) {
	max := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 128), big.NewInt(1))
	half := new(big.Int).Lsh(big.NewInt(1), 127)
	for _, c := range []struct {
		a, b *big.Int
		want bool
	}{
		{big.NewInt(5), big.NewInt(6), true},
		{big.NewInt(6), big.NewInt(6), false},
		{big.NewInt(7), big.NewInt(6), false},
		{max, big.NewInt(0), true},  // wrapped: 2^128-1 precedes 0
		{big.NewInt(0), max, false}, // 0 follows 2^128-1
		{big.NewInt(0), half, true}, // exactly 2^127 before
		{big.NewInt(0), new(big.Int).Add(half, big.NewInt(1)), false},
	} {
		if got := CounterBefore(c.a, c.b); got != c.want {
			t.Errorf("CounterBefore(%v, %v) = %v", c.a, c.b, got)
		}
	}
}

// TestTxTrim: with Options.Trim a commit discards the IO blocks it frees
// (a memory device zero-fills them), its staging copies and its log tail;
// the image still verifies, also after a replay of a trim-carrying journal.
func TestTxTrim(t *testing.T) {
	dev := mkfsMem(t, 2<<20, nil)
	f, err := Open(dev, txKey, &Options{ReadWrite: true, Trim: true})
	if err != nil {
		t.Fatal(err)
	}
	tx, _ := f.Begin()
	tx.WriteFile(50, bytes.Repeat([]byte{0xee}, 100000), 0)
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	e, _, _ := f.index.lookup(50)
	data, _, _ := f.entryExtents(e)
	tx, _ = f.Begin()
	tx.Remove(50)
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkState(t, f, map[uint64][]byte{})
	ab := f.layout.AllocBlockSize()
	raw := dev.Bytes()
	zeroIO := 0
	for _, x := range data {
		for a := x.Start; a < x.Start+x.Len; a += f.layout.IOBlockSize() / ab {
			if bytes.Equal(raw[a*ab:(a*ab)+f.layout.IOBlockSize()], make([]byte, f.layout.IOBlockSize())) {
				zeroIO++
			}
		}
	}
	if zeroIO == 0 {
		t.Fatal("the freed file's blocks were not trimmed")
	}
	t.Logf("%d IO blocks of the removed file read as trimmed", zeroIO)
}

// TestTxFailurePastCommitPoint: the device fails right after the commit
// point of a live commit. Commit reports it, the FS refuses further use
// instead of serving a stale state, and a reopen replays to the new state.
func TestTxFailurePastCommitPoint(t *testing.T) {
	base := mkfsMem(t, 1<<20, &MkfsOptions{Files: map[uint64][]byte{20: []byte("old")}}).Bytes()
	// A dry run finds the write that completes the journal head.
	probe := blockdev.NewFaulty(blockdev.NewMemoryFrom(base, 512))
	pf := openRW(t, probe)
	tx, _ := pf.Begin()
	tx.WriteFile(20, []byte("new"), 0)
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	headOff := int64(pf.journalHead.Start * pf.layout.AllocBlockSize())
	commitWrite := 0
	for _, op := range probe.Log() {
		if op.Kind == blockdev.OpWrite && op.Off == headOff && op.Data[0] == 'C' {
			commitWrite = op.Seq
		}
	}
	mem := blockdev.NewMemoryFrom(base, 512)
	dev := blockdev.NewFaulty(mem)
	f := openRW(t, dev)
	dev.CutAfter(dev.Writes() + commitWrite)
	tx, _ = f.Begin()
	tx.WriteFile(20, []byte("new"), 0)
	if err := tx.Commit(t.Context()); err == nil {
		t.Fatal("Commit succeeded on a failing device")
	}
	if _, err := f.ReadFile(20); err == nil {
		t.Fatal("a failed FS still serves reads")
	}
	if _, err := f.Begin(); err == nil {
		t.Fatal("a failed FS still begins transactions")
	}
	g := openRW(t, blockdev.NewMemoryFrom(mem.Bytes(), 512))
	checkState(t, g, map[uint64][]byte{20: []byte("new")})
}

// TestSpaceKeptByCommits: the space figures, counted once, follow every
// commit (writes, overwrites, removals, staged files, aux changes) and equal
// a fresh count of the image.
func TestSpaceKeptByCommits(t *testing.T) {
	dev := mkfsMem(t, 4<<20, nil)
	f := openRW(t, dev)
	if _, err := f.Space(); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 40; i++ {
		tx, _ := f.Begin()
		ino := uint64(16 + r.IntN(12))
		switch r.IntN(4) {
		case 0:
			if err := tx.Remove(ino); err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Fatal(err)
			}
		case 1:
			m, _ := f.AuxMetadata()
			m.Add([16]byte{byte(i)}, make([]byte, r.IntN(2000)))
			if err := tx.SetAuxMetadata(m); err != nil {
				t.Fatal(err)
			}
		default:
			if err := tx.WriteFile(ino, make([]byte, r.IntN(200000)), 0); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(t.Context()); err != nil {
			t.Fatal(err)
		}
		kept, err := f.Space()
		if err != nil {
			t.Fatal(err)
		}
		g, err := Open(blockdev.NewMemoryFrom(dev.Bytes(), 512), txKey, nil)
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := g.Space()
		if err != nil {
			t.Fatal(err)
		}
		if kept != fresh {
			t.Fatalf("after transaction %d: kept %+v, counted %+v", i, kept, fresh)
		}
	}
}
