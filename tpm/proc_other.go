//go:build !unix

package tpm

import "os/exec"

// runGroup runs cmd; without Unix process groups, cancellation kills
// swtpm_setup alone.
func runGroup(cmd *exec.Cmd) error { return cmd.Run() }
