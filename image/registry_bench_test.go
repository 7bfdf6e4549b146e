package image

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/sealfs/sealfs/registry/registrytest"
)

// BenchmarkRegistry pushes a 16 MiB image (random data: every chunk new)
// to a fresh repository of a loopback docker-registry per iteration, pulls
// it into a fresh layout, and reads one 1 MiB file through a lazy Remote
// with an empty cache; SetBytes makes the result MB/s of image data. The
// tree-sized comparison with cp -r is bench/registry.sh.
func BenchmarkRegistry(b *testing.B) {
	srv := registrytest.Start(b, registrytest.Options{})
	ctx := context.Background()
	sizes := make([]int, 16)
	for i := range sizes {
		sizes[i] = 1 << 20
	}
	src := randomTree(b, 9, sizes...)
	oci := filepath.Join(b.TempDir(), "oci")
	br, err := Build(ctx, src, oci, "v1", BuildOptions{})
	if err != nil {
		b.Fatal(err)
	}
	l, err := OpenLayout(oci)
	if err != nil {
		b.Fatal(err)
	}
	for _, conc := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("push/j=%d", conc), func(b *testing.B) {
			b.SetBytes(br.Bytes)
			for i := 0; i < b.N; i++ {
				repo := srv.Repository(b, fmt.Sprintf("push/j%d-%d", conc, i), nil)
				if _, err := Push(ctx, l, "v1", repo, "v1", PushOptions{Concurrency: conc}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	repo := srv.Repository(b, "pull/src", nil)
	if _, err := Push(ctx, l, "v1", repo, "v1", PushOptions{}); err != nil {
		b.Fatal(err)
	}
	for _, conc := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("pull/j=%d", conc), func(b *testing.B) {
			b.SetBytes(br.Bytes)
			for i := 0; i < b.N; i++ {
				dst := filepath.Join(b.TempDir(), "pulled")
				if _, err := Pull(ctx, repo, "v1", dst, "v1", PullOptions{RootDigest: &br.RootDigest, Concurrency: conc}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("lazy-one-file", func(b *testing.B) {
		b.SetBytes(1 << 20)
		for i := 0; i < b.N; i++ {
			remote, err := NewRemote(repo, &RemoteOptions{CacheDir: filepath.Join(b.TempDir(), "cache")})
			if err != nil {
				b.Fatal(err)
			}
			im, err := OpenImageFrom(ctx, remote, "v1", &br.RootDigest)
			if err != nil {
				b.Fatal(err)
			}
			in, err := im.Lookup(im.Root(), []byte("bin"))
			if err == nil {
				in, err = im.Lookup(in, []byte("f0"))
			}
			if err != nil {
				b.Fatal(err)
			}
			if _, err := im.ReadFile(in); err != nil {
				b.Fatal(err)
			}
		}
	})
}
