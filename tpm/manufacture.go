package tpm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sealfs/sealfs/nvram"
)

// ManufactureOptions tune Manufacture. nil means the zero value: tools from
// PATH, a one-time CA, SHA-256 PCRs, and no overwriting.
type ManufactureOptions struct {
	// SwtpmSetup, Swtpm and SwtpmLocalCA are the programs to run; empty
	// means swtpm_setup, swtpm and swtpm_localca from PATH.
	SwtpmSetup, Swtpm, SwtpmLocalCA string
	// TempDir is where the private working directory is created; empty
	// means /dev/shm when it is writable (tmpfs: the plaintext state stays
	// in memory), else os.TempDir().
	TempDir string
	// CADir is a swtpm-localca state directory whose CA signs the EK and
	// platform certificates (swtpm_localca creates a CA there on first
	// use, and updates its serial number file). Empty means a one-time CA
	// in the working directory, discarded afterwards.
	CADir string
	// PCRBanks are the PCR banks to activate, comma-separated; empty means
	// "sha256".
	PCRBanks string
	// RSAKeySize is the RSA EK's size in bits (2048 or 3072); 0 means
	// swtpm_setup's default, 2048.
	RSAKeySize int
	// Platform certificate fields; empty means "sealfs".
	PlatformManufacturer, PlatformModel, PlatformVersion string
	// Overwrite replaces TPM state the store already holds, giving the
	// TPM a new identity. Without it Manufacture refuses such a store.
	Overwrite bool
}

// ManufactureResult reports what Manufacture stored.
type ManufactureResult struct {
	// Entries are the names of the entries written: the state files and
	// the CA certificates.
	Entries []string
	// StateBytes is the size of the TPM state.
	StateBytes int64
}

// ErrStateExists: the store already holds TPM state and
// ManufactureOptions.Overwrite was not set. It matches fs.ErrExist.
var ErrStateExists = fmt.Errorf("tpm: the store already holds TPM state (%s); manufacturing again would give the TPM a new identity: %w", PermAll, fs.ErrExist)

