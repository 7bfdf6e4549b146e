package tpm

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealfs/sealfs/internal/testutil"
	"github.com/sealfs/sealfs/nvram"
)

// swtpmInstance is a running `swtpm socket --tpm2` on a state directory.
type swtpmInstance struct {
	t    *testing.T
	cmd  *exec.Cmd
	sock string
	log  string
	done chan error
}

// startSwtpm runs swtpm on stateDir with Unix sockets (in a short path:
// sun_path holds 108 bytes), ready for TPM2TOOLS_TCTI=swtpm:path=...
func startSwtpm(t *testing.T, stateDir string) *swtpmInstance {
	t.Helper()
	swtpm := testutil.RequireTool(t, "swtpm")
	sockDir, err := os.MkdirTemp("", "swtpm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	s := &swtpmInstance{t: t, sock: filepath.Join(sockDir, "s"), log: filepath.Join(sockDir, "log"), done: make(chan error, 1)}
	s.cmd = exec.Command(swtpm, "socket", "--tpm2", "--tpmstate", "dir="+stateDir,
		"--server", "type=unixio,path="+s.sock, "--ctrl", "type=unixio,path="+s.sock+".ctrl",
		"--flags", "not-need-init,startup-clear", "--log", "file="+s.log)
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			<-s.done
		}
	})
	for i := 0; ; i++ {
		c, err := net.Dial("unix", s.sock+".ctrl")
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-s.done:
			log, _ := os.ReadFile(s.log)
			t.Fatalf("swtpm exited: %v\n%s", err, log)
		case <-time.After(20 * time.Millisecond):
		}
		if i == 500 {
			t.Fatalf("swtpm did not open its sockets")
		}
	}
	return s
}

