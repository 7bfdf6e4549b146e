package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/sealfs/sealfs/cocoonfs"
	"github.com/sealfs/sealfs/cocoonfs/fusefs"
	"github.com/sealfs/sealfs/internal/fusemount"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

// mountFlags are the flags shared by 'mount' and 'nvram mount'.
type mountFlags struct {
	ReadOnly   bool
	AllowOther bool
	Debug      bool
	Log        string
}

func (o *mountFlags) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.ReadOnly, "read-only", false, "serve the image read-only (the key is still needed: every read decrypts)")
	fs.BoolVar(&o.AllowOther, "allow-other", false, "let other users in (files stay mode 0600; non-root mounts need user_allow_other in /etc/fuse.conf)")
	fs.BoolVar(&o.Debug, "debug", false, "log every FUSE request and reply")
	fs.StringVar(&o.Log, "log", "", "append the server's messages (failed reads and commits, refused names, --debug) to `FILE` instead of stderr")
}

// mountOptions are the flags of `sealfs mount`.
type mountOptions struct {
	imageOptions
	mountFlags
}

const mountLong = `Mount the CocoonFS image IMAGE on the directory MOUNTPOINT with FUSE and serve
it in the foreground until the mount is unmounted (fusermount3 -u MOUNTPOINT)
or SIGINT, SIGTERM or SIGHUP unmounts it (a second signal detaches a busy
mount lazily). A line on stdout says when the mount is ready; when the server
stops, the image's new root digest and update counter are printed.

The mount is one directory of the image's files, named by inode number in
decimal. Files are read, written at any offset, truncated, renamed and
removed with ordinary tools. A file's changes become one journaled
transaction when it is fsynced or closed, and that call returns only after
the commit is durable: after a crash the image holds each file's last
committed contents. rename and unlink are one transaction each. Creating a
file whose name is not a user inode number (16 or more, canonical decimal)
fails with EINVAL. Every read is authenticated: a block that fails is EIO,
logged, and never returned. stat shows sizes without reading contents;
df shows the image's size and free space.

A wrong key (exit 3), a tampered header or an image that is not CocoonFS
(exit 4, 5), or a journal a crash left pending (exit 7: run 'sealfs replay
IMAGE') are refused before anything is mounted. The image is locked while
mounted: a second mount, nvram mount or tpm run of it is refused. Needs
/dev/fuse and fusermount3 (Debian package fuse3).
` + keyHelp

func newMountCommand(g *globalOptions) *cobra.Command {
	opts := &mountOptions{}
	cmd := &cobra.Command{
		Use:   "mount IMAGE MOUNTPOINT",
		Short: "Mount an image read-write with FUSE: files by inode number, every close durable",
		Long:  mountLong,
		Example: `  sealfs mount -k disk.key disk.img /mnt/disk &
  cp nv.bin /mnt/disk/42 && ls -l /mnt/disk && fusermount3 -u /mnt/disk
  sealfs mount --read-only -k disk.key disk.img /mnt/disk`,
	}
	opts.imageOptions.AddFlags(cmd.Flags())
	opts.mountFlags.AddFlags(cmd.Flags())
	cmd.RunE = runE(g, &opts.imageOptions, func(cmd *cobra.Command, args []string) error {
		return runMount(cmd.Context(), opts, args, cmd.OutOrStdout(), cmd.ErrOrStderr())
	})
	return cmd
}

func runMount(ctx context.Context, opts *mountOptions, args []string, stdout, stderr io.Writer) error {
	if err := needArgs(args, "IMAGE", "MOUNTPOINT"); err != nil {
		return err
	}
	return serveImageMount(ctx, &opts.imageOptions, &opts.mountFlags, args, stdout, stderr,
		func(f *cocoonfs.FS, img, mnt string, logger *log.Logger) (server, error) {
			return fusefs.Mount(f, mnt, fusefs.Options{
				ReadOnly:   opts.ReadOnly,
				FsName:     img,
				AllowOther: opts.AllowOther,
				Debug:      opts.Debug,
				Logger:     logger,
			})
		})
}

// serveImageMount is what mount and nvram mount share: it locks and opens
// IMAGE, has mount serve it on MOUNTPOINT, reports, serves until
// unmounted, and prints the new root digest and counter of a read-write
// mount.
func serveImageMount(ctx context.Context, iopts *imageOptions, mf *mountFlags, args []string, stdout, stderr io.Writer,
	mount func(f *cocoonfs.FS, img, mnt string, logger *log.Logger) (server, error)) error {
	img, mnt, err := mountPaths(args)
	if err != nil {
		return err
	}
	logTo, closeLog, err := openServerLog(mf.Log, stderr)
	if err != nil {
		return err
	}
	defer closeLog()
	release, err := lockImage(img, !mf.ReadOnly)
	if err != nil {
		return err
	}
	defer release()
	f, closeFS, err := openForMount(iopts, img, mf.ReadOnly)
	if err != nil {
		return err
	}
	defer closeFS()
	srv, err := mount(f, img, mnt, log.New(logTo, "sealfs: ", log.LstdFlags))
	if err != nil {
		return mountError(err)
	}
	mode := "read-write"
	if mf.ReadOnly {
		mode = "read-only"
	}
	if err := reportMounted(stdout, iopts.JSON, img, mnt, mode); err != nil {
		srv.Unmount()
		return err
	}
	serveUntilUnmounted(ctx, srv, mnt, logTo)
	if mf.ReadOnly {
		return nil
	}
	return reportCommit(stdout, iopts.JSON, "unmounted "+mnt, hex.EncodeToString(f.RootDigest()), f.UpdateCounter().String())
}