// Manufacture creates a TPM 2.0 with swtpm_setup — an RSA and an ECC
// endorsement key, their EK certificates and a platform certificate in NV
// indices, the PCR banks activated, the certificate NV indices locked — and
// stores its state in s in one transaction, with the certificates of the CA
// that signed them. The state exists in plaintext only in a private
// temporary directory, which is removed before Manufacture returns, on
// success, on failure and on cancellation of ctx alike.
func Manufacture(ctx context.Context, s *nvram.Store, opts *ManufactureOptions) (res *ManufactureResult, err error) {
	if opts == nil {
		opts = &ManufactureOptions{}
	}
	// Refuse early, before running anything; checked again in the update.
	d, err := s.Snapshot()
	if err != nil {
		return nil, err
	}
	if d.Has(PermAll) && !opts.Overwrite {
		return nil, ErrStateExists
	}
	tools, err := findTools(opts)
	if err != nil {
		return nil, err
	}
	work, err := privateDir(opts.TempDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if rerr := os.RemoveAll(work); rerr != nil && err == nil {
			res, err = nil, fmt.Errorf("tpm: removing the working directory %s (it holds the plaintext TPM state): %w", work, rerr)
		}
	}()
	files, certs, err := runSetup(ctx, work, tools, opts)
	if err != nil {
		return nil, err
	}
	res = &ManufactureResult{}
	err = s.Update(ctx, func(d *nvram.Directory) error {
		*res = ManufactureResult{}
		if d.Has(PermAll) && !opts.Overwrite {
			return ErrStateExists
		}
		for i, name := range StateFiles {
			if files[i] == nil {
				if d.Has(name) {
					if err := d.Remove(name); err != nil {
						return err
					}
				}
				continue
			}
			// A new identity: the entry starts afresh, attributes included.
			if err := d.Put(&nvram.Entry{Name: name, Type: nvram.TypeTPM, Data: files[i]}); err != nil {
				return err
			}
			res.Entries = append(res.Entries, name)
			res.StateBytes += int64(len(files[i]))
		}
		for _, c := range certs {
			if err := d.Put(&nvram.Entry{Name: c.name, Type: TypeCertificate, Data: c.pem}); err != nil {
				return err
			}
			res.Entries = append(res.Entries, c.name)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

type toolPaths struct{ setup, swtpm, localca string }

// findTools resolves the programs, so a missing one is reported by name
// before anything runs.
func findTools(opts *ManufactureOptions) (toolPaths, error) {
	var t toolPaths
	for _, x := range []struct {
		dst        *string
		given, def string
	}{{&t.setup, opts.SwtpmSetup, "swtpm_setup"}, {&t.swtpm, opts.Swtpm, "swtpm"}, {&t.localca, opts.SwtpmLocalCA, "swtpm_localca"}} {
		name := x.given
		if name == "" {
			name = x.def
		}
		p, err := exec.LookPath(name)
		if err != nil {
			return t, fmt.Errorf("tpm: %s is needed to manufacture a TPM (Debian: apt install swtpm swtpm-tools): %w", name, err)
		}
		if p, err = filepath.Abs(p); err != nil {
			return t, fmt.Errorf("tpm: %w", err)
		}
		// swtpm_setup splits --tpm at spaces, and the config files are
		// line-based.
		if strings.ContainsAny(p, " \t\n") {
			return t, fmt.Errorf("tpm: the path %q contains white space, which swtpm_setup cannot pass on: %w", p, fs.ErrInvalid)
		}
		*x.dst = p
	}
	return t, nil
}

// privateDir creates a directory only the caller can read, on tmpfs if
// possible.
func privateDir(parent string) (string, error) {
	candidates := []string{parent}
	if parent == "" {
		candidates = []string{"/dev/shm", os.TempDir()}
	}
	var err error
	for _, p := range candidates {
		var dir string
		if dir, err = os.MkdirTemp(p, "sealfs-tpm-"); err == nil {
			// MkdirTemp uses 0700; make sure no umask or ACL default widened it.
			if err = os.Chmod(dir, 0o700); err != nil {
				os.RemoveAll(dir)
				continue
			}
			return dir, nil
		}
	}
	return "", fmt.Errorf("tpm: creating a private working directory: %w", err)
}

type caCert struct {
	name string
	pem  []byte
}

// runSetup runs swtpm_setup in work and returns the state files (indexed
// like StateFiles, nil where absent) and the CA certificates.
func runSetup(ctx context.Context, work string, tools toolPaths, opts *ManufactureOptions) ([][]byte, []caCert, error) {
	state := filepath.Join(work, "state")
	tmp := filepath.Join(work, "tmp")
	caDir := opts.CADir
	if caDir == "" {
		caDir = filepath.Join(work, "ca")
	} else {
		var err error
		if caDir, err = filepath.Abs(caDir); err != nil {
			return nil, nil, fmt.Errorf("tpm: %w", err)
		}
		if strings.ContainsAny(caDir, " \t\n") {
			return nil, nil, fmt.Errorf("tpm: the CA directory %q contains white space: %w", caDir, fs.ErrInvalid)
		}
	}
	for _, d := range []string{state, tmp, filepath.Join(work, "config")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, nil, fmt.Errorf("tpm: %w", err)
		}
	}
	orDefault := func(s, def string) string {
		if s == "" {
			return def
		}
		return s
	}
	for _, v := range []string{opts.PlatformManufacturer, opts.PlatformModel, opts.PlatformVersion, opts.PCRBanks} {
		if strings.ContainsAny(v, "\n\r") {
			return nil, nil, fmt.Errorf("tpm: option value %q contains a line break: %w", v, fs.ErrInvalid)
		}
	}
	setupConf := filepath.Join(work, "swtpm_setup.conf")
	localcaConf := filepath.Join(work, "swtpm-localca.conf")
	localcaOpts := filepath.Join(work, "swtpm-localca.options")
	for _, f := range []struct{ path, text string }{
		{setupConf, fmt.Sprintf("create_certs_tool = %s\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\n",
			tools.localca, localcaConf, localcaOpts)},
		{localcaConf, fmt.Sprintf("statedir = %s\nsigningkey = %s\nissuercert = %s\ncertserial = %s\n",
			caDir, filepath.Join(caDir, "signkey.pem"), filepath.Join(caDir, "issuercert.pem"), filepath.Join(caDir, "certserial"))},
		{localcaOpts, fmt.Sprintf("--platform-manufacturer %s\n--platform-version %s\n--platform-model %s\n",
			orDefault(opts.PlatformManufacturer, "sealfs"), orDefault(opts.PlatformVersion, "sealfs"), orDefault(opts.PlatformModel, "sealfs"))},
	} {
		if err := os.WriteFile(f.path, []byte(f.text), 0o600); err != nil {
			return nil, nil, fmt.Errorf("tpm: %w", err)
		}
	}
	logFile := filepath.Join(work, "swtpm_setup.log")
	args := []string{"--tpm2", "--tpm", tools.swtpm + " socket", "--tpmstate", state, "--config", setupConf,
		"--createek", "--create-ek-cert", "--create-platform-cert", "--lock-nvram",
		"--pcr-banks", orDefault(opts.PCRBanks, "sha256"), "--logfile", logFile}
	if opts.RSAKeySize != 0 {
		args = append(args, "--rsa-keysize", strconv.Itoa(opts.RSAKeySize))
	}
	cmd := exec.CommandContext(ctx, tools.setup, args...)
	// Everything the tools write goes to work: temporary files, and any
	// per-user configuration they might look for.
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "HOME="+work, "XDG_CONFIG_HOME="+filepath.Join(work, "config"))
	cmd.Dir = work
	// A file, not a pipe: a swtpm left running could hold a pipe open.
	outPath := filepath.Join(work, "swtpm_setup.out")
	out, err := os.OpenFile(outPath, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("tpm: %w", err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	runErr := runGroup(cmd)
	out.Close()
	if runErr != nil {
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("tpm: swtpm_setup: %w", ctx.Err())
		}
		log, _ := os.ReadFile(logFile)
		msg, _ := os.ReadFile(outPath)
		return nil, nil, fmt.Errorf("tpm: swtpm_setup failed (%v): %s", runErr, tail(append(log, msg...), 12))
	}
	files := make([][]byte, len(StateFiles))
	for i, name := range StateFiles {
		b, err := readStateFile(filepath.Join(state, name))
		if errors.Is(err, fs.ErrNotExist) && name != PermAll {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("tpm: swtpm_setup left no usable state: %w", err)
		}
		files[i] = b
	}
	var certs []caCert
	for _, c := range []struct{ entry, file string }{
		{CARootEntry, "swtpm-localca-rootca-cert.pem"}, {CAIssuerEntry, "issuercert.pem"},
	} {
		b, err := os.ReadFile(filepath.Join(caDir, c.file))
		if errors.Is(err, fs.ErrNotExist) && c.entry == CARootEntry && opts.CADir != "" {
			continue // a CA directory set up by hand may hold only the issuer
		}
		if err != nil {
			return nil, nil, fmt.Errorf("tpm: reading the CA certificate: %w", err)
		}
		certs = append(certs, caCert{c.entry, b})
	}
	return files, certs, nil
}

// tail returns the last n lines of b, for error messages.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
