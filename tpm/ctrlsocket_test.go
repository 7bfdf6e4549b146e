package tpm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sealfs/sealfs/internal/testutil"
	"golang.org/x/sys/unix"
)

// cmdSetDataFD is swtpm's control command that hands it the TPM command
// channel as a file descriptor (tpm_ioctl.h, CMD_SET_DATAFD).
const cmdSetDataFD = 0x10

// TestRunControlSocket drives Run's Unix control socket the way QEMU's
// tpm-emulator backend does: connect, pass one end of a socket pair with
// CMD_SET_DATAFD, then send TPM commands through the other end. A stale
// socket at the path is replaced first; a regular file there is refused;
// the socket is gone after Run returns.
func TestRunControlSocket(t *testing.T) {
	testutil.RequireFUSE(t)
	for _, tool := range []string{"swtpm", "swtpm_setup", "swtpm_localca"} {
		testutil.RequireTool(t, tool)
	}
	ctx := context.Background()
	s, f := newStore(t)
	work := filepath.Join(t.TempDir(), "private")
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Manufacture(ctx, s, &ManufactureOptions{TempDir: work}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "ctrl.sock")

	// A regular file where the socket goes is not touched.
	mustWrite(t, sock)
	if err := Run(ctx, f, &RunOptions{StateDir: state, CtrlSocket: sock}); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Run over a regular file: %v", err)
	}
	os.Remove(sock)
	// A socket nobody listens on (a killed run's) is replaced.
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()

	runCtx, stop := context.WithCancel(ctx)
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(runCtx, f, &RunOptions{StateDir: state, CtrlSocket: sock, Ready: func() { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("swtpm not ready after 30 s")
	}

	ctrl, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.Close()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(pair[0], true); err != nil { // so read deadlines work
		t.Fatal(err)
	}
	ours := os.NewFile(uintptr(pair[0]), "tpm data")
	defer ours.Close()
	msg := binary.BigEndian.AppendUint32(nil, cmdSetDataFD)
	if _, _, err := ctrl.(*net.UnixConn).WriteMsgUnix(msg, unix.UnixRights(pair[1]), nil); err != nil {
		t.Fatal(err)
	}
	unix.Close(pair[1])
	var res [4]byte
	ctrl.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(ctrl, res[:]); err != nil {
		t.Fatal(err)
	}
	if rc := binary.BigEndian.Uint32(res[:]); rc != 0 {
		t.Fatalf("CMD_SET_DATAFD: result %#x", rc)
	}

	// TPM2_GetRandom(8): tag TPM_ST_NO_SESSIONS, size 12, command code 0x17b.
	getRandom := []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8}
	if _, err := ours.Write(getRandom); err != nil {
		t.Fatal(err)
	}
	ours.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp := make([]byte, 20)
	if _, err := io.ReadFull(ours, resp); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resp[:10], []byte{0x80, 0x01, 0, 0, 0, 20, 0, 0, 0, 0}) || binary.BigEndian.Uint16(resp[10:]) != 8 {
		t.Fatalf("TPM2_GetRandom response % x", resp)
	}

	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run after stop: %v", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("control socket left behind: %v", err)
	}
}
