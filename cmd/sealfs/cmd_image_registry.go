package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/sealfs/sealfs/image"
	"github.com/sealfs/sealfs/registry"
)

// registryOptions are the flags of every command that talks to a registry
// (image push/pull/extract/mount/ls, blob push/pull), named as oras and
// docker name them.
type registryOptions struct {
	PlainHTTP     bool
	CAFile        string
	Username      string
	PasswordStdin bool
	Concurrency   int

	password string // read from stdin once, by open
}

func (o *registryOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.PlainHTTP, "plain-http", false, "talk HTTP, not HTTPS, to the registry")
	fs.StringVar(&o.CAFile, "ca-file", "", "trust the certificate authorities in PEM `FILE` for the registry's TLS certificate")
	fs.StringVarP(&o.Username, "username", "u", "", "registry `USER` (with --password-stdin); without it, docker's stored credentials are used")
	fs.BoolVar(&o.PasswordStdin, "password-stdin", false, "read the registry password from the first line of stdin")
	fs.IntVarP(&o.Concurrency, "concurrency", "j", registry.DefaultConcurrency, "move `N` blobs at a time")
}

// registryFlagsHelp is appended to the long help of registry commands.
const registryFlagsHelp = `
A registry reference is REGISTRY/REPOSITORY[:TAG][@DIGEST], told apart from
a local path as docker does: the part before the first '/' holds a '.' or a
':' or is "localhost" (write a local path like that as ./my.dir/oci:v1).
Registry options: --plain-http for a registry without TLS, --ca-file for a
private certificate authority, --username with --password-stdin, else the
credentials 'docker login' or 'oras login' stored (~/.docker/config.json or
$DOCKER_CONFIG, credential helpers included). Credentials never appear in
output.

Registry failures have exit statuses of their own: 11 unauthorized (no or
wrong credentials), 12 not in the registry (repository, tag or blob), 13
digest mismatch (the registry served other bytes than those named; nothing
was kept), 14 registry unreachable (connection, DNS, TLS, timeouts, 5xx).`

// open checks the flags, reads the password if asked, and opens the
// repository ref names.
func (o *registryOptions) open(ref registry.Reference, stdin io.Reader) (*registry.Repository, error) {
	if o.Concurrency < 1 {
		return nil, usageErrorf("--concurrency %d: want 1 or more", o.Concurrency)
	}
	opts := &registry.Options{PlainHTTP: o.PlainHTTP, CAFile: o.CAFile, Username: o.Username}
	switch {
	case o.PasswordStdin && o.Username == "":
		return nil, usageErrorf("--password-stdin needs --username")
	case o.Username != "" && !o.PasswordStdin:
		return nil, usageErrorf("--username needs --password-stdin (passwords are never taken from the command line)")
	case o.PasswordStdin && o.password == "":
		pw, err := readPassword(stdin)
		if err != nil {
			return nil, err
		}
		o.password = pw
	}
	opts.Password = o.password
	repo, err := registry.Open(ref, opts)
	if err != nil {
		return nil, withCode(ExitError, err)
	}
	return repo, nil
}

// readPassword reads the first line of stdin, without its line end.
func readPassword(stdin io.Reader) (string, error) {
	if stdin == nil {
		return "", usageErrorf("--password-stdin: no standard input")
	}
	line, err := bufio.NewReader(io.LimitReader(stdin, 4096)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", withCode(ExitError, fmt.Errorf("--password-stdin: %w", err))
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", usageErrorf("--password-stdin: standard input holds no password")
	}
	return pw, nil
}

// args returns the flags for a child process (the background mount
// server) that talks to the same registry; the password travels on the
// child's stdin.
func (o *registryOptions) args() []string {
	var a []string
	if o.PlainHTTP {
		a = append(a, "--plain-http")
	}
	if o.CAFile != "" {
		ca, err := filepath.Abs(o.CAFile)
		if err != nil {
			ca = o.CAFile
		}
		a = append(a, "--ca-file", ca)
	}
	if o.Username != "" {
		a = append(a, "--username", o.Username, "--password-stdin")
	}
	return append(a, fmt.Sprintf("--concurrency=%d", o.Concurrency))
}

// parseRegistryRef parses a registry reference argument; wantManifest
// requires a tag or a digest.
func parseRegistryRef(s string, wantManifest bool) (registry.Reference, error) {
	ref, err := registry.ParseReference(s)
	if err != nil {
		return ref, usageError(err)
	}
	if wantManifest && ref.Manifest() == "" {
		return ref, usageErrorf("%q: want REGISTRY/REPOSITORY:TAG or @DIGEST", s)
	}
	return ref, nil
}

