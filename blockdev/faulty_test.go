package blockdev

import (
	"bytes"
	"errors"
	"strconv"
	"sync"
	"testing"
)

// plainDevice hides every optional capability of the device it embeds.
type plainDevice struct{ Device }

// cutWorkload mixes overlapping writes with syncs and a trim, so dropping
// or reordering any operation changes the image.
func cutWorkload(bs int64) []step {
	return []step{
		wr(0, pattern(int(bs), 21)), // write 1
		syncStep(),
		wr(bs, pattern(int(2*bs), 22)), // write 2
		wr(bs/2, pattern(int(bs), 23)), // write 3, overlapping 1 and 2
		syncStep(),
		trimStep(6*bs, bs),
		wr(7*bs, pattern(int(bs), 24)), // write 4
		syncStep(),
		wr(3*bs+5, pattern(100, 25)), // write 5, unaligned
	}
}

// throughWrite returns the steps up to and including the k-th write.
func throughWrite(steps []step, k int) []step {
	if k == 0 {
		return nil
	}
	for i, s := range steps {
		if s.kind == OpWrite {
			if k--; k == 0 {
				return steps[:i+1]
			}
		}
	}
	return steps
}

func TestCutAfter(t *testing.T) {
	const bs = 512
	init := pattern(8*bs, 20)
	steps := cutWorkload(bs)
	const total = 5
	for n := 0; n <= total+1; n++ {
		t.Run("n="+strconv.Itoa(n), func(t *testing.T) {
			m := NewMemoryFrom(init, bs)
			f := NewFaulty(m)
			f.CutAfter(n)
			errs := runSteps(f, steps)

			want := NewMemoryFrom(init, bs)
			runSteps(want, throughWrite(steps, n))
			checkImage(t, m, want.Bytes())

			writes := 0 // writes issued before or at this step
			for i, s := range steps {
				if s.kind == OpWrite {
					writes++
				}
				// A write survives if it is among the first n; anything
				// else survives only if issued before write n completed.
				ok := writes <= n
				if s.kind != OpWrite {
					ok = writes < n
				}
				switch {
				case ok && errs[i] != nil:
					t.Errorf("step %d (%s after %d writes) failed: %v", i, s.kind, writes, errs[i])
				case !ok && !errors.Is(errs[i], ErrPowerCut):
					t.Errorf("step %d (%s after %d writes) = %v; want ErrPowerCut", i, s.kind, writes, errs[i])
				}
			}
			if f.Writes() != total {
				t.Errorf("Writes = %d; want %d (refused writes count too)", f.Writes(), total)
			}
			if got, want := f.PowerCut(), n <= total; got != want {
				t.Errorf("PowerCut = %v; want %v", got, want)
			}
			logged := 0
			for _, op := range f.Log() {
				if op.Kind == OpWrite {
					logged++
					if op.Seq != logged {
						t.Errorf("logged write %d has Seq %d", logged, op.Seq)
					}
				}
			}
			if logged != min(n, total) {
				t.Errorf("log holds %d writes; want %d", logged, min(n, total))
			}
		})
	}
}

func TestCutAfterMidRun(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cutAfter int
		wantCut  bool // immediately, after 3 writes
		okWrites int  // how many of the following 3 writes go through
	}{
		{"passed", 2, true, 0},
		{"now", 3, true, 0},
		{"ahead", 5, false, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFaulty(NewMemory(4096, 512))
			for i := range 3 {
				if _, err := f.WriteAt([]byte{byte(i)}, int64(i)); err != nil {
					t.Fatal(err)
				}
			}
			f.CutAfter(tc.cutAfter)
			if f.PowerCut() != tc.wantCut {
				t.Fatalf("PowerCut = %v right after CutAfter(%d) at write 3", f.PowerCut(), tc.cutAfter)
			}
			for i := range 3 {
				_, err := f.WriteAt([]byte{0xee}, int64(10+i))
				if ok := i < tc.okWrites; ok != (err == nil) || (!ok && !errors.Is(err, ErrPowerCut)) {
					t.Errorf("write %d = %v", 4+i, err)
				}
			}
		})
	}
}

