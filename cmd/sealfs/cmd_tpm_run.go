package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/sealfs/sealfs/internal/fusemount"
	"github.com/sealfs/sealfs/tpm"
	"github.com/spf13/cobra"
)

// tpmRunOptions are the flags of `sealfs tpm run`.
type tpmRunOptions struct {
	imageOptions
	ServerPort int
	CtrlPort   int
	CtrlUnix   string
	StateDir   string
	Log        string
}

const tpmRunLong = `Run swtpm (socket --tpm2) on the TPM state in IMAGE's NVRAM store, in the
foreground, until SIGINT, SIGTERM or SIGHUP, or until swtpm stops (for
example 'swtpm_ioctl --tcp 127.0.0.1:CTRL -s'). swtpm listens on 127.0.0.1:
TPM commands on --server-port (TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=P),
control commands on --ctrl-port (tpm2-tools' swtpm TCTI expects it at the
server port + 1). For QEMU, give --ctrl-unix PATH instead of --ctrl-port: a
Unix socket for the control channel, over which QEMU's tpm-emulator backend
passes the TPM command channel (-chardev socket,id=chrtpm,path=PATH
-tpmdev emulator,id=tpm0,chardev=chrtpm); --server-port is then optional. A
socket a killed run left at PATH is replaced. Arguments after -- are added
to swtpm's command line. A line on stdout says when the TPM is ready; when it stops,
the image's new root digest and update counter are printed.

swtpm keeps its state in a private FUSE mount of the store (mode 0700,
under $XDG_RUNTIME_DIR, /run/sealfs or the temporary directory, or
--state-dir), which never holds plaintext on a disk: every state file swtpm
writes is committed to the image in one transaction before the TPM command
that changed it answers, so a persistent key or NV write is durable when
its response arrives, and after a crash or kill -9 at any moment the image
holds the state of the last completed command. SIGTERM stops swtpm, commits
and unmounts. After a kill -9 of the whole process group the next run
detaches the dead mount the killed one left and starts again; a commit cut
in the middle is completed first (as 'sealfs replay' would).

The image must hold TPM state ('sealfs tpm manufacture', or 'tpm import';
exit 6 otherwise); a wrong key is refused before anything runs (exit 3). The
image is locked while the TPM runs. Needs swtpm, /dev/fuse and fusermount3.
` + keyHelp

func newTpmRunCommand(g *globalOptions) *cobra.Command {
	opts := &tpmRunOptions{}
	cmd := &cobra.Command{
		Use:   "run IMAGE (--server-port P --ctrl-port C | --ctrl-unix PATH [--server-port P]) [-- SWTPM-ARGS...]",
		Short: "Run swtpm on the TPM state in the image, every state change committed before it answers",
		Long:  tpmRunLong,
		Example: `  sealfs tpm run -k disk.key disk.img --server-port 2321 --ctrl-port 2322 &
  TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=2321 tpm2_getcap properties-fixed
  sealfs tpm run -k disk.key disk.img --server-port 2321 --ctrl-port 2322 -- --log level=5
  sealfs tpm run -k disk.key disk.img --ctrl-unix /run/vm1/swtpm-sock &
  qemu-system-x86_64 ... -chardev socket,id=chrtpm,path=/run/vm1/swtpm-sock \
      -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0`,
	}
	opts.imageOptions.AddFlags(cmd.Flags())
	f := cmd.Flags()
	f.IntVar(&opts.ServerPort, "server-port", 0, "TCP `PORT` on 127.0.0.1 for TPM commands (required with --ctrl-port)")
	f.IntVar(&opts.CtrlPort, "ctrl-port", 0, "TCP `PORT` on 127.0.0.1 for control commands")
	f.StringVar(&opts.CtrlUnix, "ctrl-unix", "", "Unix socket `PATH` for control commands, instead of --ctrl-port (QEMU's -chardev socket,path=PATH)")
	f.StringVar(&opts.StateDir, "state-dir", "", "mount the state for swtpm on `DIR` (an empty directory; default: a private directory derived from IMAGE's path)")
	f.StringVar(&opts.Log, "log", "", "append swtpm's output and the state mount's messages to `FILE` (default: stderr)")
	cmd.RunE = runE(g, &opts.imageOptions, func(cmd *cobra.Command, args []string) error {
		// Arguments after "--" are swtpm's.
		var extra []string
		if at := cmd.ArgsLenAtDash(); at >= 0 {
			args, extra = args[:at], args[at:]
		}
		return runTpmRun(cmd.Context(), opts, args, extra, cmd.OutOrStdout(), cmd.ErrOrStderr())
	})
	return cmd
}

