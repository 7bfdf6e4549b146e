package tpm

import "syscall"

// deathSignal makes the kernel kill swtpm when the thread that started it
// (and so this process) dies.
func deathSignal() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
