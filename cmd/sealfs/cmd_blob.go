package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sealfs/sealfs/internal/atomicfile"

	"github.com/sealfs/sealfs/blob"
	"github.com/sealfs/sealfs/blob/delivery"
	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/merkle"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// blobOptions are the flags of the blob subcommands (each uses its own).
type blobOptions struct {
	JSON     bool   // the global --json flag
	Delivery bool   // put: the input is a delivery blob; get: emit one
	Output   string // get -o; empty means stdout
}

func (o *blobOptions) AddFlags(fs *pflag.FlagSet, delivery, output bool) {
	if delivery {
		fs.BoolVar(&o.Delivery, "delivery", false, "the blob travels as an RFC-0207 delivery blob (Type 1, zstd-chunked when smaller)")
	}
	if output {
		fs.StringVarP(&o.Output, "output", "o", "", "write to `FILE` (atomically) instead of stdout")
	}
}

const blobLong = `A blob store is a directory of immutable blobs named by their Fuchsia Merkle
root (64 lowercase hex characters, as blobfs and fxblob name them; see
'sealfs merkle'). Installs are verified against the name and atomic; every
read is verified block by block against the stored Merkle tree, so no
altered byte is ever output. STORE is created by the first put.

Exit status 4 means stored bytes failed verification, 5 that STORE is not a
blob store (or a delivery blob is corrupt), 6 that no blob has that name.`

func newBlobCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "blob",
		Short: "Content-addressed, verified blob store (Fuchsia blobfs model)",
		Long:  blobLong,
		Example: `  sealfs blob put store app.bin
  sealfs blob get store 36e43c7b39beea113ab5070a979023db0b1a47cb9da622169d10660d4f4ad263 -o app.bin
  sealfs blob verify store`,
	}
	cmd.AddCommand(
		newBlobSub(g, "put STORE [FILE|-]", "Install a file (or stdin) and print its name", `Install FILE (stdin if it is - or missing) into STORE, creating STORE if
it does not exist, and print the blob's name. With --delivery the input is a
delivery blob, decoded while it installs. Installing a blob that is already
present succeeds and prints its name ("present" in --json).`, true, false, runBlobPut),
		newBlobSub(g, "get STORE NAME", "Write a blob to stdout or a file", `Write blob NAME to stdout, or to FILE with -o. Every byte is verified before
it is written. On stdout a verification failure ends the output early (what
was written is verified); with -o, FILE is replaced only by the whole blob.
With --delivery the output is a delivery blob of the verified bytes.`, true, true, runBlobGet),
		newBlobSub(g, "ls STORE", "List blobs: name and size", `List every blob in STORE, sorted by name: its name and size in bytes.`, false, false, runBlobLs),
		newBlobSub(g, "stat STORE NAME", "Show a blob's size, tree size and disk usage", `Show blob NAME's size, the size of its stored Merkle tree and the bytes its
file occupies on disk. The data is not read; use verify for that.`, false, false, runBlobStat),
		newBlobSub(g, "rm STORE NAME...", "Remove blobs", `Remove the named blobs from STORE. Fails (6) on the first name that is not
present; those before it are removed.`, false, false, runBlobRm),
		newBlobSub(g, "verify STORE [NAME...]", "Verify blobs (all by default)", `Read and verify the named blobs, or every blob in STORE, and print a summary
with every failure. Exits 4 if any blob failed verification. On a terminal,
progress is shown on stderr.`, false, false, runBlobVerify),
		newBlobSub(g, "du STORE", "Show the bytes STORE occupies on disk", `Print the number of blobs and the exact bytes STORE occupies on its file
system: the allocated blocks of every file and directory in it (blob data,
trees and headers, the marker, temporary files of installs in progress).`, false, false, runBlobDu),
		newBlobPushCommand(g), newBlobPullCommand(g),
	)
	return cmd
}

type blobRunFunc func(ctx context.Context, opts *blobOptions, args []string, stdin io.Reader, stdout, stderr io.Writer) error

// newBlobSub builds one blob subcommand around its runX function.
func newBlobSub(g *globalOptions, use, short, long string, delivery, output bool, run blobRunFunc) *cobra.Command {
	opts := &blobOptions{}
	cmd := &cobra.Command{Use: use, Short: short, Long: long}
	opts.AddFlags(cmd.Flags(), delivery, output)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		opts.JSON = g.JSON
		if err := run(cmd.Context(), opts, args, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()); err != nil {
			return &runError{err}
		}
		return nil
	}
	return cmd
}

// blobArgs checks the count: at least min, at most max (-1: no limit).
func blobArgs(args []string, min, max int, names ...string) error {
	if len(args) < min {
		return usageErrorf("missing %s", names[len(args)])
	}
	if max >= 0 && len(args) > max {
		return usageErrorf("unexpected argument %q", args[max])
	}
	return nil
}