// mountPaths returns the absolute paths of IMAGE and MOUNTPOINT (an
// existing directory).
func mountPaths(args []string) (img, mnt string, err error) {
	if img, err = filepath.Abs(args[0]); err != nil {
		return "", "", withCode(ExitError, err)
	}
	mnt, err = checkMountpoint(args[1])
	return img, mnt, err
}

// mountError classifies a failure to mount: a store that cannot be read
// keeps its code, anything else (FUSE, the mount point) is generic.
func mountError(err error) error {
	switch exitCode(err) {
	case ExitCorrupt, ExitAuthentication:
		return err
	}
	return withCode(ExitError, err)
}

// checkMountpoint returns the absolute path of an existing directory.
func checkMountpoint(path string) (string, error) {
	mnt, err := filepath.Abs(path)
	if err != nil {
		return "", withCode(ExitError, err)
	}
	st, err := os.Stat(mnt)
	if err != nil {
		return "", withCode(ExitError, fmt.Errorf("mount point: %w", err))
	}
	if !st.IsDir() {
		return "", withCode(ExitError, fmt.Errorf("mount point %s is not a directory", mnt))
	}
	return mnt, nil
}

// openServerLog opens --log FILE, or returns stderr.
func openServerLog(path string, stderr io.Writer) (io.Writer, func(), error) {
	if path == "" {
		return stderr, func() {}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, withCode(ExitError, fmt.Errorf("--log: %w", err))
	}
	return f, func() { f.Close() }, nil
}

// openForMount opens the image for a server: read-only, or read-write
// after checking that no journal is pending (the mount commands leave
// replaying to 'sealfs replay', as the read commands do).
func openForMount(o *imageOptions, path string, readOnly bool) (*cocoonfs.FS, func(), error) {
	if readOnly {
		return openFS(o, path)
	}
	if err := checkNoPendingJournal(path); err != nil {
		return nil, nil, err
	}
	return openFSLocked(o, path)
}

// checkNoPendingJournal refuses an image whose journal holds a committed
// transaction not yet applied.
func checkNoPendingJournal(path string) error {
	dev, err := openDevice(path)
	if err != nil {
		return err
	}
	defer dev.Close()
	h, err := cocoonfs.ReadHeaderInfo(dev)
	if err != nil {
		return err
	}
	if h.Kind == cocoonfs.KindFilesystem && h.Journal == "active" {
		return fmt.Errorf("cocoonfs: %w; run 'sealfs replay %s' to apply it, then mount", cocoonfs.ErrPendingJournal, path)
	}
	return nil
}

// lockImage takes an advisory lock on the image file for as long as a
// server uses it: exclusive for a writer, shared for read-only mounts. A
// lock held by another process is refused at once. The kernel drops the
// lock when the process dies, however it dies.
func lockImage(path string, exclusive bool) (func(), error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, withCode(ExitError, err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	if err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err != nil {
		f.Close()
		switch {
		case errors.Is(err, unix.EWOULDBLOCK):
			return nil, withCode(ExitError, fmt.Errorf("%s %w: a 'sealfs mount', 'nvram mount' or 'tpm run' serves it, or another command is changing it", path, errImageInUse))
		case errors.Is(err, unix.ENOLCK), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL):
			return nil, withCode(ExitError, fmt.Errorf("locking %s: %w: %w", path, errLockUnsupported, err))
		}
		return nil, withCode(ExitError, fmt.Errorf("locking %s: %w", path, err))
	}
	return func() { f.Close() }, nil
}

var (
	errImageInUse      = errors.New("is in use")
	errLockUnsupported = errors.New("the file system does not support locks")
)

// reportMounted prints the ready line.
func reportMounted(w io.Writer, asJSON bool, img, mnt, mode string) error {
	if asJSON {
		return writeJSON(w, struct {
			Result     string `json:"result"`
			Image      string `json:"image"`
			Mountpoint string `json:"mountpoint"`
			Mode       string `json:"mode"`
		}{"mounted", img, mnt, mode})
	}
	_, err := fmt.Fprintf(w, "mounted %s on %s (%s); stop with Ctrl-C or 'fusermount3 -u %s'\n", img, mnt, mode, mnt)
	return err
}

// server is a FUSE mount being served.
type server interface {
	Unmount() error
	Wait()
}

// serveUntilUnmounted serves until the mount goes away or a signal (or ctx)
// asks to unmount. A busy mount keeps being served; a second request
// detaches it lazily, and the server stops once the last file closes.
func serveUntilUnmounted(ctx context.Context, srv server, mnt string, logTo io.Writer) {
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	ctxDone := ctx.Done()
	asked := false
	for {
		select {
		case <-done:
			return
		case <-sig:
		case <-ctxDone:
			ctxDone = nil
		}
		if asked {
			fmt.Fprintf(logTo, "sealfs: detaching %s; the server stops when its last open file closes\n", mnt)
			if err := fusemount.Unmount(mnt, true); err != nil {
				fmt.Fprintf(logTo, "sealfs: %v\n", err)
			}
			continue
		}
		asked = true
		if err := srv.Unmount(); err != nil {
			fmt.Fprintf(logTo, "sealfs: %v; still serving %s (signal again to detach it lazily)\n", err, mnt)
			continue
		}
		<-done
		return
	}
}
