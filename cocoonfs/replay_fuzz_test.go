package cocoonfs

import (
	"bytes"
	"errors"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
)

// pendingJournalImage returns an image whose last transaction is committed
// (journal head written) but not applied, with the states before and after.
func pendingJournalImage(t testing.TB) (img []byte, before, after map[uint64][]byte, journalOff int64) {
	base := mkfsMem(t, 1<<20, &MkfsOptions{Files: map[uint64][]byte{20: []byte("before")}}).Bytes()
	faulty := blockdev.NewFaulty(blockdev.NewMemoryFrom(base, 512))
	f, err := Open(faulty, txKey, &Options{ReadWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	tx, _ := f.Begin()
	tx.WriteFile(20, []byte("after"), 0)
	tx.WriteFile(21, bytes.Repeat([]byte("x"), 9000), 0)
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	journalOff = int64(f.journalHead.Start * f.layout.AllocBlockSize())
	img = bytes.Clone(base)
	// Apply writes up to and including the last one that wrote the journal
	// head's first bytes (the commit point), not the invalidation after it.
	var commitPoint int
	for i, op := range faulty.Log() {
		if op.Kind == blockdev.OpWrite && op.Off == journalOff && op.Data[0] == 'C' {
			commitPoint = i
		}
	}
	for _, op := range faulty.Log()[:commitPoint+1] {
		if op.Kind == blockdev.OpWrite {
			copy(img[op.Off:], op.Data)
		}
	}
	return img, map[uint64][]byte{20: []byte("before")}, map[uint64][]byte{20: []byte("after"), 21: bytes.Repeat([]byte("x"), 9000)}, journalOff
}

func TestPendingJournalReplay(t *testing.T) {
	img, _, after, _ := pendingJournalImage(t)
	if _, err := Open(blockdev.NewMemoryFrom(img, 512), txKey, nil); err == nil {
		t.Fatal("read-only open of a pending journal succeeded")
	}
	dev := blockdev.NewMemoryFrom(img, 512)
	f, err := Open(dev, txKey, &Options{ReadWrite: true})
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	checkState(t, f, after)
	// Replayed once; a second open finds no journal.
	g, err := Open(blockdev.NewMemoryFrom(dev.Bytes(), 512), txKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkState(t, g, after)
}

// FuzzReplay alters bytes of the pending journal (its head, and through the
// offset any block after it): a read-write open must not panic, and if it
// succeeds the image must verify and hold the old or the new state, or, when
// the patch hit committed data the journal does not touch, report that data
// as failing authentication: never return wrong data.
func FuzzReplay(f *testing.F) {
	img, before, after, journalOff := pendingJournalImage(f)
	for _, s := range []struct {
		off   uint32
		patch []byte
	}{{0, []byte{1}}, {40, []byte{0xff}}, {200, []byte{1, 2, 3}}, {600, []byte{0x80}}, {70000, []byte{1}}} {
		f.Add(s.off, s.patch)
	}
	f.Fuzz(func(t *testing.T, off uint32, patch []byte) {
		if len(patch) == 0 || len(patch) > 32 {
			return
		}
		data := bytes.Clone(img)
		o := (journalOff + int64(off)) % int64(len(data))
		for i, p := range patch {
			if int(o)+i < len(data) {
				data[int(o)+i] ^= p
			}
		}
		fsys, err := Open(blockdev.NewMemoryFrom(data, 512), txKey, &Options{ReadWrite: true})
		if err != nil {
			return
		}
		if rep, err := fsys.Verify(t.Context(), nil); err != nil {
			if !errors.Is(err, ErrAuthentication) {
				t.Fatalf("patch %x at %#x: opened, but Verify: %v %v", patch, o, err, rep.Problems)
			}
			// Damage found: every file that still reads must hold the old
			// or the new contents.
			for ino, err := range fsys.Inodes() {
				if err != nil {
					return
				}
				got, err := fsys.ReadFile(ino.Ino)
				if err != nil {
					if !errors.Is(err, ErrAuthentication) && !errors.Is(err, ErrCorrupt) {
						t.Fatalf("patch %x at %#x: inode %d: %v", patch, o, ino.Ino, err)
					}
					continue
				}
				if !bytes.Equal(got, before[ino.Ino]) && !bytes.Equal(got, after[ino.Ino]) {
					t.Fatalf("patch %x at %#x: inode %d reads wrong data", patch, o, ino.Ino)
				}
			}
			return
		}
		okOld, _ := sameFiles(fsys, before)
		okNew, _ := sameFiles(fsys, after)
		if !okOld && !okNew {
			t.Fatalf("patch %x at %#x: opened with a state that is neither the old nor the new one", patch, o)
		}
	})
}
