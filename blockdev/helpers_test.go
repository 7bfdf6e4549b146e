package blockdev

import (
	"bytes"
	"fmt"
	"testing"
)

// pattern returns n deterministic pseudo-random bytes; different seeds give
// different bytes, so a misplaced write shows up in a comparison.
func pattern(n int, seed int) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 0x9e3779b9
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// step is one operation of a test workload.
type step struct {
	kind OpKind
	off  int64
	data []byte // write payload
	n    int64  // trim length or resize size
}

func wr(off int64, data []byte) step { return step{kind: OpWrite, off: off, data: data} }
func syncStep() step                 { return step{kind: OpSync} }
func trimStep(off, n int64) step     { return step{kind: OpTrim, off: off, n: n} }
func resizeStep(size int64) step     { return step{kind: OpResize, n: size} }

// runSteps applies every step, carrying on after failures the way a buggy
// program might, so tests also check that nothing gets through after a cut.
func runSteps(d Device, steps []step) []error {
	errs := make([]error, len(steps))
	for i, s := range steps {
		switch s.kind {
		case OpWrite:
			_, errs[i] = d.WriteAt(s.data, s.off)
		case OpSync:
			errs[i] = d.Sync()
		case OpTrim:
			errs[i] = d.(Trimmer).Trim(s.off, s.n)
		case OpResize:
			errs[i] = d.(Resizer).Resize(s.n)
		}
	}
	return errs
}

// mustBytes returns the whole contents of d.
func mustBytes(t testing.TB, d Device) []byte {
	t.Helper()
	b, err := ReadAll(d)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	return b
}

// diffAt describes the first difference between two images for a failure
// message; a full dump of kilobytes helps nobody.
func diffAt(got, want []byte) string {
	if len(got) != len(want) {
		return fmt.Sprintf("got %d bytes, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Sprintf("first difference at byte %d: got %#02x, want %#02x", i, got[i], want[i])
		}
	}
	return "equal"
}

// checkImage fails t if d does not hold want.
func checkImage(t testing.TB, d Device, want []byte) {
	t.Helper()
	got := mustBytes(t, d)
	if !bytes.Equal(got, want) {
		t.Fatalf("image mismatch: %s", diffAt(got, want))
	}
}