func TestTearWrite(t *testing.T) {
	const bs = 4096
	init := pattern(4*bs, 30)
	w1, w2, w3 := pattern(bs, 31), pattern(bs, 32), pattern(bs, 33)
	for _, newFirst := range []bool{true, false} {
		for _, pivot := range []int{0, 128, 1024, 2176, bs - 128, bs} {
			t.Run(tearName(pivot, newFirst), func(t *testing.T) {
				m := NewMemoryFrom(init, bs)
				f := NewFaulty(m)
				f.TearWrite(2, pivot, newFirst)
				if _, err := f.WriteAt(w1, 0); err != nil {
					t.Fatalf("write 1: %v", err)
				}
				n, err := f.WriteAt(w2, bs)
				wantN := 0
				if newFirst {
					wantN = pivot
				}
				if !errors.Is(err, ErrPowerCut) || n != wantN {
					t.Fatalf("torn write = %d, %v; want %d, ErrPowerCut", n, err, wantN)
				}
				if _, err := f.WriteAt(w3, 2*bs); !errors.Is(err, ErrPowerCut) {
					t.Errorf("write after the tear = %v; want ErrPowerCut", err)
				}
				if err := f.Sync(); !errors.Is(err, ErrPowerCut) {
					t.Errorf("Sync after the tear = %v; want ErrPowerCut", err)
				}

				want := append([]byte(nil), init...)
				copy(want, w1)
				for i := range bs {
					if (i < pivot) == newFirst {
						want[bs+i] = w2[i]
					}
				}
				checkImage(t, m, want)

				log := f.Log()
				if len(log) != 2 || !log[1].Torn || log[1].Seq != 2 || log[1].Off != bs || !bytes.Equal(log[1].Data, want[bs:2*bs]) {
					t.Errorf("log does not end with the torn write as it reached the medium: %+v", log)
				}
			})
		}
	}
}

func tearName(pivot int, newFirst bool) string {
	if newFirst {
		return "newFirst/pivot=" + strconv.Itoa(pivot)
	}
	return "oldFirst/pivot=" + strconv.Itoa(pivot)
}

func TestTearWriteEdgeCases(t *testing.T) {
	const size = 4096
	init := pattern(size, 40)
	data := pattern(300, 41)
	for _, tc := range []struct {
		name     string
		off      int64
		pivot    int
		newFirst bool
		want     []error // nil: torn as asked
	}{
		{"unaligned length, old first", 1000, 256, false, nil},
		{"unaligned length, new first", 1001, 256, true, nil},
		{"pivot beyond write", 1000, 384, true, []error{ErrOutOfRange, ErrPowerCut}},
		{"write beyond device", size - 100, 0, true, []error{ErrOutOfRange, ErrPowerCut}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMemoryFrom(init, 512)
			f := NewFaulty(m)
			f.TearWrite(1, tc.pivot, tc.newFirst)
			_, err := f.WriteAt(data, tc.off)
			want := append([]byte(nil), init...)
			if tc.want == nil {
				for i := range data {
					if (i < tc.pivot) == tc.newFirst {
						want[tc.off+int64(i)] = data[i]
					}
				}
				tc.want = []error{ErrPowerCut}
			}
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("torn write = %v; want it to wrap %v", err, w)
				}
			}
			checkImage(t, m, want)
			if !f.PowerCut() {
				t.Error("power still on after the torn write")
			}
		})
	}
}

func TestTearAndCutTogether(t *testing.T) {
	// An earlier cut preempts the tear; a later one is moot.
	for _, tc := range []struct {
		cut, tear int
		wantTorn  bool
		wantLog   int
	}{
		{1, 2, false, 1},
		{2, 2, true, 2},
		{3, 2, true, 2},
	} {
		f := NewFaulty(NewMemory(4096, 512))
		f.CutAfter(tc.cut)
		f.TearWrite(tc.tear, 128, true)
		for i := range 3 {
			f.WriteAt(pattern(512, i), int64(i)*512)
		}
		log := f.Log()
		torn := len(log) > 0 && log[len(log)-1].Torn
		if len(log) != tc.wantLog || torn != tc.wantTorn {
			t.Errorf("CutAfter(%d)+TearWrite(%d): %d logged, torn %v; want %d, %v",
				tc.cut, tc.tear, len(log), torn, tc.wantLog, tc.wantTorn)
		}
	}
}

