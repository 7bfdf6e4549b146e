package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sealfs/sealfs/tpm"
	"github.com/spf13/cobra"
)

// tpmOptions are the flags of the tpm subcommands (manufacture uses the
// rest).
type tpmOptions struct {
	imageOptions
	Overwrite  bool
	CADir      string
	TempDir    string
	PCRBanks   string
	RSAKeySize int
}

const tpmLong = `A software TPM 2.0 (swtpm) whose state lives in the image's NVRAM store
(see 'sealfs nvram'): each of swtpm's state files (tpm2-00.permall,
tpm2-00.volatilestate, tpm2-00.savestate) is an entry of type "tpm" with the
same name.

manufacture creates the TPM with swtpm_setup — endorsement keys, EK and
platform certificates, PCR banks — offline, before the image first boots.
export writes the state files for 'swtpm --tpmstate dir=DIR'; import stores
them back in one transaction. A wrong key is refused before anything is
written. Needs swtpm and swtpm_setup (Debian: swtpm, swtpm-tools).`

func newTpmCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tpm",
		Short: "Manufacture a vTPM into an image; export and import its state for swtpm",
		Long:  tpmLong,
		Example: `  sealfs tpm manufacture -k disk.key disk.img
  sealfs tpm export -k disk.key disk.img /run/vtpm && swtpm socket --tpm2 --tpmstate dir=/run/vtpm ...
  sealfs tpm import -k disk.key disk.img /run/vtpm`,
	}
	man := newTpmSub(g, "manufacture IMAGE", "Create a TPM 2.0 and store its state in the image", `Run swtpm_setup --tpm2 to create a TPM 2.0 with an RSA and an ECC endorsement
key, their EK certificates and a platform certificate (in NV indices, locked),
and store its state in IMAGE's NVRAM store in one transaction, together with
the certificates of the CA that signed them (entries tpm-ca-root.pem and
tpm-ca-issuer.pem, type x509-pem).

The plaintext state exists only in a private directory (mode 0700, under
/dev/shm when available, else the system's temporary directory, or
--temp-dir), which is removed whether manufacturing succeeds, fails or is
interrupted (SIGINT, SIGTERM). swtpm_setup's configuration is generated
there; nothing is read from /etc or written to /var/lib or the home
directory. Without --ca-dir the certificates are signed by a one-time CA
created in that directory, whose private key is discarded with it. An image
that already holds TPM state is refused unless --overwrite is given (the TPM
would get a new identity). Prints the entries stored and the new root digest
and update counter.
`+keyHelp, runTpmManufacture)
	f := man.cmd.Flags()
	f.BoolVar(&man.opts.Overwrite, "overwrite", false, "replace TPM state the image already holds (a new TPM identity)")
	f.StringVar(&man.opts.CADir, "ca-dir", "", "sign with the swtpm-localca CA in `DIR` (created there on first use) instead of a one-time CA")
	f.StringVar(&man.opts.TempDir, "temp-dir", "", "create the private working directory in `DIR` (default /dev/shm, else $TMPDIR)")
	f.StringVar(&man.opts.PCRBanks, "pcr-banks", "sha256", "PCR `BANKS` to activate, comma-separated (sha1,sha256,sha384,sha512)")
	f.IntVar(&man.opts.RSAKeySize, "rsa-keysize", 2048, "size of the RSA endorsement key in `BITS` (2048 or 3072)")
	exp := newTpmSub(g, "export IMAGE DIR", "Write the TPM state files for swtpm --tpmstate dir=DIR", `Write the TPM state held in IMAGE to DIR (created with mode 0700 if missing):
each state file is written to a temporary file and renamed into place (mode
0600), and state files IMAGE does not hold are removed from DIR, so
'swtpm socket --tpm2 --tpmstate dir=DIR' runs on exactly the stored state.
Exit 6 if IMAGE holds no TPM state.
`+keyHelp, runTpmExport)
	imp := newTpmSub(g, "import IMAGE DIR", "Store swtpm's state files back in the image", `Store the TPM state files in DIR (tpm2-00.permall, which must exist, and
tpm2-00.volatilestate and tpm2-00.savestate if present) in IMAGE in one
transaction; stored state files that DIR no longer has are removed in the same
transaction. Stop swtpm first. Prints the new root digest and update counter.
`+keyHelp, runTpmImport)
	cmd.AddCommand(man.cmd, exp.cmd, imp.cmd, newTpmRunCommand(g))
	return cmd
}

type tpmRunFunc func(ctx context.Context, opts *tpmOptions, args []string, stdout io.Writer) error

type tpmSub struct {
	cmd  *cobra.Command
	opts *tpmOptions
}

