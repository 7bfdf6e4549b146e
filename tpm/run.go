package tpm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/sealfs/sealfs/cocoonfs"
	"github.com/sealfs/sealfs/nvram"
	nvramfuse "github.com/sealfs/sealfs/nvram/fusefs"
)

// LockFile is the file swtpm creates in its state directory and holds an
// fcntl lock on while it runs. It carries no state, so Run keeps it in
// memory only.
const LockFile = ".lock"

// tempPrefix starts the names of the temporary files swtpm writes a state
// file to before renaming it over the real one ("TMP2-00.permall").
const tempPrefix = "TMP2-"

// StateEntryType returns the entry type of a file swtpm writes to its
// state directory: nvram.TypeTPM for its state files and their
// temporaries, "" (the store's default) for anything else.
func StateEntryType(name string) string {
	if strings.HasPrefix(name, "tpm2-") || strings.HasPrefix(name, tempPrefix) {
		return nvram.TypeTPM
	}
	return ""
}

// MountSubtype is the FUSE subtype of the state directory Run mounts: it
// shows as type "fuse.sealfs-tpm".
const MountSubtype = "sealfs-tpm"

// RunOptions configure Run.
type RunOptions struct {
	// StateDir is the directory the store is mounted on for swtpm: an
	// existing, empty, private directory.
	StateDir string
	// ServerPort and CtrlPort are the TCP ports on 127.0.0.1 where swtpm
	// takes TPM commands and control commands.
	ServerPort, CtrlPort int
	// CtrlSocket, instead of CtrlPort, is the path of a Unix socket for the
	// control channel: what QEMU's tpm-emulator backend needs (-chardev
	// socket,path=CtrlSocket), since it passes the TPM command channel to
	// swtpm as a file descriptor over it (CMD_SET_DATAFD). ServerPort is
	// then optional. A socket a killed run left at the path is replaced;
	// one that something listens on is refused.
	CtrlSocket string
	// ExtraArgs are appended to swtpm's command line.
	ExtraArgs []string
	// Swtpm is the swtpm program; default "swtpm" from $PATH.
	Swtpm string
	// FsName is the state mount's source (/proc/mounts), e.g. the image's
	// path, so that a mount a killed run left behind can be found.
	FsName string
	// Output receives swtpm's output (default: discarded). Logger receives
	// the state mount's messages (default: standard error).
	Output io.Writer
	Logger *log.Logger
	// Ready is called once swtpm accepts connections.
	Ready func()
	// StopTimeout bounds the wait for swtpm to exit after SIGTERM before
	// it is killed; default 10 s.
	StopTimeout time.Duration
}

// ErrSwtpmExited: swtpm stopped on its own with a failure.
var ErrSwtpmExited = errors.New("tpm: swtpm exited")