func TestArmingPanics(t *testing.T) {
	f := NewFaulty(NewMemory(4096, 512))
	for _, tc := range []struct {
		name string
		fn   func()
	}{
		{"TearWrite(0)", func() { f.TearWrite(0, 0, true) }},
		{"negative pivot", func() { f.TearWrite(1, -128, true) }},
		{"unaligned pivot", func() { f.TearWrite(1, 100, false) }},
		{"CutAfter(-1)", func() { f.CutAfter(-1) }},
		{"FlipOnRead bit 8", func() { f.FlipOnRead(0, 8) }},
		{"FlipOnRead negative offset", func() { f.FlipOnRead(-1, 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			tc.fn()
		})
	}
}

func TestFlipBit(t *testing.T) {
	const size = 4096
	init := pattern(size, 50)
	m := NewMemoryFrom(init, 512)
	f := NewFaulty(m)
	f.CutAfter(0) // tampering does not need power
	want := append([]byte(nil), init...)
	for _, tc := range []struct {
		off  int64
		bit  uint
		want error
	}{
		{0, 0, nil},
		{0, 7, nil},
		{100, 5, nil},
		{size - 1, 3, nil},
		{100, 5, nil}, // flips back
		{0, 8, ErrOutOfRange},
		{size, 0, ErrOutOfRange},
		{-1, 0, ErrOutOfRange},
	} {
		err := f.FlipBit(tc.off, tc.bit)
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("FlipBit(%d, %d) = %v; want %v", tc.off, tc.bit, err, tc.want)
		}
		if tc.want == nil {
			want[tc.off] ^= 1 << tc.bit
		}
		checkImage(t, m, want)
	}
	if f.Writes() != 0 || len(f.Log()) != 0 {
		t.Errorf("bit flips were counted (%d) or logged (%d)", f.Writes(), len(f.Log()))
	}

	m.SetReadOnly(true)
	if err := f.FlipBit(0, 0); !errors.Is(err, ErrReadOnly) {
		t.Errorf("FlipBit on read-only medium = %v; want ErrReadOnly", err)
	}
}

func TestFlipOnRead(t *testing.T) {
	const size = 4096
	init := pattern(size, 60)
	m := NewMemoryFrom(init, 512)
	f := NewFaulty(m)
	f.FlipOnRead(10, 0)
	f.FlipOnRead(size-1, 7)
	f.FlipOnRead(20, 1)
	f.FlipOnRead(20, 1) // a second flip of the same bit cancels
	f.FlipOnRead(10, 2) // two bits of one byte
	f.FlipOnRead(size+10, 0)

	flipped := append([]byte(nil), init...)
	flipped[10] ^= 1 | 4
	flipped[size-1] ^= 0x80
	for _, tc := range []struct {
		off int64
		n   int
	}{
		{0, size}, {0, 10}, {10, 1}, {11, size - 12}, {size - 6, 10}, {9, 3}, {size, 5},
	} {
		buf := bytes.Repeat([]byte{0xaa}, tc.n)
		n, _ := f.ReadAt(buf, tc.off)
		want := bytes.Repeat([]byte{0xaa}, tc.n)
		if n > 0 {
			copy(want, flipped[tc.off:tc.off+int64(n)])
		}
		if !bytes.Equal(buf, want) {
			t.Errorf("ReadAt(%d bytes, %d): %s", tc.n, tc.off, diffAt(buf, want))
		}
	}
	checkImage(t, m, init) // the medium is untouched
	f.Reset()
	checkImage(t, f, init)
}

func TestReset(t *testing.T) {
	m := NewMemory(4096, 512)
	f := NewFaulty(m)
	f.FlipOnRead(0, 0)
	f.TearWrite(3, 0, true)
	f.WriteAt([]byte{1}, 0)
	f.CutAfter(1)
	f.WriteAt([]byte{2}, 1)
	if !f.PowerCut() || f.Writes() != 2 || len(f.Log()) != 1 {
		t.Fatalf("before Reset: cut %v, writes %d, log %d", f.PowerCut(), f.Writes(), len(f.Log()))
	}
	f.Reset()
	if f.PowerCut() || f.Writes() != 0 || len(f.Log()) != 0 {
		t.Fatalf("after Reset: cut %v, writes %d, log %d", f.PowerCut(), f.Writes(), len(f.Log()))
	}
	// The old tear (write 3) and cut are disarmed, and write numbering
	// restarted.
	for i := range 4 {
		if _, err := f.WriteAt([]byte{9}, int64(10+i)); err != nil {
			t.Fatalf("write %d after Reset: %v", i+1, err)
		}
	}
	if log := f.Log(); len(log) != 4 || log[0].Seq != 1 || log[3].Torn {
		t.Fatalf("log after Reset: %+v", log)
	}
	want := make([]byte, 4096)
	want[0] = 1
	copy(want[10:], []byte{9, 9, 9, 9})
	checkImage(t, f, want) // no read flip either
}