// tpm2 runs a tpm2-tools command against the instance in dir.
func (s *swtpmInstance) tpm2(dir string, name string, args ...string) ([]byte, error) {
	s.t.Helper()
	cmd := exec.Command(testutil.RequireTool(s.t, name), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI=swtpm:path="+s.sock)
	return cmd.CombinedOutput()
}

func (s *swtpmInstance) mustTPM2(dir string, name string, args ...string) []byte {
	s.t.Helper()
	out, err := s.tpm2(dir, name, args...)
	if err != nil {
		s.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// ctrl sends a control command with swtpm_ioctl (-v: store the volatile
// state, -s: shut down).
func (s *swtpmInstance) ctrl(flag string) {
	s.t.Helper()
	out, err := exec.Command(testutil.RequireTool(s.t, "swtpm_ioctl"), "--unix", s.sock+".ctrl", flag).CombinedOutput()
	if err != nil {
		s.t.Fatalf("swtpm_ioctl %s: %v\n%s", flag, err, out)
	}
}

// stop shuts swtpm down cleanly and waits for it.
func (s *swtpmInstance) stop() {
	s.t.Helper()
	s.ctrl("-s")
	select {
	case err := <-s.done:
		if err != nil {
			log, _ := os.ReadFile(s.log)
			s.t.Fatalf("swtpm: %v\n%s", err, log)
		}
	case <-time.After(10 * time.Second):
		s.t.Fatalf("swtpm did not stop")
	}
}

const persistentHandle = "0x81000001"

// TestSwtpmRoundTrip is the life cycle with the real tools: manufacture into
// an image, export, run swtpm, create a primary key and make it persistent,
// store the volatile state, stop, import, export again, restart: the
// persistent key is there with the same public part, the EK certificate NV
// index exists and its certificate verifies against the CA certificates in
// the store. A control export of the manufactured state, without the
// import, does not have the key.
func TestSwtpmRoundTrip(t *testing.T) {
	for _, tool := range []string{"swtpm", "swtpm_setup", "swtpm_localca", "swtpm_ioctl", "tpm2_createprimary",
		"tpm2_evictcontrol", "tpm2_readpublic", "tpm2_nvreadpublic", "tpm2_nvread", "tpm2_getcap", "openssl"} {
		testutil.RequireTool(t, tool)
	}
	ctx := context.Background()
	s, _ := newStore(t)
	work := filepath.Join(t.TempDir(), "private")
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	res, err := Manufacture(ctx, s, &ManufactureOptions{TempDir: work})
	if err != nil {
		t.Fatal(err)
	}
	mustBeEmpty(t, work, "after manufacturing")
	if want := []string{PermAll, CARootEntry, CAIssuerEntry}; strings.Join(res.Entries, " ") != strings.Join(want, " ") {
		t.Errorf("manufactured entries %v, want %v", res.Entries, want)
	}
	if res.StateBytes < 1000 {
		t.Errorf("manufactured state of %d bytes", res.StateBytes)
	}
	// Manufacturing again is refused without Overwrite.
	if _, err := Manufacture(ctx, s, &ManufactureOptions{TempDir: work}); err == nil || !strings.Contains(err.Error(), "already holds TPM state") {
		t.Errorf("second Manufacture = %v, want ErrStateExists", err)
	}

	scratch := t.TempDir()
	control := filepath.Join(scratch, "control")
	if _, err := Export(s, control); err != nil {
		t.Fatal(err)
	}
	run1 := filepath.Join(scratch, "run1")
	if _, err := Export(s, run1); err != nil {
		t.Fatal(err)
	}

	// Run 1: a persistent primary key.
	sw := startSwtpm(t, run1)
	sw.mustTPM2(scratch, "tpm2_createprimary", "-Q", "-C", "o", "-c", "primary.ctx")
	sw.mustTPM2(scratch, "tpm2_evictcontrol", "-C", "o", "-c", "primary.ctx", persistentHandle)
	sw.mustTPM2(scratch, "tpm2_readpublic", "-Q", "-c", persistentHandle, "-o", "pub1.bin")
	// The EK certificate (RSA 2048, TCG index 0x01c00002) verifies
	// against the CA certificates the store holds.
	sw.mustTPM2(scratch, "tpm2_nvread", "0x01c00002", "-C", "0x01c00002", "-o", "ek.der")
	sw.ctrl("-v") // store the volatile state too, so the import carries two files
	sw.stop()
	for _, name := range []string{PermAll, Volatile} {
		if _, err := os.Stat(filepath.Join(run1, name)); err != nil {
			t.Fatalf("swtpm did not write %s: %v", name, err)
		}
	}
	verifyEKCert(t, s, scratch)

	imp, err := Import(ctx, s, run1)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(imp.Entries, " ") != PermAll+" "+Volatile {
		t.Errorf("imported %v", imp.Entries)
	}
	for _, name := range imp.Entries {
		want, _ := os.ReadFile(filepath.Join(run1, name))
		if e, err := s.Get(name); err != nil || !bytes.Equal(e.Data, want) || e.Type != nvram.TypeTPM {
			t.Errorf("entry %s does not hold the file (%v)", name, err)
		}
	}

	// Run 2, on a fresh export: the key survived, with the same public part.
	run2 := filepath.Join(scratch, "run2")
	exp, err := Export(s, run2)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(exp.Files, " ") != PermAll+" "+Volatile {
		t.Errorf("exported %v", exp.Files)
	}
	sw = startSwtpm(t, run2)
	sw.mustTPM2(scratch, "tpm2_readpublic", "-Q", "-c", persistentHandle, "-o", "pub2.bin")
	caps := string(sw.mustTPM2(scratch, "tpm2_getcap", "handles-persistent"))
	ekNV := string(sw.mustTPM2(scratch, "tpm2_nvreadpublic", "0x01c00002"))
	sw.stop()
	pub1, _ := os.ReadFile(filepath.Join(scratch, "pub1.bin"))
	pub2, _ := os.ReadFile(filepath.Join(scratch, "pub2.bin"))
	if len(pub1) == 0 || !bytes.Equal(pub1, pub2) {
		t.Errorf("the persistent key's public part changed across import/export (%d vs %d bytes)", len(pub1), len(pub2))
	}
	if !strings.Contains(caps, persistentHandle) {
		t.Errorf("persistent handles after the restart: %s", caps)
	}
	if !strings.Contains(ekNV, "0x1c00002") || !strings.Contains(ekNV, "writelocked") {
		t.Errorf("EK certificate NV index: %s", ekNV)
	}

	// Control: the manufactured state alone has no such key.
	sw = startSwtpm(t, control)
	if out, err := sw.tpm2(scratch, "tpm2_readpublic", "-c", persistentHandle); err == nil {
		t.Errorf("the manufactured state already has %s: the test proves nothing\n%s", persistentHandle, out)
	}
	sw.stop()
}

// verifyEKCert checks ek.der (read from the TPM's NV) against the CA
// certificates stored beside the state, with openssl.
func verifyEKCert(t *testing.T, s *nvram.Store, dir string) {
	t.Helper()
	openssl := testutil.RequireTool(t, "openssl")
	for _, name := range []string{CARootEntry, CAIssuerEntry} {
		e, err := s.Get(name)
		if err != nil {
			t.Fatal(err)
		}
		if e.Type != TypeCertificate || !bytes.HasPrefix(e.Data, []byte("-----BEGIN CERTIFICATE-----")) {
			t.Fatalf("%s: type %q, not a PEM certificate", name, e.Type)
		}
		if err := os.WriteFile(filepath.Join(dir, name), e.Data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(openssl, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("x509", "-inform", "DER", "-in", "ek.der", "-out", "ek.pem")
	run("verify", "-CAfile", CARootEntry, "-untrusted", CAIssuerEntry, "ek.pem")
}
