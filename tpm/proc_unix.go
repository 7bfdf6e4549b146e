//go:build unix

package tpm

import (
	"errors"
	"os/exec"
	"syscall"
	"time"
)

// runGroup runs cmd in a process group of its own and, when it has exited
// or its context is cancelled, kills whatever is left of the group (the
// swtpm that swtpm_setup starts, after a failure), so no process keeps
// using the working directory once it is removed.
func runGroup(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		return err
	}
	err := cmd.Wait()
	pgid := cmd.Process.Pid
	if syscall.Kill(-pgid, syscall.SIGKILL) == nil {
		// Give the kernel a moment to tear the processes down; members
		// reparented to init are reaped there.
		for i := 0; i < 100 && !errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH); i++ {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return err
}
