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

// TestFuchsiaVerifierAt: the streaming verifier accepts exactly the trees
// NewFuchsiaVerifier accepts, verifies every block, and refuses the blocks
// of a level-0 hash block altered after it was made (and only those).
func TestFuchsiaVerifierAt(t *testing.T) {
	const B = FuchsiaBlockSize
	for _, n := range []int{0, 1, B, B + 1, 256 * B, 256*B + 1, 600*B + 77} {
		data := testPattern(n)
		root, tree := NewFuchsiaBuilderFinish(data)
		v, err := NewFuchsiaVerifierAt(root, int64(n), bytes.NewReader(tree), int64(len(tree)))
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if err := v.VerifyBlocks(0, data); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if len(tree) == 0 {
			continue
		}
		// Altered before: refused, like NewFuchsiaVerifier.
		for _, at := range []int{0, len(tree) / 2, len(tree) - 1} {
			bad := bytes.Clone(tree)
			bad[at] ^= 1
			_, err1 := NewFuchsiaVerifier(root, int64(n), bad)
			_, err2 := NewFuchsiaVerifierAt(root, int64(n), bytes.NewReader(bad), int64(len(bad)))
			if !errors.Is(err1, ErrIntegrity) || !errors.Is(err2, ErrIntegrity) {
				t.Fatalf("%d bytes, tree byte %d flipped: %v, %v; want ErrIntegrity from both", n, at, err1, err2)
			}
		}
		// Altered after: the blocks under the altered hash block fail.
		live := bytes.Clone(tree)
		v, err = NewFuchsiaVerifierAt(root, int64(n), bytes.NewReader(live), int64(len(live)))
		if err != nil {
			t.Fatal(err)
		}
		live[5] ^= 1 // in level-0 hash block 0: data blocks 0..255
		blocks := (n + B - 1) / B
		for i := 0; i < blocks; i++ {
			err := v.VerifyBlocks(int64(i), data[i*B:min((i+1)*B, n)])
			if (i < 256) != errors.Is(err, ErrIntegrity) {
				t.Fatalf("%d bytes, block %d after the tree changed: %v", n, i, err)
			}
		}
	}
	if _, err := NewFuchsiaVerifierAt(Digest{}, 3*B, bytes.NewReader(make([]byte, B)), 2*B); !errors.Is(err, ErrIntegrity) {
		t.Errorf("tree shorter than its size: %v; want ErrIntegrity", err)
	}
}

// TestFuchsiaVerifierAtMemory: verifying a 1 GiB blob's 4 MiB tree and a
// few blocks allocates a small fraction of the tree.
func TestFuchsiaVerifierAtMemory(t *testing.T) {
	size := int64(1 << 30)
	var leaves bytes.Buffer
	st := NewFuchsiaStream(&leaves)
	zero := make([]byte, 1<<20)
	for done := int64(0); done < size; done += int64(len(zero)) {
		st.Write(zero)
	}
	root, upper, err := st.Finish()
	if err != nil {
		t.Fatal(err)
	}
	tree := append(leaves.Bytes(), make([]byte, padTo(leaves.Len(), FuchsiaBlockSize))...)
	tree = append(tree, upper...)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	v, err := NewFuchsiaVerifierAt(root, size, bytes.NewReader(tree), int64(len(tree)))
	if err == nil {
		for _, b := range []int64{0, 1000, size/FuchsiaBlockSize - 1} {
			if err = v.VerifyBlocks(b, zero[:FuchsiaBlockSize]); err != nil {
				break
			}
		}
	}
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if a := after.TotalAlloc - before.TotalAlloc; a > uint64(len(tree))/4 {
		t.Errorf("allocated %d bytes for a %d-byte tree", a, len(tree))
	}
}
