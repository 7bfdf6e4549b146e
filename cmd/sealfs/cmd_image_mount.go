package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sealfs/sealfs/image"
	"github.com/sealfs/sealfs/image/fusefs"
	"github.com/sealfs/sealfs/registry"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func init() {
	imageSubcommands = append(imageSubcommands, newImageMountCommand, newImageUmountCommand)
}

// imageMountReadyFlag is the hidden flag through which a background mount
// hands its server the write end of the readiness pipe (an inherited fd).
const imageMountReadyFlag = "ready-fd"

// imageMountReadyTimeout bounds the wait for a background server to report:
// a mount never hangs its caller.
const imageMountReadyTimeout = 2 * time.Minute

// imageMountOptions are the flags of `sealfs image mount`.
type imageMountOptions struct {
	Digest     string
	Foreground bool
	AllowOther bool
	Debug      bool
	Log        string
	ReadyFD    int // background server: fd to report "ok" or the error on; -1 if none
	imageSourceOptions
}

func (o *imageMountOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Digest, "digest", "", "trusted root `HEX` ('image build' printed it): check the whole fs-verity chain")
	fs.BoolVarP(&o.Foreground, "foreground", "f", false, "serve in this process until unmounted or until SIGINT, SIGTERM or SIGHUP")
	fs.BoolVar(&o.AllowOther, "allow-other", false, "let other users in (non-root mounts need user_allow_other in /etc/fuse.conf)")
	fs.BoolVar(&o.Debug, "debug", false, "log every FUSE request and reply")
	fs.StringVar(&o.Log, "log", "", "append the server's messages (read failures, --debug) to `FILE` (default: stderr with --foreground, else discarded)")
	fs.IntVar(&o.ReadyFD, imageMountReadyFlag, -1, "")
	_ = fs.MarkHidden(imageMountReadyFlag)
	o.imageSourceOptions.AddFlags(fs)
}

const imageMountLong = `Mount image OCIDIR:TAG read-only on the directory MOUNTPOINT with FUSE,
and return once the mount is ready (or print why it failed and exit
non-zero, with nothing mounted). The server then runs in the background,
detached from the terminal, until 'sealfs image umount MOUNTPOINT' (or
fusermount3 -u). With --foreground it serves in this process instead,
until the mount is unmounted or SIGINT, SIGTERM or SIGHUP unmounts it.

The manifest and the metadata are read and checked before anything is
mounted, against the fs-verity chain when --digest is given, so a wrong
digest, a tampered layout or a missing tag fails at once (exit 4, 5 or 6).
Every byte of file data is then verified as it is read: a chunk that fails
is an I/O error (EIO) for the reads that need it, logged once with its
digest (see --log), and the rest of the image stays readable.

The mount shows the image's inode numbers (hard links share one), modes,
owners, device numbers, symlinks and extended attributes; times are the
epoch, as the format records none. The kernel checks permissions against
the stored modes and owners. Writes fail with EROFS. /proc/mounts lists it
as type fuse.sealfs, source OCIDIR:TAG. Mounting needs /dev/fuse and
fusermount3 (Debian package fuse3).

The image may be in a registry (REGISTRY/REPOSITORY:TAG or @DIGEST): the
mount is then lazy. The manifest and the metadata are fetched and checked
at mount time; each chunk is fetched whole from the registry the first time
a read needs it, checked (sha256, and the fs-verity chain with --digest)
before any byte of it is returned, and kept in the cache directory
(--cache), where later mounts, extracts and pulls find it. A chunk that
fails its check, or cannot be fetched, is EIO for the reads that need it
and is never cached. Without --digest, the image is whatever the registry
says the tag is.
` + registryFlagsHelp

func newImageMountCommand(g *globalOptions) *cobra.Command {
	opts := &imageMountOptions{}
	cmd := &cobra.Command{
		Use:   "mount OCIDIR:TAG|REGISTRY/REPOSITORY:TAG MOUNTPOINT",
		Short: "Mount a PuzzleFS image read-only (FUSE), every read verified",
		Long:  imageMountLong,
		Example: `  sealfs image mount --digest HEX oci:v1 /mnt/v1
  sealfs image mount --log /var/log/sealfs-v2.log oci:v2 /mnt/v2
  sealfs image mount --foreground --debug oci:v1 /mnt/v1
  sealfs image mount --digest HEX --cache /var/cache/sealfs registry.example.com/team/rootfs:v1 /mnt/v1
  sealfs image umount /mnt/v1`,
	}
	opts.AddFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return asRunError(runImageMount(cmd.Context(), opts, args, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()))
	}
	return cmd
}

func newImageUmountCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "umount MOUNTPOINT",
		Short: "Unmount an image mounted with 'image mount'",
		Long: `Unmount the FUSE file system on MOUNTPOINT (with fusermount3 -u); its server
process, in the background or in the foreground, then exits. Fails while
a process still uses the mount (a shell's working directory, an open
file), and when MOUNTPOINT is not a FUSE mount point.`,
		Example: `  sealfs image umount /mnt/v1`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return asRunError(runImageUmount(args))
		},
	}
}

func runImageUmount(args []string) error {
	if err := needArgs(args, "MOUNTPOINT"); err != nil {
		return err
	}
	return withCode(ExitError, fusefs.Unmount(args[0]))
}

func runImageMount(ctx context.Context, o *imageMountOptions, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if err := needArgs(args, "OCIDIR:TAG", "MOUNTPOINT"); err != nil {
		return err
	}
	src := args[0]
	if registry.IsReference(src) {
		if _, err := parseRegistryRef(src, true); err != nil {
			return err
		}
		if o.Cache != "" {
			cache, err := filepath.Abs(o.Cache)
			if err != nil {
				return withCode(ExitError, err)
			}
			o.Cache = cache
		}
	} else {
		dir, tag, err := parseImageRef(src)
		if err != nil {
			return err
		}
		if dir, err = filepath.Abs(dir); err != nil {
			return withCode(ExitError, err)
		}
		src = dir + ":" + tag
	}
	root, err := parseRootDigest(o.Digest)
	if err != nil {
		return err
	}
	if o.ReadyFD >= 0 && !o.Foreground {
		return usageErrorf("--%s is for the background server, with --foreground", imageMountReadyFlag)
	}
	mnt, err := filepath.Abs(args[1])
	if err != nil {
		return withCode(ExitError, err)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if o.Foreground {
		return imageMountServe(ctx, o, src, root, mnt, stdin, stdout, stderr)
	}
	// Check everything the server would, so that mistakes get their exit
	// code here, before a process is started; the server checks again.
	if _, err := openMountImage(ctx, o, src, root, stdin); err != nil {
		return err
	}
	if err := imageMountCheckDir(mnt); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return withCode(ExitError, fmt.Errorf("finding this program to start the server: %w", err))
	}
	return imageMountBackground(o, exe, src, mnt, imageMountReadyTimeout)
}

// openMountImage opens what a mount shows: OCIDIR:TAG (OCIDIR absolute)
// or a registry reference, read lazily through the cache.
func openMountImage(ctx context.Context, o *imageMountOptions, src string, root *image.Digest, stdin io.Reader) (*image.Image, error) {
	if registry.IsReference(src) {
		im, _, err := openRemoteImage(ctx, &o.imageSourceOptions, src, root, stdin)
		return im, err
	}
	dir, tag, err := parseImageRef(src)
	if err != nil {
		return nil, err
	}
	return openImageTag(dir, tag, root)
}

func imageMountCheckDir(mnt string) error {
	st, err := os.Stat(mnt)
	if err != nil {
		return withCode(ExitError, fmt.Errorf("mount point: %w", err))
	}
	if !st.IsDir() {
		return withCode(ExitError, fmt.Errorf("mount point %s is not a directory", mnt))
	}
	return nil
}

