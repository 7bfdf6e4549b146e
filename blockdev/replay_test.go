package blockdev

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// replayWorkload exercises every logged kind, including a shrink that
// discards written data and a regrow that must read as zeros.
func replayWorkload(bs int64) []step {
	return []step{
		wr(0, pattern(int(bs), 81)),
		wr(bs+7, pattern(int(3*bs), 82)),
		syncStep(),
		resizeStep(12 * bs),
		wr(10*bs, pattern(int(2*bs), 83)),
		trimStep(bs, 2*bs),
		syncStep(),
		wr(2*bs-100, pattern(300, 84)),
		resizeStep(9*bs + 1),
		wr(9*bs-10, pattern(11, 85)),
		resizeStep(11 * bs),
		syncStep(),
		wr(5*bs, pattern(int(5*bs), 86)),
	}
}

func TestLogReplay(t *testing.T) {
	const bs = 512
	init := pattern(8*bs, 80)
	unders := []struct {
		name string
		open func(t *testing.T) Device
	}{
		{"Memory", func(t *testing.T) Device { return NewMemoryFrom(init, bs) }},
		{"File", func(t *testing.T) Device { return openTestFile(t, init, bs, false) }},
	}
	steps := replayWorkload(bs)
	for _, u := range unders {
		t.Run(u.name, func(t *testing.T) {
			under := u.open(t)
			f := NewFaulty(under)
			for i, err := range runSteps(f, steps) {
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
			}
			log := f.Log()
			replayed := NewMemoryFrom(init, bs)
			if err := Replay(replayed, log); err != nil {
				t.Fatal(err)
			}
			checkImage(t, under, replayed.Bytes())

			// Every prefix of the log is the image a power cut leaves.
			for k := 0; k <= f.Writes(); k++ {
				cut := NewFaulty(u.open(t))
				cut.CutAfter(k)
				runSteps(cut, steps)
				prefix := NewMemoryFrom(init, bs)
				if err := Replay(prefix, logThroughWrite(log, k)); err != nil {
					t.Fatal(err)
				}
				if ok, err := Equal(cut, prefix); !ok || err != nil {
					t.Fatalf("CutAfter(%d) image differs from replayed prefix (%v)", k, err)
				}
			}
		})
	}
}

// logThroughWrite returns the ops up to and including the k-th write.
func logThroughWrite(ops []LoggedOp, k int) []LoggedOp {
	if k == 0 {
		return nil
	}
	for i, op := range ops {
		if op.Kind == OpWrite {
			if k--; k == 0 {
				return ops[:i+1]
			}
		}
	}
	return ops
}

// TestReplayTornMatchesLive compares every tear of every write of a
// workload, both orders, with a live TearWrite run.
func TestReplayTornMatchesLive(t *testing.T) {
	const bs = 512
	init := pattern(8*bs, 90)
	steps := []step{
		wr(0, pattern(bs, 91)),
		syncStep(),
		wr(bs, pattern(2*bs, 92)),
		trimStep(3*bs, bs),
		wr(bs/2, pattern(300, 93)), // length not a multiple of 128
		syncStep(),
		wr(5*bs+64, pattern(700, 94)), // unaligned start
	}
	ref := NewFaulty(NewMemoryFrom(init, bs))
	runSteps(ref, steps)
	log := ref.Log()
	runs := 0
	for k := 1; k <= ref.Writes(); k++ {
		op := logThroughWrite(log, k)[len(logThroughWrite(log, k))-1]
		for _, pivot := range TearPivots(op.Off, len(op.Data), bs) {
			for _, newFirst := range []bool{true, false} {
				live := NewMemoryFrom(init, bs)
				f := NewFaulty(live)
				f.TearWrite(k, pivot, newFirst)
				runSteps(f, steps)
				replayed := NewMemoryFrom(init, bs)
				if err := ReplayTorn(replayed, log, k, pivot, newFirst); err != nil {
					t.Fatalf("ReplayTorn(%d, %d, %v): %v", k, pivot, newFirst, err)
				}
				checkImage(t, live, replayed.Bytes())
				runs++
			}
		}
	}
	if runs < 40 {
		t.Fatalf("only %d tear combinations exercised", runs)
	}
}

func TestReplayErrors(t *testing.T) {
	log := []LoggedOp{
		{Kind: OpWrite, Off: 0, Len: 300, Data: pattern(300, 1), Seq: 1},
		{Kind: OpSync},
		{Kind: OpWrite, Off: 512, Len: 512, Data: pattern(512, 2), Seq: 2},
	}
	for _, tc := range []struct {
		name  string
		k     int
		pivot int
		want  error
	}{
		{"k=0", 0, 0, ErrOutOfRange},
		{"k beyond log", 3, 0, ErrOutOfRange},
		{"pivot beyond write", 1, 384, ErrOutOfRange},
		{"unaligned pivot", 2, 100, ErrOutOfRange},
		{"negative pivot", 2, -128, ErrOutOfRange},
		{"write beyond device", 2, 0, ErrOutOfRange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size := int64(1024)
			if tc.name == "write beyond device" {
				size = 600
			}
			err := ReplayTorn(NewMemory(size, 512), log, tc.k, tc.pivot, true)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ReplayTorn = %v; want %v", err, tc.want)
			}
		})
	}
	if err := Replay(plainDevice{NewMemory(1024, 512)}, []LoggedOp{{Kind: OpResize, Len: 10}}); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Replay of a resize onto a non-Resizer = %v", err)
	}
	if err := Replay(NewMemory(1024, 512), []LoggedOp{{Kind: 99}}); err == nil {
		t.Error("Replay accepted an unknown op kind")
	}
	if err := Replay(NewMemory(100, 512), log); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("Replay past the device = %v", err)
	}
}