// openBlobStore opens STORE. A directory that is not a store (or of a
// newer version) is exit 5; a missing one and OS errors are exit 1, so they
// are not mistaken for a missing blob.
func openBlobStore(dir string, create bool) (*blob.Store, error) {
	s, err := blob.Open(dir, &blob.Options{Create: create})
	switch {
	case err == nil:
		return s, nil
	case errors.Is(err, blob.ErrNotStore), errors.Is(err, errs.ErrUnsupported):
		return nil, withCode(ExitCorrupt, err)
	}
	return nil, withCode(ExitError, err)
}

func parseBlobName(s string) (merkle.Digest, error) {
	d, err := merkle.ParseDigest(s)
	if err != nil {
		return d, usageError(err)
	}
	return d, nil
}

type blobPutResult struct {
	Name    string `json:"name"`
	Size    int64  `json:"size"`
	Present bool   `json:"present"` // it was installed already
}

func runBlobPut(_ context.Context, opts *blobOptions, args []string, stdin io.Reader, stdout, _ io.Writer) error {
	if err := blobArgs(args, 1, 2, "STORE", "FILE"); err != nil {
		return err
	}
	in := stdin
	if len(args) == 2 && args[1] != "-" {
		f, err := os.Open(args[1])
		if err != nil {
			return withCode(ExitError, err)
		}
		defer f.Close()
		in = f
	}
	s, err := openBlobStore(args[0], true)
	if err != nil {
		return err
	}
	defer s.Close()
	var name merkle.Digest
	if opts.Delivery {
		name, err = s.PutDelivery(in)
	} else {
		name, err = s.Put(in)
	}
	present := errors.Is(err, fs.ErrExist)
	if err != nil && !present {
		if !errors.Is(err, errs.ErrCorrupt) {
			err = withCode(ExitError, err) // reading the input, writing the store
		}
		return err
	}
	if !opts.JSON {
		_, err = fmt.Fprintln(stdout, name)
		return err
	}
	info, err := s.Stat(name)
	if err != nil {
		return err
	}
	return writeJSON(stdout, blobPutResult{Name: name.String(), Size: info.Size, Present: present})
}

// openBlobStoreName takes the STORE NAME arguments of get and stat: it
// checks them and opens the existing store.
func openBlobStoreName(args []string) (*blob.Store, merkle.Digest, error) {
	if err := blobArgs(args, 2, 2, "STORE", "NAME"); err != nil {
		return nil, merkle.Digest{}, err
	}
	name, err := parseBlobName(args[1])
	if err != nil {
		return nil, merkle.Digest{}, err
	}
	s, err := openBlobStore(args[0], false)
	return s, name, err
}

func runBlobGet(_ context.Context, opts *blobOptions, args []string, _ io.Reader, stdout, _ io.Writer) error {
	s, name, err := openBlobStoreName(args)
	if err != nil {
		return err
	}
	defer s.Close()
	b, err := s.Open(name)
	if err != nil {
		return err
	}
	defer b.Close()
	emit := func(w io.Writer) error {
		if !opts.Delivery {
			_, err := io.Copy(w, struct{ io.Reader }{b})
			return err
		}
		// The frames wait in an unlinked temporary file until the seek
		// table before them is known: memory stays bounded.
		spool, err := os.CreateTemp("", "sealfs-delivery-*")
		if err != nil {
			return withCode(ExitError, err)
		}
		os.Remove(spool.Name())
		defer spool.Close()
		return delivery.EncodeStream(w, b, b.Size(), spool)
	}
	if opts.Output == "" {
		return emit(stdout)
	}
	return writeFileAtomicFrom(opts.Output, emit)
}

// writeFileAtomicFrom is writeFileAtomic (cmd_read.go) for streamed
// output: fill writes a temporary file beside path, which is synced and
// renamed over path only if fill succeeds. OS errors get exit code 1;
// fill's errors keep their own classification.
func writeFileAtomicFrom(path string, fill func(io.Writer) error) error {
	var fillErr error
	err := atomicfile.WriteFrom(path, 0o600, func(w io.Writer) error {
		fillErr = fill(w)
		return fillErr
	})
	if fillErr != nil {
		var pe *fs.PathError
		if errors.As(fillErr, &pe) && strings.HasPrefix(filepath.Base(pe.Path), "."+filepath.Base(path)+".sealfs-") {
			return withCode(ExitError, fillErr) // writing the temporary file failed
		}
		return fillErr
	}
	return withCode(ExitError, err)
}

type blobEntry struct {
	Name string `json:"name"`
	blob.Info
}

