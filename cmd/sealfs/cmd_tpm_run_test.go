package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealfs/sealfs/internal/fusemount"
	"github.com/sealfs/sealfs/internal/testutil"
)

// freePorts returns two free TCP ports on 127.0.0.1, P and P+1: the
// swtpm TCTI of tpm2-tools expects the control port right after the
// server port.
func freePorts(t *testing.T) []int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		l.Close()
		if err == nil {
			l2.Close()
			return []int{p, p + 1}
		}
	}
	t.Fatal("no two consecutive free ports")
	return nil
}

// tpmRun is a `sealfs tpm run` under test.
type tpmRun struct {
	t             *testing.T
	img, key, xdg string
	server, ctrl  int
	p             *serverProc
	work          string
}

func newTpmRun(t *testing.T) *tpmRun {
	t.Helper()
	testutil.RequireFUSE(t)
	for _, tool := range []string{"swtpm", "swtpm_setup", "swtpm_localca", "tpm2_createprimary", "tpm2_evictcontrol", "tpm2_readpublic", "tpm2_nvdefine", "tpm2_nvwrite", "tpm2_nvread"} {
		testutil.RequireTool(t, tool)
	}
	img, key := newKeyedImage(t)
	mustRun(t, ExitOK, `manufactured`, "tpm", "manufacture", "-k", key, "--temp-dir", t.TempDir(), img)
	ports := freePorts(t)
	// A private runtime directory: the state mount goes there.
	xdg := filepath.Join(t.TempDir(), "run")
	os.Mkdir(xdg, 0o700)
	// Runs after the servers are killed (cleanups run last first), before
	// the temporary directories are removed: a dead state mount must go.
	t.Cleanup(func() {
		for _, line := range tpmMounts(t, img) {
			if f := strings.Fields(line); len(f) > 4 {
				fusemount.Unmount(f[4], true)
			}
		}
	})
	return &tpmRun{t: t, img: img, key: key, xdg: xdg, server: ports[0], ctrl: ports[1], work: t.TempDir()}
}

// start runs `sealfs tpm run` and waits until it is ready.
func (r *tpmRun) start() string {
	r.t.Helper()
	p, ready := startServerEnv(r.t, "", []string{"XDG_RUNTIME_DIR=" + r.xdg},
		"tpm", "run", "-k", r.key, r.img, "--server-port", fmt.Sprint(r.server), "--ctrl-port", fmt.Sprint(r.ctrl))
	if !strings.HasPrefix(ready, fmt.Sprintf("TPM running on 127.0.0.1:%d (control 127.0.0.1:%d)", r.server, r.ctrl)) {
		r.t.Fatalf("ready line: %q", ready)
	}
	r.p = p
	return ready
}

// kill kills the whole process group with SIGKILL and waits for it.
func (r *tpmRun) kill() {
	r.t.Helper()
	syscall.Kill(-r.p.cmd.Process.Pid, syscall.SIGKILL)
	r.p.wait(r.t)
	waitGroupGone(r.t, r.p.cmd.Process.Pid)
}

