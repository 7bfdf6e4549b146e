package merkle

import (
	"bytes"
	"crypto/sha256"
	"sync"
	"testing"
)

// The throughput benchmarks hash the same 64 MiB buffer, so the ratio of
// BenchmarkFuchsiaRoot or BenchmarkFsverity to BenchmarkSHA256Raw is the
// cost of the tree format itself (target: at least 90% of raw SHA-256).
const benchSize = 64 << 20

var benchBuf = sync.OnceValue(func() []byte { return testPattern(benchSize) })

func BenchmarkSHA256Raw(b *testing.B) {
	data := benchBuf()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		sha256.Sum256(data)
	}
}

func BenchmarkFuchsiaRoot(b *testing.B) {
	data := benchBuf()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		FuchsiaRoot(data)
	}
}

func BenchmarkFsverity(b *testing.B) {
	data := benchBuf()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := FsverityDigest(bytes.NewReader(data), int64(len(data)), FsverityOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDmverityFormat(b *testing.B) {
	data := benchBuf()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := DmverityFormat(bytes.NewReader(data), int64(len(data)), &memFile{}, DmverityOptions{Salt: []byte("salt")}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestFuchsiaVerifierConcurrent(t *testing.T) {
	data := testPattern(300 * FuchsiaBlockSize)
	root, tree := NewFuchsiaBuilderFinish(data)
	v, err := NewFuchsiaVerifier(root, int64(len(data)), tree)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := g; i < 300; i += 8 {
				if err := v.VerifyBlocks(int64(i), data[i*FuchsiaBlockSize:(i+1)*FuchsiaBlockSize]); err != nil {
					t.Error(err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
}