func TestTearPivots(t *testing.T) {
	for _, tc := range []struct {
		off   int64
		n, bs int
		want  []int
	}{
		{0, 512, 512, []int{0, 128, 256, 384, 512}},
		{100, 300, 512, []int{0, 128, 256}},
		{4096, 0, 4096, []int{0}},
		{0, 127, 512, []int{0}},
		{3968, 256, 4096, []int{0, 128, 256}}, // straddles a boundary
		{0, 512, 500, nil},
		{0, 512, 256, nil},
		{0, -1, 512, nil},
		{-512, 512, 512, nil},
	} {
		got := TearPivots(tc.off, tc.n, tc.bs)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("TearPivots(%d, %d, %d) = %v; want %v", tc.off, tc.n, tc.bs, got, tc.want)
		}
	}
	if got := len(TearPivots(0, 1<<16, 4096)); got != 1<<16/TearGranularity+1 {
		t.Errorf("64 KiB write has %d pivots", got)
	}
}

// fuzzSteps turns fuzz input into a workload on a device of size bytes:
// each 4 input bytes pick a kind, an offset and a length.
func fuzzSteps(script []byte, size int64) []step {
	var steps []step
	for i := 0; i+4 <= len(script) && len(steps) < 64; i += 4 {
		b := script[i : i+4]
		off := int64(int(b[1])|int(b[2])<<8) % size
		switch b[0] % 8 {
		case 0:
			steps = append(steps, syncStep())
		case 1:
			steps = append(steps, trimStep(off, min(int64(b[3])*16, size-off)))
		default:
			n := min(int64(b[3])*24+1, size-off)
			steps = append(steps, wr(off, pattern(int(n), i)))
		}
	}
	return steps
}

// FuzzTearReplay checks that ReplayTorn of an unarmed run's log equals a
// live TearWrite run for random workloads, writes and pivots, and that the
// torn run's own log replays to its image.
func FuzzTearReplay(f *testing.F) {
	f.Add([]byte{2, 0, 0, 20, 0, 0, 0, 0, 3, 0, 2, 40}, uint8(0), uint16(3), true)
	f.Add([]byte{2, 0, 0, 20, 0, 0, 0, 0, 3, 0, 2, 40}, uint8(1), uint16(7), false)
	f.Add([]byte{5, 100, 1, 255, 1, 0, 4, 64, 6, 7, 3, 200, 0, 0, 0, 0, 7, 0, 0, 85}, uint8(2), uint16(11), true)
	f.Add([]byte{4, 255, 15, 9, 2, 1, 0, 170}, uint8(9), uint16(0), false)
	f.Fuzz(func(t *testing.T, script []byte, k uint8, pivotIdx uint16, newFirst bool) {
		const bs, size = 512, 8 * 512
		init := pattern(size, 99)
		steps := fuzzSteps(script, size)

		ref := NewFaulty(NewMemoryFrom(init, bs))
		for i, err := range runSteps(ref, steps) {
			if err != nil {
				t.Fatalf("unarmed step %d: %v", i, err)
			}
		}
		if ref.Writes() == 0 {
			return
		}
		log := ref.Log()
		n := int(k)%ref.Writes() + 1
		prefix := logThroughWrite(log, n)
		op := prefix[len(prefix)-1]
		pivots := TearPivots(op.Off, len(op.Data), bs)
		pivot := pivots[int(pivotIdx)%len(pivots)]

		live := NewMemoryFrom(init, bs)
		lf := NewFaulty(live)
		lf.TearWrite(n, pivot, newFirst)
		writes := 0
		for i, err := range runSteps(lf, steps) {
			if steps[i].kind == OpWrite {
				writes++
			}
			before := writes < n // the torn write and everything after it fail
			if before != (err == nil) || (err != nil && !errors.Is(err, ErrPowerCut)) {
				t.Fatalf("step %d (%s, %d writes in, tear at %d) = %v", i, steps[i].kind, writes, n, err)
			}
		}

		replayed := NewMemoryFrom(init, bs)
		if err := ReplayTorn(replayed, log, n, pivot, newFirst); err != nil {
			t.Fatalf("ReplayTorn(%d, %d, %v): %v", n, pivot, newFirst, err)
		}
		checkImage(t, live, replayed.Bytes())

		again := NewMemoryFrom(init, bs)
		if err := Replay(again, lf.Log()); err != nil {
			t.Fatal(err)
		}
		checkImage(t, live, again.Bytes())
	})
}

// TestReplayOntoFile rebuilds a torn image on a File, the way a harness
// would to hand it to an external tool.
func TestReplayOntoFile(t *testing.T) {
	const bs = 512
	init := pattern(4*bs, 95)
	ref := NewFaulty(NewMemoryFrom(init, bs))
	runSteps(ref, []step{wr(0, pattern(2*bs, 96)), syncStep(), wr(bs, pattern(bs, 97))})
	path := filepath.Join(t.TempDir(), "torn.img")
	if err := os.WriteFile(path, init, 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := OpenFile(path, &FileOptions{BlockSize: bs})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := ReplayTorn(d, ref.Log(), 2, 256, true); err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), init...)
	copy(want, pattern(2*bs, 96))
	copy(want[bs:bs+256], pattern(bs, 97))
	checkImage(t, d, want)
}