// imageMountServe is --foreground: open, mount, report readiness, serve
// until the mount goes away or a signal asks to unmount.
func imageMountServe(ctx context.Context, o *imageMountOptions, src string, root *image.Digest, mnt string, stdin io.Reader, stdout, stderr io.Writer) (err error) {
	var ready *os.File
	if o.ReadyFD >= 0 {
		ready = os.NewFile(uintptr(o.ReadyFD), "ready")
		if ready == nil {
			return usageErrorf("--%s %d: not a file descriptor", imageMountReadyFlag, o.ReadyFD)
		}
		// Keep it from fusermount3, which the mount execs.
		syscall.CloseOnExec(o.ReadyFD)
		defer func() {
			if ready != nil { // not reported yet: report the failure
				if err == nil {
					err = errors.New("the server stopped before mounting")
				}
				msg := strings.ReplaceAll(err.Error(), "\n", " ")
				fmt.Fprintf(ready, "error %d %s\n", exitCode(err), msg)
				ready.Close()
			}
		}()
	}

	// From here on a signal means "unmount", even one that arrives
	// before the mount is ready: it waits in sig.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)

	logTo := stderr
	if o.Log != "" {
		f, err := os.OpenFile(o.Log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return withCode(ExitError, fmt.Errorf("--log: %w", err))
		}
		defer f.Close()
		logTo = f
	}
	im, err := openMountImage(ctx, o, src, root, stdin)
	if err != nil {
		return err
	}
	if err := imageMountCheckDir(mnt); err != nil {
		return err
	}
	srv, err := fusefs.Mount(im, mnt, fusefs.Options{
		FsName:     src,
		Name:       fusefs.DefaultName,
		AllowOther: o.AllowOther,
		Debug:      o.Debug,
		Logger:     log.New(logTo, "sealfs: ", log.LstdFlags),
	})
	if err != nil {
		return imageError(err, ExitError)
	}
	if ready != nil {
		_, werr := io.WriteString(ready, "ok\n")
		ready.Close()
		ready = nil
		if werr != nil {
			// The caller is gone and cannot learn the mount exists.
			return errors.Join(fmt.Errorf("reporting readiness: %w", werr), srv.Unmount())
		}
	} else {
		fmt.Fprintf(stdout, "mounted %s on %s (read-only); stop with Ctrl-C or 'sealfs image umount %s'\n", src, mnt, mnt)
	}

	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	ctxDone := ctx.Done()
	for {
		select {
		case <-done:
			return nil // unmounted from outside
		case <-sig:
		case <-ctxDone:
			ctxDone = nil
		}
		if err := srv.Unmount(); err != nil {
			// Busy: keep serving rather than leave a dead mount behind.
			fmt.Fprintf(logTo, "sealfs: %v; still serving %s\n", err, mnt)
			continue
		}
		<-done
		return nil
	}
}

// imageMountBackground starts exe (this program) again as a --foreground
// server in its own session, and waits until it reports on the pipe at its
// fd 3 that the mount is ready ("ok") or why it failed ("error CODE
// MESSAGE"), at most timeout.
func imageMountBackground(o *imageMountOptions, exe, ref, mnt string, timeout time.Duration) error {
	var err error
	args := []string{"image", "mount", "--foreground", "--" + imageMountReadyFlag + "=3"}
	if o.Digest != "" {
		args = append(args, "--digest", o.Digest)
	}
	if o.AllowOther {
		args = append(args, "--allow-other")
	}
	if o.Debug {
		args = append(args, "--debug")
	}
	if registry.IsReference(ref) {
		args = append(args, o.registryOptions.args()...)
		args = append(args, "--cache="+o.Cache)
	}
	args = append(args, "--", ref, mnt)

	// The server's stderr: the log file, opened here so that a bad path
	// is reported now, or /dev/null.
	var logFile *os.File
	if o.Log != "" {
		if logFile, err = os.OpenFile(o.Log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err != nil {
			return withCode(ExitError, fmt.Errorf("--log: %w", err))
		}
		defer logFile.Close()
	}
	r, w, err := os.Pipe()
	if err != nil {
		return withCode(ExitError, err)
	}
	defer r.Close()
	cmd := exec.Command(exe, args...)
	cmd.Dir = "/" // hold no directory busy
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if logFile != nil {
		cmd.Stderr = logFile
	}
	if o.password != "" {
		// The password travels on the server's stdin, never in its argv.
		cmd.Stdin = strings.NewReader(o.password + "\n")
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return withCode(ExitError, fmt.Errorf("starting the server: %w", err))
	}

	type reply struct {
		line string
		err  error
	}
	got := make(chan reply, 1)
	go func() {
		line, err := bufio.NewReader(io.LimitReader(r, 64<<10)).ReadString('\n')
		got <- reply{line, err}
	}()
	var rep reply
	select {
	case rep = <-got:
	case <-time.After(timeout):
		cmd.Process.Kill()
		cmd.Wait()
		return withCode(ExitError, fmt.Errorf("the server did not report within %v; killed it", timeout))
	}
	line := strings.TrimSuffix(rep.line, "\n")
	if line == "ok" {
		cmd.Process.Release()
		return nil
	}
	if rest, ok := strings.CutPrefix(line, "error "); ok {
		cmd.Wait()
		codeStr, msg, _ := strings.Cut(rest, " ")
		code, err := strconv.Atoi(codeStr)
		if err != nil || code == ExitOK {
			code = ExitError
		}
		return withCode(code, errors.New(msg))
	}
	// No report: the server died before it could say why.
	werr := cmd.Wait()
	hint := "see " + o.Log
	if o.Log == "" {
		hint = "rerun with --foreground or --log FILE to see why"
	}
	return withCode(ExitError, fmt.Errorf("the server exited before mounting (%v); %s", errors.Join(werr, rep.err), hint))
}
