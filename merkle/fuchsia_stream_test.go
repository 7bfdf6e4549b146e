package merkle

import (
	"bytes"
	"errors"
	"io"
	"os"
	"runtime"
	"testing"
)

// TestFuchsiaStream checks that the level-0 hashes FuchsiaStream writes
// out, padded and followed by the upper levels it returns, are the tree
// FuchsiaBuilder returns, around every block and hash-block boundary.
func TestFuchsiaStream(t *testing.T) {
	const B = FuchsiaBlockSize
	sizes := []int{0, 1, B - 1, B, B + 1, 2 * B, 256 * B, 256*B + 1, 257 * B, 300*B + 3}
	if os.Getenv("SEALFS_LONG") != "" {
		sizes = append(sizes, 256*256*B-1, 256*256*B+B+3) // a fourth level
	}
	for _, n := range sizes {
		data := make([]byte, n) // zeros for the big ones: hashing is what is tested
		if n < 1<<20 {
			data = testPattern(n)
		}
		wantRoot, wantTree := NewFuchsiaBuilderFinish(data)
		var leaves bytes.Buffer
		st := NewFuchsiaStream(&leaves)
		for p := data; len(p) > 0; {
			k := min(len(p), 3*B+17)
			if _, err := st.Write(p[:k]); err != nil {
				t.Fatal(err)
			}
			p = p[k:]
		}
		root, upper, err := st.Finish()
		if err != nil || root != wantRoot {
			t.Fatalf("%d bytes: root %s, %v; want %s", n, root, err, wantRoot)
		}
		var tree []byte
		if leaves.Len() > fuchsiaDigestSize {
			tree = append(leaves.Bytes(), make([]byte, padTo(leaves.Len(), B))...)
			tree = append(tree, upper...)
		} else if !bytes.Equal(leaves.Bytes(), root[:]) || len(upper) != 0 {
			t.Fatalf("%d bytes: one block, but %d leaf bytes (root %v) and %d upper bytes", n, leaves.Len(), bytes.Equal(leaves.Bytes(), root[:]), len(upper))
		}
		if !bytes.Equal(tree, wantTree) {
			t.Fatalf("%d bytes: assembled tree differs from FuchsiaBuilder's", n)
		}
	}
}

type failWriter struct{ after int }

var errSink = errors.New("sink full")

func (w *failWriter) Write(p []byte) (int, error) {
	if w.after < len(p) {
		return 0, errSink
	}
	w.after -= len(p)
	return len(p), nil
}

func TestFuchsiaStreamSinkError(t *testing.T) {
	st := NewFuchsiaStream(&failWriter{after: 64})
	_, err := st.Write(make([]byte, 10*FuchsiaBlockSize))
	if !errors.Is(err, errSink) {
		t.Fatalf("Write = %v; want the sink's error", err)
	}
	if _, _, err := st.Finish(); !errors.Is(err, errSink) {
		t.Fatalf("Finish = %v; want the sink's error", err)
	}
}

// TestFuchsiaRootBoundedMemory hashes 1 GiB (a tree of 4 MiB) without
// keeping the tree: what it allocates stays far below the tree's size.
func TestFuchsiaRootBoundedMemory(t *testing.T) {
	size := int64(1 << 30)
	if testing.Short() {
		size = 256 << 20
	}
	buf := make([]byte, 1<<20)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	st := NewFuchsiaStream(io.Discard)
	for done := int64(0); done < size; done += int64(len(buf)) {
		st.Write(buf)
	}
	root, upper, err := st.Finish()
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if a := after.TotalAlloc - before.TotalAlloc; a > uint64(FuchsiaTreeSize(size)/8) {
		t.Errorf("allocated %d bytes for a %d-byte tree", a, FuchsiaTreeSize(size))
	}
	// The upper levels of 1 GiB: level 1 (2 hash blocks) and level 2 (1).
	if size == 1<<30 && len(upper) != 3*FuchsiaBlockSize {
		t.Errorf("upper levels are %d bytes; want %d", len(upper), 3*FuchsiaBlockSize)
	}
	if want := FuchsiaRoot(make([]byte, 3*FuchsiaBlockSize)); root == want {
		t.Fatal("unexpected root")
	}
}