// registryExitCode returns the exit status of a registry failure, or 0.
func registryExitCode(err error) int {
	switch {
	case errors.Is(err, registry.ErrUnauthorized):
		return ExitUnauthorized
	case errors.Is(err, registry.ErrNotFound):
		return ExitRegistryNotFound
	case errors.Is(err, registry.ErrDigestMismatch):
		return ExitDigestMismatch
	case errors.Is(err, registry.ErrNetwork):
		return ExitNetwork
	}
	return 0
}

// defaultCacheDir is where lazily fetched image blobs are kept unless
// --cache says otherwise: $XDG_CACHE_HOME/sealfs/oci, ~/.cache/sealfs/oci.
func defaultCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return filepath.Join(os.TempDir(), fmt.Sprintf("sealfs-cache-%d", os.Getuid()), "oci")
	}
	return filepath.Join(dir, "sealfs", "oci")
}

// imageSourceOptions are the flags of commands that read an image from a
// layout or a registry (extract, mount, ls).
type imageSourceOptions struct {
	registryOptions
	Cache string
}

func (o *imageSourceOptions) AddFlags(fs *pflag.FlagSet) {
	o.registryOptions.AddFlags(fs)
	fs.StringVar(&o.Cache, "cache", defaultCacheDir(), "keep blobs fetched from a registry in `DIR` (an OCI layout) for later mounts, extracts and pulls")
}

// openRemoteImage opens image ref (with a tag or digest) in a registry,
// with the cache, checking the manifest and rootfs against root if given.
func openRemoteImage(ctx context.Context, o *imageSourceOptions, arg string, root *image.Digest, stdin io.Reader) (*image.Image, *image.Remote, error) {
	ref, err := parseRegistryRef(arg, true)
	if err != nil {
		return nil, nil, err
	}
	repo, err := o.open(ref, stdin)
	if err != nil {
		return nil, nil, err
	}
	remote, err := image.NewRemote(repo, &image.RemoteOptions{CacheDir: o.Cache})
	if err != nil {
		return nil, nil, withCode(ExitError, err)
	}
	im, err := image.OpenImageFrom(ctx, remote, ref.Manifest(), root)
	if err != nil {
		return nil, nil, imageError(err, ExitRegistryNotFound)
	}
	return im, remote, nil
}

// transferProgress draws "VERB 12/40 blobs, 3.1/10.2 MiB, 5.3 MiB/s" on w
// when it is a terminal, at most ten times a second, and blanks it when
// finished. Elsewhere it returns a nil ProgressFunc.
func transferProgress(w io.Writer, verb string) (registry.ProgressFunc, func()) {
	if !isTerminal(w) {
		return nil, func() {}
	}
	return drawTransfer(w, verb)
}

// drawTransfer is transferProgress on any writer.
func drawTransfer(w io.Writer, verb string) (registry.ProgressFunc, func()) {
	var mu sync.Mutex
	start := time.Now()
	var last time.Time
	width := 0
	draw := func(p registry.Progress) {
		rate := float64(p.Moved) / max(time.Since(start).Seconds(), 0.001)
		line := fmt.Sprintf("%s %d/%d blobs, %s/%s, %s/s", verb, p.BlobsDone, p.Blobs,
			imageBytes(p.BytesDone), imageBytes(p.Bytes), imageBytes(int64(rate)))
		fmt.Fprintf(w, "\r%-*s", width, line)
		width = max(width, len(line))
	}
	update := func(p registry.Progress) {
		mu.Lock()
		defer mu.Unlock()
		if now := time.Now(); now.Sub(last) >= 100*time.Millisecond || p.BlobsDone == p.Blobs {
			last = now
			draw(p)
		}
	}
	finish := func() {
		mu.Lock()
		defer mu.Unlock()
		if width > 0 {
			fmt.Fprintf(w, "\r%s\r", strings.Repeat(" ", width))
		}
	}
	return update, finish
}

// countText is "3 blobs (1.5 MiB)".
func countText(c registry.Count) string {
	noun := "blobs"
	if c.Blobs == 1 {
		noun = "blob"
	}
	return fmt.Sprintf("%d %s (%s)", c.Blobs, noun, imageBytes(c.Bytes))
}