func runTpmRun(ctx context.Context, opts *tpmRunOptions, args, extra []string, stdout, stderr io.Writer) error {
	if err := needArgs(args, "IMAGE"); err != nil {
		return err
	}
	ports := []int{opts.ServerPort, opts.CtrlPort}
	switch {
	case opts.CtrlUnix != "" && opts.CtrlPort != 0:
		return usageErrorf("give --ctrl-port or --ctrl-unix, not both")
	case opts.CtrlUnix != "":
		ports = ports[:0]
		if opts.ServerPort != 0 {
			ports = append(ports, opts.ServerPort)
		}
	case opts.ServerPort == 0 || opts.CtrlPort == 0:
		return usageErrorf("--server-port and --ctrl-port are required (or --ctrl-unix)")
	case opts.ServerPort == opts.CtrlPort:
		return usageErrorf("--server-port and --ctrl-port must differ")
	}
	for _, p := range ports {
		if p < 1 || p > 65535 {
			return usageErrorf("port %d: want 1 to 65535", p)
		}
	}
	img, err := filepath.Abs(args[0])
	if err != nil {
		return withCode(ExitError, err)
	}
	ctrlUnix := opts.CtrlUnix
	if ctrlUnix != "" {
		if ctrlUnix, err = filepath.Abs(ctrlUnix); err != nil {
			return withCode(ExitError, err)
		}
	}
	logTo, closeLog, err := openServerLog(opts.Log, stderr)
	if err != nil {
		return err
	}
	defer closeLog()
	release, err := lockImage(img, true)
	if err != nil {
		return err
	}
	defer release()
	// We hold the lock: whatever mount of this image exists is a dead
	// one a killed run left.
	stale, err := fusemount.WithSource("fuse."+tpm.MountSubtype, fusemount.Source(img))
	if err != nil {
		return withCode(ExitError, err)
	}
	for _, mnt := range stale {
		fmt.Fprintf(logTo, "sealfs: detaching %s, left mounted by a run that did not stop cleanly\n", mnt)
		if err := fusemount.Unmount(mnt, true); err != nil {
			return withCode(ExitError, fmt.Errorf("detaching the stale state mount: %w", err))
		}
	}
	dir := opts.StateDir
	if dir == "" {
		if dir, err = privateStateDir(img); err != nil {
			return withCode(ExitError, err)
		}
	} else if dir, err = filepath.Abs(dir); err != nil {
		return withCode(ExitError, err)
	}
	if err := detachDead(dir); err != nil {
		return withCode(ExitError, err)
	}
	f, closeFS, err := openFSLocked(&opts.imageOptions, img)
	if err != nil {
		return err
	}
	defer closeFS()
	if f.Replayed() {
		fmt.Fprintf(logTo, "sealfs: completed a transaction a crash had left in the journal\n")
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	var readyErr error
	err = tpm.Run(ctx, f, &tpm.RunOptions{
		StateDir:   dir,
		ServerPort: opts.ServerPort,
		CtrlPort:   opts.CtrlPort,
		CtrlSocket: ctrlUnix,
		ExtraArgs:  extra,
		FsName:     img,
		Output:     logTo,
		Logger:     log.New(logTo, "sealfs: ", log.LstdFlags),
		Ready: func() {
			readyErr = reportTpmReady(stdout, opts.JSON, img, dir, opts.ServerPort, opts.CtrlPort, ctrlUnix)
		},
	})
	switch {
	case errors.Is(err, tpm.ErrNoState):
		return fmt.Errorf("%w; create one with 'sealfs tpm manufacture %s'", err, img)
	case err != nil:
		return mountError(err)
	case readyErr != nil:
		return withCode(ExitError, readyErr)
	}
	return reportCommit(stdout, opts.JSON, "stopped the TPM", hex.EncodeToString(f.RootDigest()), f.UpdateCounter().String())
}

// privateStateDir returns the directory a run of img mounts its state on,
// the same for every run of one image (so a dead mount is found where it
// was left): DIR/sealfs-tpm-UID/HASH, mode 0700, DIR being
// $XDG_RUNTIME_DIR, /run/sealfs for root, or the temporary directory. A
// directory another user made, or one open to others, is refused.
func privateStateDir(img string) (string, error) {
	base := os.Getenv("XDG_RUNTIME_DIR")
	if base == "" {
		base = os.TempDir()
		if st, err := os.Stat("/run"); err == nil && st.IsDir() && os.Getuid() == 0 {
			base = "/run/sealfs"
		}
	}
	sum := sha256.Sum256([]byte(img))
	parent := filepath.Join(base, fmt.Sprintf("sealfs-tpm-%d", os.Getuid()))
	dir := filepath.Join(parent, hex.EncodeToString(sum[:8]))
	if err := detachDead(dir); err != nil {
		return "", err
	}
	for _, d := range []string{base, parent, dir} {
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("state directory: %w", err)
		}
	}
	for _, d := range []string{parent, dir} {
		st, err := os.Lstat(d)
		if err != nil {
			return "", fmt.Errorf("state directory: %w", err)
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !st.IsDir() || st.Mode().Perm() != 0o700 || !ok || int(sys.Uid) != os.Getuid() {
			return "", fmt.Errorf("state directory %s is not a directory of mode 0700 owned by this user; refusing to put TPM state there", d)
		}
	}
	return dir, nil
}

// detachDead lazily unmounts dir if it is a FUSE mount whose server died.
func detachDead(dir string) error {
	if !fusemount.IsDead(dir) {
		return nil
	}
	if err := fusemount.Unmount(dir, true); err != nil {
		return fmt.Errorf("detaching the dead mount on %s: %w", dir, err)
	}
	return nil
}

func reportTpmReady(w io.Writer, asJSON bool, img, dir string, server, ctrl int, ctrlUnix string) error {
	if asJSON {
		return writeJSON(w, struct {
			Result     string `json:"result"`
			Image      string `json:"image"`
			StateDir   string `json:"state_dir"`
			ServerPort int    `json:"server_port,omitempty"`
			CtrlPort   int    `json:"ctrl_port,omitempty"`
			CtrlUnix   string `json:"ctrl_unix,omitempty"`
		}{"running", img, dir, server, ctrl, ctrlUnix})
	}
	where := fmt.Sprintf("127.0.0.1:%d (control 127.0.0.1:%d)", server, ctrl)
	switch {
	case ctrlUnix != "" && server != 0:
		where = fmt.Sprintf("127.0.0.1:%d (control %s)", server, ctrlUnix)
	case ctrlUnix != "":
		where = "control socket " + ctrlUnix
	}
	_, err := fmt.Fprintf(w, "TPM running on %s, state in %s (mounted on %s); stop with Ctrl-C or SIGTERM\n", where, img, dir)
	return err
}