func runBlobLs(_ context.Context, opts *blobOptions, args []string, _ io.Reader, stdout, _ io.Writer) error {
	if err := blobArgs(args, 1, 1, "STORE"); err != nil {
		return err
	}
	s, err := openBlobStore(args[0], false)
	if err != nil {
		return err
	}
	defer s.Close()
	names, err := s.List()
	if err != nil {
		return withCode(ExitError, err)
	}
	entries := make([]blobEntry, 0, len(names))
	for _, n := range names {
		info, err := s.Stat(n)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return err
		}
		entries = append(entries, blobEntry{n.String(), info})
	}
	if opts.JSON {
		return writeJSON(stdout, entries)
	}
	var b bytes.Buffer
	for _, e := range entries {
		fmt.Fprintf(&b, "%s %d\n", e.Name, e.Size)
	}
	_, err = stdout.Write(b.Bytes())
	return err
}

func runBlobStat(_ context.Context, opts *blobOptions, args []string, _ io.Reader, stdout, _ io.Writer) error {
	s, name, err := openBlobStoreName(args)
	if err != nil {
		return err
	}
	defer s.Close()
	info, err := s.Stat(name)
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(stdout, blobEntry{name.String(), info})
	}
	return writeFields(stdout, []field{
		{"name", name.String()},
		{"size", fmt.Sprintf("%d bytes", info.Size)},
		{"tree", fmt.Sprintf("%d bytes", info.TreeBytes)},
		{"on disk", fmt.Sprintf("%d bytes", info.DiskBytes)},
	})
}

func runBlobRm(_ context.Context, _ *blobOptions, args []string, _ io.Reader, _, _ io.Writer) error {
	if err := blobArgs(args, 2, -1, "STORE", "NAME"); err != nil {
		return err
	}
	names := make([]merkle.Digest, 0, len(args)-1)
	for _, a := range args[1:] {
		n, err := parseBlobName(a)
		if err != nil {
			return err
		}
		names = append(names, n)
	}
	s, err := openBlobStore(args[0], false)
	if err != nil {
		return err
	}
	defer s.Close()
	for _, n := range names {
		if err := s.Remove(n); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				err = withCode(ExitError, err)
			}
			return err
		}
	}
	return nil
}

func runBlobVerify(ctx context.Context, opts *blobOptions, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	if err := blobArgs(args, 1, -1, "STORE"); err != nil {
		return err
	}
	names := make([]merkle.Digest, 0, len(args)-1)
	for _, a := range args[1:] {
		n, err := parseBlobName(a)
		if err != nil {
			return err
		}
		names = append(names, n)
	}
	s, err := openBlobStore(args[0], false)
	if err != nil {
		return err
	}
	defer s.Close()
	update, finish := progressLine(stderr, "verifying")
	var progress func(done, total int)
	if update != nil {
		progress = func(done, total int) { update(uint64(done), uint64(total)) }
	}
	var r *blob.VerifyReport
	var verr error
	if len(names) == 0 {
		r, verr = s.VerifyAll(ctx, progress)
	} else {
		r, verr = s.VerifyBlobs(ctx, names, progress)
	}
	finish()
	if r == nil {
		return verr
	}
	if opts.JSON {
		err = writeJSON(stdout, r)
	} else {
		err = writeBlobVerifyReport(stdout, r)
	}
	if verr != nil {
		return verr
	}
	return err
}

func writeBlobVerifyReport(w io.Writer, r *blob.VerifyReport) error {
	status := "ok"
	if len(r.Problems) > 0 {
		status = fmt.Sprintf("%d problem(s)", len(r.Problems))
	}
	fields := []field{
		{"blobs verified", fmt.Sprint(r.Blobs)},
		{"bytes", fmt.Sprint(r.Bytes)},
		{"status", status},
	}
	for _, p := range r.Problems {
		fields = append(fields, field{"problem", p.Error})
	}
	return writeFields(w, fields)
}

type blobUsage struct {
	Blobs int   `json:"blobs"`
	Bytes int64 `json:"bytes"`
}

func runBlobDu(_ context.Context, opts *blobOptions, args []string, _ io.Reader, stdout, _ io.Writer) error {
	if err := blobArgs(args, 1, 1, "STORE"); err != nil {
		return err
	}
	s, err := openBlobStore(args[0], false)
	if err != nil {
		return err
	}
	defer s.Close()
	names, err := s.List()
	if err != nil {
		return withCode(ExitError, err)
	}
	n, err := s.Usage()
	if err != nil {
		return withCode(ExitError, err)
	}
	u := blobUsage{Blobs: len(names), Bytes: n}
	if opts.JSON {
		return writeJSON(stdout, u)
	}
	return writeFields(stdout, []field{{"blobs", fmt.Sprint(u.Blobs)}, {"bytes", fmt.Sprint(u.Bytes)}})
}