// waitGroupGone waits until no process of the group is left.
func waitGroupGone(t *testing.T, pgid int) {
	t.Helper()
	for i := 0; !errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH); i++ {
		if i == 500 {
			t.Fatalf("process group %d still has members", pgid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tpm2 runs a tpm2-tools command against the running TPM.
func (r *tpmRun) tpm2(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = r.work
	cmd.Env = append(os.Environ(), fmt.Sprintf("TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=%d", r.server))
	return cmd.CombinedOutput()
}

func (r *tpmRun) mustTPM2(name string, args ...string) []byte {
	r.t.Helper()
	out, err := r.tpm2(name, args...)
	if err != nil {
		r.t.Fatalf("%s %s: %v\n%s\nserver:\n%s", name, strings.Join(args, " "), err, out, r.p.stderr)
	}
	return out
}

const nvIndex = "0x1500016"

// TestTpmRunKill persists a key and writes an NV index through `tpm run`,
// kills the whole process group with SIGKILL, checks that the image is
// readable and verifies while the dead mount is still there, runs again
// (which detaches the dead mount) and finds the key and the NV data. Then
// SIGTERM stops it cleanly.
func TestTpmRunKill(t *testing.T) {
	r := newTpmRun(t)
	r.start()
	r.mustTPM2("tpm2_createprimary", "-Q", "-C", "o", "-c", "primary.ctx")
	r.mustTPM2("tpm2_evictcontrol", "-C", "o", "-c", "primary.ctx", "0x81000001")
	r.mustTPM2("tpm2_readpublic", "-Q", "-c", "0x81000001", "-o", "before.pub")
	r.mustTPM2("tpm2_nvdefine", nvIndex, "-C", "o", "-s", "32", "-a", "ownerread|ownerwrite")
	data := filepath.Join(r.work, "nv.bin")
	os.WriteFile(data, []byte("written just before the kill -9 "), 0o600)
	r.mustTPM2("tpm2_nvwrite", nvIndex, "-C", "o", "-i", data)
	r.kill()

	// The image is consistent without a server: list, verify, read.
	mustRun(t, ExitOK, `(?m)^tpm2-00.permall tpm \d+$`, "nvram", "ls", "-k", r.key, r.img)
	mustRun(t, ExitOK, `status: +ok`, "verify", "-k", r.key, r.img)

	r.start()
	if !strings.Contains(r.p.stderr.String(), "detaching") {
		t.Errorf("the second run did not say it detached the dead mount:\n%s", r.p.stderr)
	}
	r.mustTPM2("tpm2_readpublic", "-Q", "-c", "0x81000001", "-o", "after.pub")
	if !bytes.Equal(mustReadFile(t, filepath.Join(r.work, "before.pub")), mustReadFile(t, filepath.Join(r.work, "after.pub"))) {
		t.Fatal("the persistent key changed across the kill")
	}
	got := r.mustTPM2("tpm2_nvread", nvIndex, "-C", "o", "-s", "32")
	if !bytes.Equal(got, mustReadFile(t, data)) {
		t.Fatalf("NV index after the kill: %q", got)
	}

	if err := r.p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := r.p.wait(t); code != ExitOK {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, r.p.stderr)
	}
	waitGroupGone(t, r.p.cmd.Process.Pid)
	if rest := r.p.rest(); !strings.Contains(rest, "stopped the TPM") {
		t.Fatalf("final report: %q", rest)
	}
	if mounts := tpmMounts(t, r.img); len(mounts) != 0 {
		t.Fatalf("still mounted after SIGTERM: %v", mounts)
	}
	// The state is there for export too, and no temporary entry is left.
	out := mustRun(t, ExitOK, ``, "nvram", "ls", "-k", r.key, r.img)
	if strings.Contains(out, "TMP2") || strings.Contains(out, ".lock") {
		t.Fatalf("store holds swtpm's temporary files:\n%s", out)
	}
	mustRun(t, ExitOK, `tpm2-00.permall`, "tpm", "export", "-k", r.key, r.img, filepath.Join(t.TempDir(), "export"))
}

// tpmMounts lists the state mounts of img.
func tpmMounts(t *testing.T, img string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, " fuse.sealfs-tpm "+img+" ") {
			out = append(out, line)
		}
	}
	return out
}

// TestTpmRunKillLoop writes an NV index in a loop and kills the process
// group at a random moment: after a restart the index holds the last
// value whose write completed, or the one in flight, never anything else.
// make test runs two rounds; SEALFS_LONG=1 ten.
func TestTpmRunKillLoop(t *testing.T) {
	r := newTpmRun(t)
	rounds := 2
	if os.Getenv("SEALFS_LONG") != "" {
		rounds = 10
	}
	r.start()
	r.mustTPM2("tpm2_nvdefine", nvIndex, "-C", "o", "-s", "8", "-a", "ownerread|ownerwrite")
	completed := -1
	rng := rand.New(rand.NewPCG(1, 2))
	value := func(i int) []byte { return []byte(fmt.Sprintf("%08d", i)) }
	for round := range rounds {
		if round > 0 {
			r.start()
		}
		stop := make(chan struct{})
		done := make(chan int)
		go func() {
			i := completed + 1
			for ; ; i++ {
				select {
				case <-stop:
					done <- i
					return
				default:
				}
				p := filepath.Join(r.work, fmt.Sprintf("v%d", i))
				os.WriteFile(p, value(i), 0o600)
				if _, err := r.tpm2("tpm2_nvwrite", nvIndex, "-C", "o", "-i", p); err != nil {
					done <- i
					return
				}
				completed = i
			}
		}()
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
		r.kill()
		close(stop)
		inflight := <-done
		r.start()
		got := r.mustTPM2("tpm2_nvread", nvIndex, "-C", "o", "-s", "8")
		switch {
		case completed >= 0 && bytes.Equal(got, value(completed)):
		case bytes.Equal(got, value(inflight)):
			completed = inflight
		default:
			t.Fatalf("round %d: NV index holds %q; last completed write %d, in flight %d", round, got, completed, inflight)
		}
		t.Logf("round %d: %d writes completed before the kill", round, completed+1)
		r.kill()
	}
	mustRun(t, ExitOK, `status: +ok`, "verify", "-k", r.key, r.img)
}