// Run runs swtpm socket --tpm2 on the TPM state in fsys's NVRAM store until
// ctx is done or swtpm exits, then stops swtpm (SIGTERM), and unmounts the
// state directory, every change committed. fsys must be open read-write
// and the store must hold TPM state (ErrNoState otherwise).
//
// The store is mounted on StateDir with package nvram/fusefs, and swtpm
// keeps its state there with --tpmstate dir=StateDir. swtpm stores a state
// file by writing a temporary file, fsyncing it, renaming it over the
// state file and fsyncing the directory before it answers the command:
// the fsync commits the temporary entry and the rename replaces the state
// entry in one transaction, so a command that changed persistent state
// (TPM2_EvictControl, an NV write) is durable in the image when its
// response arrives, and after a crash or kill at any moment the image
// holds the state of the last completed command. The temporary entry a
// crash between those steps can leave behind is removed when Run starts.
// swtpm's .lock file lives in memory only.
//
// swtpm runs in Run's process group (so that killing the group kills
// both) and is killed if the goroutine that started it dies with the
// process (Linux's parent-death signal).
func Run(ctx context.Context, fsys *cocoonfs.FS, opts *RunOptions) (err error) {
	if opts == nil || opts.StateDir == "" {
		return fmt.Errorf("tpm: Run needs a state directory: %w", fs.ErrInvalid)
	}
	if err := checkChannels(opts); err != nil {
		return err
	}
	store, err := nvram.Open(fsys, &nvram.Options{Create: true})
	if err != nil {
		return err
	}
	d, err := store.Snapshot()
	if err != nil {
		return err
	}
	if !d.Has(PermAll) {
		return ErrNoState
	}
	if err := removeTemporaries(ctx, store, d); err != nil {
		return err
	}
	swtpm := opts.Swtpm
	if swtpm == "" {
		if swtpm, err = exec.LookPath("swtpm"); err != nil {
			return fmt.Errorf("tpm: swtpm is needed to run the TPM (Debian package swtpm): %w", err)
		}
	}
	if ents, err := os.ReadDir(opts.StateDir); err != nil {
		return fmt.Errorf("tpm: state directory: %w", err)
	} else if len(ents) > 0 {
		return fmt.Errorf("tpm: state directory %s is not empty: %w", opts.StateDir, fs.ErrExist)
	}

	srv, err := nvramfuse.Mount(fsys, opts.StateDir, nvramfuse.Options{
		FsName:     opts.FsName,
		Name:       MountSubtype,
		Logger:     opts.Logger,
		Type:       StateEntryType,
		MemoryOnly: func(name string) bool { return name == LockFile },
	})
	if err != nil {
		return err
	}
	defer func() {
		if uerr := unmountRetrying(srv); uerr != nil {
			err = errors.Join(err, uerr)
		}
	}()

	args := []string{"socket", "--tpm2", "--tpmstate", "dir=" + opts.StateDir}
	var listening []endpoint
	if opts.CtrlSocket != "" {
		if err := removeStaleSocket(opts.CtrlSocket); err != nil {
			return err
		}
		defer removeStaleSocket(opts.CtrlSocket)
		args = append(args, "--ctrl", "type=unixio,path="+opts.CtrlSocket)
		listening = append(listening, endpoint{"unix", opts.CtrlSocket})
	} else {
		args = append(args, "--ctrl", "type=tcp,port="+strconv.Itoa(opts.CtrlPort)+",bindaddr=127.0.0.1")
		listening = append(listening, endpoint{"tcp", localPort(opts.CtrlPort)})
	}
	if opts.ServerPort != 0 {
		args = append(args, "--server", "type=tcp,port="+strconv.Itoa(opts.ServerPort)+",bindaddr=127.0.0.1")
		listening = append(listening, endpoint{"tcp", localPort(opts.ServerPort)})
	}
	args = append(args, "--flags", "not-need-init,startup-clear")
	args = append(args, opts.ExtraArgs...)
	p, err := launchSwtpm(swtpm, args, opts.Output)
	if err != nil {
		return fmt.Errorf("tpm: starting swtpm: %w", err)
	}
	if err := waitListening(ctx, p, listening...); err != nil {
		p.stop(opts.StopTimeout)
		return err
	}
	if opts.Ready != nil {
		opts.Ready()
	}
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("%w: %v", ErrSwtpmExited, p.err)
		}
		return nil // shut down through its control channel
	case <-ctx.Done():
		return p.stop(opts.StopTimeout)
	}
}

// removeTemporaries removes the entries of temporary files a killed run
// left: swtpm never got to rename them, so they hold no state the TPM
// answered for.
func removeTemporaries(ctx context.Context, store *nvram.Store, d *nvram.Directory) error {
	var stale []string
	for _, in := range d.List() {
		if strings.HasPrefix(in.Name, tempPrefix) {
			stale = append(stale, in.Name)
		}
	}
	if len(stale) == 0 {
		return nil
	}
	return store.Remove(ctx, stale...)
}

// checkChannels checks the ports and socket Run is to give swtpm.
func checkChannels(opts *RunOptions) error {
	validPort := func(p int) bool { return p > 0 && p <= 65535 }
	switch {
	case opts.CtrlSocket != "" && opts.CtrlPort != 0:
		return fmt.Errorf("tpm: a control port and a control socket: want one: %w", fs.ErrInvalid)
	case opts.CtrlSocket != "":
		if opts.ServerPort != 0 && !validPort(opts.ServerPort) {
			return fmt.Errorf("tpm: server port %d: want a TCP port: %w", opts.ServerPort, fs.ErrInvalid)
		}
	case !validPort(opts.ServerPort) || !validPort(opts.CtrlPort) || opts.ServerPort == opts.CtrlPort:
		return fmt.Errorf("tpm: ports %d and %d: want two different TCP ports: %w", opts.ServerPort, opts.CtrlPort, fs.ErrInvalid)
	}
	return nil
}

// removeStaleSocket removes a Unix socket at path that nothing listens on
// (a killed run's); anything else at path is an error.
func removeStaleSocket(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tpm: control socket: %w", err)
	}
	if st.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("tpm: control socket %s: %w (and is not a socket)", path, fs.ErrExist)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("tpm: control socket %s: something listens on it: %w", path, fs.ErrExist)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("tpm: control socket: %w", err)
	}
	return nil
}

// endpoint is where swtpm is to listen.
type endpoint struct{ network, addr string }

func localPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// waitListening waits until swtpm accepts connections on every endpoint.
func waitListening(ctx context.Context, p *swtpmProc, endpoints ...endpoint) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, e := range endpoints {
		addr := e.addr
		for {
			c, err := net.DialTimeout(e.network, addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-p.done:
				return fmt.Errorf("%w before it listened on %s: %v", ErrSwtpmExited, addr, p.err)
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("tpm: swtpm does not listen on %s after 30s", addr)
			}
		}
	}
	return nil
}

// unmountRetrying unmounts the state directory; swtpm's files may take a
// moment to be released after it exits.
func unmountRetrying(srv *nvramfuse.Server) error {
	var err error
	for range 50 {
		if err = srv.Unmount(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}