func TestLogCountsButSkipsFailedWrites(t *testing.T) {
	f := NewFaulty(NewMemory(1024, 512))
	f.WriteAt([]byte{1}, 0)
	if _, err := f.WriteAt([]byte{2}, 1024); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("out-of-range write = %v", err)
	}
	f.WriteAt([]byte{3}, 2)
	log := f.Log()
	if f.Writes() != 3 || len(log) != 2 || log[0].Seq != 1 || log[1].Seq != 3 {
		t.Fatalf("writes %d, log %+v", f.Writes(), log)
	}
	// The returned log is a copy: scribbling on it does not change f's.
	log[0].Data[0] = 0xff
	if f.Log()[0].Data[0] != 1 {
		t.Fatal("Log shares Data with the device")
	}
}

func TestFaultyCapabilities(t *testing.T) {
	m := NewMemoryFrom(pattern(4096, 70), 1024)
	f := NewFaulty(plainDevice{m})
	if f.BlockSize() != 1024 || f.Size() != 4096 || f.ReadOnly() {
		t.Fatalf("forwarded BlockSize %d, Size %d, ReadOnly %v", f.BlockSize(), f.Size(), f.ReadOnly())
	}
	if err := f.Resize(8192); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Resize over a non-Resizer = %v; want errors.ErrUnsupported", err)
	}
	if err := f.Trim(1000, 2000); err != nil {
		t.Fatalf("Trim over a non-Trimmer: %v", err)
	}
	want := pattern(4096, 70)
	clear(want[1000:3000])
	checkImage(t, m, want)
	if err := f.Trim(4000, 100); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("out-of-range Trim = %v", err)
	}
	if log := f.Log(); len(log) != 1 || log[0].Kind != OpTrim || log[0].Off != 1000 || log[0].Len != 2000 {
		t.Errorf("log = %+v; want the one trim", log)
	}
	m.SetReadOnly(true)
	if f.ReadOnly() {
		t.Error("a device without ReadOnly reported read-only")
	}
	if !NewFaulty(m).ReadOnly() {
		t.Error("ReadOnly not forwarded")
	}

	f.CutAfter(0)
	if err := f.Trim(0, 1); !errors.Is(err, ErrPowerCut) {
		t.Errorf("Trim after cut = %v", err)
	}
	if err := f.Resize(1); !errors.Is(err, ErrPowerCut) {
		t.Errorf("Resize after cut = %v", err)
	}
}

// TestFaultyConcurrentNumbering checks that concurrent writers still see
// one total order: exactly the first n writes get through and the log
// replays to the medium.
func TestFaultyConcurrentNumbering(t *testing.T) {
	const bs, writers, each, cut = 512, 8, 20, 50
	init := make([]byte, bs*writers)
	m := NewMemoryFrom(init, bs)
	f := NewFaulty(m)
	f.CutAfter(cut)
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range each {
				f.WriteAt(pattern(bs, g*each+i), int64(g*bs))
			}
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, bs)
			for range each {
				f.ReadAt(buf, int64(g*bs))
				f.Writes()
			}
		}()
	}
	wg.Wait()
	log := f.Log()
	if f.Writes() != writers*each || len(log) != cut {
		t.Fatalf("writes %d, logged %d; want %d, %d", f.Writes(), len(log), writers*each, cut)
	}
	for i, op := range log {
		if op.Seq != i+1 {
			t.Fatalf("log entry %d has Seq %d", i, op.Seq)
		}
	}
	replayed := NewMemoryFrom(init, bs)
	if err := Replay(replayed, log); err != nil {
		t.Fatal(err)
	}
	checkImage(t, m, replayed.Bytes())
}
