package tpm

import (
	"io"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// swtpmProc is a running swtpm.
type swtpmProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // swtpm's exit, after done
}

// startSwtpm starts swtpm with its output to out (nil: discarded). The
// goroutine that starts it keeps its OS thread until swtpm has exited: the
// parent-death signal (SIGKILL, on Linux) fires when that thread ends, so
// swtpm dies with this process however the process dies.
func launchSwtpm(path string, args []string, out io.Writer) (*swtpmProc, error) {
	p := &swtpmProc{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd := exec.Command(path, args...)
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = deathSignal()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.cmd = cmd
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// stop asks swtpm to exit (SIGTERM), kills it after timeout (default 10 s)
// and waits for it.
func (p *swtpmProc) stop(timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	select {
	case <-p.done:
		return nil
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
	}
	return nil
}
