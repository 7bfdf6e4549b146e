package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs"
)

// TestReplayCrashPoints cuts the power after every write of one transaction
// (two files written, one removed). At each point the read commands either
// show the old state or refuse with exit 7 naming `sealfs replay`; replay
// exits 0 and says whether it applied a journal; afterwards the read
// commands show the old or the new state, and a second replay has nothing
// to do.
func TestReplayCrashPoints(t *testing.T) {
	key := []byte("replay test key, thirty-two byte")
	base := blockdev.NewMemory(1<<20, 512)
	if _, err := cocoonfs.Mkfs(base, key, &cocoonfs.MkfsOptions{Files: map[uint64][]byte{20: []byte("old twenty"), 21: []byte("old twenty-one")}}); err != nil {
		t.Fatal(err)
	}
	start := base.Bytes()
	faulty := blockdev.NewFaulty(blockdev.NewMemoryFrom(start, 512))
	f, err := cocoonfs.Open(faulty, key, &cocoonfs.Options{ReadWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	tx, _ := f.Begin()
	if err := tx.WriteFile(20, bytes.Repeat([]byte("new twenty "), 2000), 0); err != nil {
		t.Fatal(err)
	}
	if err := tx.WriteFile(22, []byte("new twenty-two"), 0); err != nil {
		t.Fatal(err)
	}
	if err := tx.Remove(21); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	oldLs, newLs := "20 0x00 10\n21 0x00 14\n", "20 0x00 22000\n22 0x00 14\n"

	kf := keyFile(t, key...)
	run := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := execute(context.Background(), args, strings.NewReader(""), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	img := bytes.Clone(start)
	var pending, replayed int
	for k, op := range faulty.Log() {
		if op.Kind != blockdev.OpWrite {
			continue
		}
		copy(img[op.Off:], op.Data)
		path := writeTemp(t, "crash.img", img)
		code, out, errOut := run("ls", path, "-k", kf)
		wasPending := code == ExitNotFormatted
		switch code {
		case ExitOK:
			if out != oldLs && out != newLs {
				t.Fatalf("write %d: ls shows neither state:\n%s", k, out)
			}
		case ExitNotFormatted:
			if !strings.Contains(errOut, "sealfs replay "+path) {
				t.Fatalf("write %d: exit 7 does not name sealfs replay: %s", k, errOut)
			}
			pending++
		default:
			t.Fatalf("write %d: ls exit %d: %s", k, code, errOut)
		}
		code, out, errOut = run("replay", path, "-k", kf, "--force")
		if code != ExitOK {
			t.Fatalf("write %d: replay exit %d: %s", k, code, errOut)
		}
		if did := strings.Contains(out, "replayed the pending journal"); did != wasPending {
			t.Fatalf("write %d: replay said %q, but a journal was pending: %v", k, out, wasPending)
		} else if did {
			replayed++
		}
		code, out, errOut = run("ls", path, "-k", kf)
		if code != ExitOK || out != oldLs && out != newLs {
			t.Fatalf("write %d: after replay, ls exit %d:\n%s%s", k, code, out, errOut)
		}
		if code, out, _ = run("replay", path, "-k", kf, "--force"); code != ExitOK || !strings.Contains(out, "nothing to do") {
			t.Fatalf("write %d: second replay exit %d: %s", k, code, out)
		}
		if code, _, errOut = run("verify", path, "-k", kf); code != ExitOK {
			t.Fatalf("write %d: verify after replay exit %d: %s", k, code, errOut)
		}
	}
	if pending == 0 || pending != replayed {
		t.Fatalf("%d crash points had a pending journal, %d were replayed", pending, replayed)
	}
	t.Logf("%d crash points left a pending journal, each replayed", pending)
}
