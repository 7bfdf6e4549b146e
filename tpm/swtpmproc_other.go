//go:build !linux

package tpm

import "syscall"

// deathSignal: only Linux has a parent-death signal; elsewhere swtpm dies
// with the process group.
func deathSignal() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