func newTpmSub(g *globalOptions, use, short, long string, run tpmRunFunc) tpmSub {
	opts := &tpmOptions{}
	cmd := &cobra.Command{Use: use, Short: short, Long: long}
	opts.imageOptions.AddFlags(cmd.Flags())
	cmd.RunE = runE(g, &opts.imageOptions, func(cmd *cobra.Command, args []string) error {
		return run(cmd.Context(), opts, args, cmd.OutOrStdout())
	})
	return tpmSub{cmd, opts}
}

// tpmResult is the JSON (and text) report of a tpm command.
type tpmResult struct {
	Result        string   `json:"result"`
	Entries       []string `json:"entries"`
	Removed       []string `json:"removed,omitempty"`
	Bytes         int64    `json:"bytes"`
	RootDigest    string   `json:"root_digest,omitempty"`
	UpdateCounter string   `json:"update_counter,omitempty"`
}

func (r *tpmResult) write(w io.Writer, asJSON bool) error {
	if r.Entries == nil {
		r.Entries = []string{}
	}
	if asJSON {
		return writeJSON(w, r)
	}
	fields := []field{{"result", r.Result}, {"entries", strings.Join(r.Entries, " ")}}
	if len(r.Removed) > 0 {
		fields = append(fields, field{"removed", strings.Join(r.Removed, " ")})
	}
	if r.RootDigest != "" {
		fields = append(fields, field{"root digest", r.RootDigest}, field{"update counter", r.UpdateCounter})
	}
	return writeFields(w, fields)
}

// dirError gives errors about DIR's files (missing, unreadable,
// unwritable) the generic code, so that a missing file is not mistaken for
// a missing entry of the image.
func dirError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return withCode(ExitError, err)
	}
	return err
}

func runTpmManufacture(ctx context.Context, opts *tpmOptions, args []string, stdout io.Writer) error {
	if err := needArgs(args, "IMAGE"); err != nil {
		return err
	}
	if opts.RSAKeySize != 2048 && opts.RSAKeySize != 3072 {
		return usageErrorf("--rsa-keysize: %d is not 2048 or 3072", opts.RSAKeySize)
	}
	// Interrupted, the library still kills swtpm_setup and removes the
	// plaintext state before returning.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The image is opened first: a wrong key fails before anything runs.
	s, f, closeFS, err := openStore(&opts.imageOptions, args[0], true)
	if err != nil {
		return err
	}
	defer closeFS()
	res, err := tpm.Manufacture(ctx, s, &tpm.ManufactureOptions{
		TempDir: opts.TempDir, CADir: opts.CADir, PCRBanks: opts.PCRBanks, RSAKeySize: opts.RSAKeySize, Overwrite: opts.Overwrite,
	})
	switch {
	case errors.Is(err, tpm.ErrStateExists):
		return withCode(ExitError, fmt.Errorf("%w (pass --overwrite)", err))
	case err != nil:
		return err
	}
	return (&tpmResult{
		Result:  fmt.Sprintf("manufactured a TPM 2.0 (%d bytes of state)", res.StateBytes),
		Entries: res.Entries, Bytes: res.StateBytes,
		RootDigest: hex.EncodeToString(f.RootDigest()), UpdateCounter: f.UpdateCounter().String(),
	}).write(stdout, opts.JSON)
}

func runTpmExport(_ context.Context, opts *tpmOptions, args []string, stdout io.Writer) error {
	if err := needArgs(args, "IMAGE", "DIR"); err != nil {
		return err
	}
	s, _, closeFS, err := openStore(&opts.imageOptions, args[0], false)
	if err != nil {
		return err
	}
	defer closeFS()
	res, err := tpm.Export(s, args[1])
	if err != nil {
		return dirError(err)
	}
	return (&tpmResult{
		Result:  fmt.Sprintf("exported %d bytes of TPM state to %s", res.Bytes, args[1]),
		Entries: res.Files, Removed: res.Removed, Bytes: res.Bytes,
	}).write(stdout, opts.JSON)
}

func runTpmImport(ctx context.Context, opts *tpmOptions, args []string, stdout io.Writer) error {
	if err := needArgs(args, "IMAGE", "DIR"); err != nil {
		return err
	}
	s, f, closeFS, err := openStore(&opts.imageOptions, args[0], true)
	if err != nil {
		return err
	}
	defer closeFS()
	res, err := tpm.Import(ctx, s, args[1])
	if err != nil {
		return dirError(err)
	}
	return (&tpmResult{
		Result:  fmt.Sprintf("imported %d bytes of TPM state from %s", res.Bytes, args[1]),
		Entries: res.Entries, Removed: res.Removed, Bytes: res.Bytes,
		RootDigest: hex.EncodeToString(f.RootDigest()), UpdateCounter: f.UpdateCounter().String(),
	}).write(stdout, opts.JSON)
}