// TestTpmRunRefusals: a wrong key, an image without TPM state, bad ports
// and a port in use are refused, and nothing stays mounted or running.
func TestTpmRunRefusals(t *testing.T) {
	testutil.RequireFUSE(t)
	testutil.RequireTool(t, "swtpm")
	img, key := newKeyedImage(t)
	wrong := keyFile(t, bytes.Repeat([]byte{7}, 32)...)
	ports := freePorts(t)
	p, c := fmt.Sprint(ports[0]), fmt.Sprint(ports[1])
	xdg := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	before := mustReadFile(t, img)
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"tpm", "run", "-k", wrong, img, "--server-port", p, "--ctrl-port", c}, ExitWrongKey, "wrong key"},
		{[]string{"tpm", "run", "-k", key, img, "--server-port", p, "--ctrl-port", c}, ExitNotFound, "tpm manufacture"},
		{[]string{"tpm", "run", "-k", key, img, "--server-port", p}, ExitUsage, "--ctrl-port are required"},
		{[]string{"tpm", "run", "-k", key, img, "--server-port", p, "--ctrl-port", p}, ExitUsage, "must differ"},
		{[]string{"tpm", "run", "-k", key, img, "--server-port", "70000", "--ctrl-port", c}, ExitUsage, "1 to 65535"},
		{[]string{"tpm", "run", "-k", key, img, "--ctrl-port", c, "--ctrl-unix", filepath.Join(xdg, "ctrl")}, ExitUsage, "not both"},
	} {
		code, stdout, stderr := run(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.msg) || stdout != "" {
			t.Errorf("%s: exit %d, %q %q; want %d naming %q", strings.Join(tc.args, " "), code, stdout, stderr, tc.code, tc.msg)
		}
	}
	if after := mustReadFile(t, img); !bytes.Equal(before, after) {
		t.Error("a refused run changed the image")
	}
	// A port in use: swtpm cannot listen; the run fails and cleans up.
	testutil.RequireTool(t, "swtpm_setup")
	mustRun(t, ExitOK, `manufactured`, "tpm", "manufacture", "-k", key, "--temp-dir", t.TempDir(), img)
	l, err := net.Listen("tcp", "127.0.0.1:"+p)
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", p, err)
	}
	defer l.Close()
	code, _, stderr := run(t, "tpm", "run", "-k", key, img, "--server-port", p, "--ctrl-port", c)
	if code != ExitError || !strings.Contains(stderr, "swtpm exited") {
		t.Errorf("port in use: exit %d: %s", code, stderr)
	}
	if m := tpmMounts(t, img); len(m) != 0 {
		t.Errorf("left mounted: %v", m)
	}
}

// TestTpmRunControlSocket runs `sealfs tpm run --ctrl-unix` (QEMU's way to
// reach swtpm; the tpm package's test passes the command channel over it
// as QEMU does): ready on the socket, stopped by SIGTERM with the final
// report, the socket removed.
func TestTpmRunControlSocket(t *testing.T) {
	testutil.RequireFUSE(t)
	testutil.RequireTool(t, "swtpm")
	testutil.RequireTool(t, "swtpm_setup")
	img, key := newKeyedImage(t)
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	mustRun(t, ExitOK, `manufactured`, "tpm", "manufacture", "-k", key, "--temp-dir", t.TempDir(), img)
	sock := filepath.Join(t.TempDir(), "swtpm-sock")
	p, ready := startServer(t, "", "tpm", "run", "-k", key, img, "--ctrl-unix", sock)
	if !strings.HasPrefix(ready, "TPM running on control socket "+sock+", state in "+img) {
		t.Fatalf("ready line: %q", ready)
	}
	if st, err := os.Lstat(sock); err != nil || st.Mode().Type() != os.ModeSocket {
		t.Fatalf("control socket: %v", err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != ExitOK {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, p.stderr)
	}
	if rest := p.rest(); !strings.Contains(rest, "stopped the TPM") {
		t.Fatalf("no final report: %q", rest)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
	if m := tpmMounts(t, img); len(m) != 0 {
		t.Errorf("left mounted: %v", m)
	}
}

// TestTpmRunQEMU gives `sealfs tpm run --ctrl-unix` to QEMU's tpm-emulator
// backend, the real client: QEMU starts only if swtpm took the command
// channel over the socket (with --ctrl-port it fails: "Failed to send
// CMD_SET_DATAFD"); the guest's firmware runs a few seconds, talking to the
// TPM, and then QEMU quits; the TPM keeps running and stops cleanly.
func TestTpmRunQEMU(t *testing.T) {
	testutil.RequireFUSE(t)
	for _, tool := range []string{"swtpm", "swtpm_setup", "qemu-system-x86_64"} {
		testutil.RequireTool(t, tool)
	}
	img, key := newKeyedImage(t)
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	mustRun(t, ExitOK, `manufactured`, "tpm", "manufacture", "-k", key, "--temp-dir", t.TempDir(), img)
	sock := filepath.Join(t.TempDir(), "swtpm-sock")
	p, _ := startServer(t, "", "tpm", "run", "-k", key, img, "--ctrl-unix", sock)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64", "-nographic", "-nodefaults", "-machine", "q35", "-m", "64",
		"-chardev", "socket,id=chrtpm,path="+sock,
		"-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0",
		"-monitor", "stdio")
	in, err := qemu.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out testutil.SyncBuffer
	qemu.Stdout, qemu.Stderr = &out, &out
	if err := qemu.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // the firmware finds the TPM and uses it
	io.WriteString(in, "info tpm\nquit\n")
	if err := qemu.Wait(); err != nil {
		t.Fatalf("qemu: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "type=emulator,chardev=chrtpm") {
		t.Fatalf("qemu does not list the TPM:\n%s", out.String())
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != ExitOK {
		t.Fatalf("tpm run: exit %d after QEMU quit and SIGTERM:\n%s", code, p.stderr)
	}
	mustRun(t, ExitOK, `status: +ok`, "verify", "-k", key, img)
}
