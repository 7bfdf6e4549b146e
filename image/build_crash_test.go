package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestBuildKilled SIGKILLs builds at random moments: every tag the layout
// had keeps reading correctly, and the new tag is either absent or complete.
func TestBuildKilled(t *testing.T) {
	if src := os.Getenv("SEALFS_TEST_BUILD_CHILD"); src != "" {
		_, err := Build(context.Background(), src, os.Getenv("SEALFS_TEST_BUILD_OCI"), "new", BuildOptions{Compress: true})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if testing.Short() {
		t.Skip("spawns builds")
	}
	src := filepath.Join(t.TempDir(), "src")
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 40 {
		d := filepath.Join(src, fmt.Sprintf("d%d", i%5))
		os.MkdirAll(d, 0o755)
		b := make([]byte, 100<<10+rng.IntN(200<<10))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	oci := filepath.Join(t.TempDir(), "oci")
	old, err := Build(context.Background(), filepath.Join(src, "d0"), oci, "old", BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runs := 8
	if os.Getenv("SEALFS_LONG") != "" {
		runs = 60
	}
	completed := 0
	for i := range runs {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBuildKilled$")
		cmd.Env = append(os.Environ(), "SEALFS_TEST_BUILD_CHILD="+src, "SEALFS_TEST_BUILD_OCI="+oci)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		cmd.Process.Kill()
		if err := cmd.Wait(); err == nil {
			completed++
		}
		l, err := OpenLayout(oci)
		if err != nil {
			t.Fatalf("run %d: layout: %v", i, err)
		}
		checkTag(t, l, "old", &old.RootDigest)
		if _, err := l.Manifest("new"); err == nil {
			checkTag(t, l, "new", nil)
		} else if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("run %d: new tag: %v", i, err)
		}
	}
	t.Logf("%d of %d builds completed before the kill", completed, runs)
}

func checkTag(t *testing.T, l *Layout, tag string, root *Digest) {
	t.Helper()
	im, err := l.OpenImage(tag, root)
	if err != nil {
		t.Fatalf("%s: %v", tag, err)
	}
	err = im.Walk(func(p string, in *Inode) error {
		if in.Type == TypeFile {
			_, err := im.ReadFile(in)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", tag, err)
	}
}
