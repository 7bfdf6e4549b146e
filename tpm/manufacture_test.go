package tpm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeSetup stands in for swtpm_setup, so the plumbing around it — the
// private directory, the generated configuration, the clean-up on every
// path — is tested without swtpm. FAKE_MODE chooses what it does.
const fakeSetup = `#!/bin/sh
state= config=
args="$*"
while [ $# -gt 0 ]; do
	case "$1" in
	--tpmstate) state=$2; shift ;;
	--config) config=$2; shift ;;
	esac
	shift
done
localca=$(sed -n 's/^create_certs_tool_config = //p' "$config")
ca=$(sed -n 's/^statedir = //p' "$localca")
printf 'plaintext TPM secrets\n' >"$state/tpm2-00.permall"
printf 'temporary\n' >"$TMPDIR/swtpm_setup.certs.XXXX"
case "$FAKE_MODE" in
ok)
	mkdir -p "$ca"
	printf 'args=%s\nTMPDIR=%s\nHOME=%s\n' "$args" "$TMPDIR" "$HOME" >"$state/tpm2-00.permall"
	printf 'volatile\n' >"$state/tpm2-00.volatilestate"
	printf -- '-----BEGIN CERTIFICATE-----\nroot\n' >"$ca/swtpm-localca-rootca-cert.pem"
	printf -- '-----BEGIN CERTIFICATE-----\nissuer\n' >"$ca/issuercert.pem"
	printf 'CA private key\n' >"$ca/signkey.pem"
	;;
fail)
	echo "fake swtpm_setup: could not create the EK" >&2
	exit 3
	;;
hang)
	sleep 60 &
	echo $! >"$FAKE_PIDFILE"
	: >"$FAKE_READY"
	sleep 60
	;;
esac
`

func fakeTools(t *testing.T, mode string) *ManufactureOptions {
	t.Helper()
	dir := t.TempDir()
	setup := filepath.Join(dir, "swtpm_setup")
	if err := os.WriteFile(setup, []byte(fakeSetup), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FAKE_MODE", mode)
	work := filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	return &ManufactureOptions{SwtpmSetup: setup, Swtpm: "/bin/true", SwtpmLocalCA: "/bin/true", TempDir: work}
}

func TestManufacturePlumbing(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	opts := fakeTools(t, "ok")
	res, err := Manufacture(ctx, s, opts)
	if err != nil {
		t.Fatal(err)
	}
	mustBeEmpty(t, opts.TempDir, "after a successful manufacture")
	if want := PermAll + " " + Volatile + " " + CARootEntry + " " + CAIssuerEntry; strings.Join(res.Entries, " ") != want {
		t.Errorf("entries %v, want %s", res.Entries, want)
	}
	e, err := s.Get(PermAll)
	if err != nil {
		t.Fatal(err)
	}
	got := string(e.Data)
	for _, want := range []string{
		"--tpm2 --tpm /bin/true socket --tpmstate " + opts.TempDir + "/sealfs-tpm-",
		"--createek --create-ek-cert --create-platform-cert --lock-nvram --pcr-banks sha256 --logfile ",
		"TMPDIR=" + opts.TempDir + "/sealfs-tpm-",
		"HOME=" + opts.TempDir + "/sealfs-tpm-",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("swtpm_setup ran without %q:\n%s", want, got)
		}
	}
	if e, err := s.Get(CAIssuerEntry); err != nil || e.Type != TypeCertificate || !strings.Contains(string(e.Data), "issuer") {
		t.Errorf("issuer certificate: %v, %v", e, err)
	}
	if _, err := s.Get("signkey.pem"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the CA's private key must not be stored: %v", err)
	}

	// Existing state: refused before anything runs, unless Overwrite.
	_, err = Manufacture(ctx, s, opts)
	if !errors.Is(err, ErrStateExists) || !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Manufacture over existing state = %v", err)
	}
	// Overwrite replaces the state; a volatile state of the old TPM goes.
	t.Setenv("FAKE_MODE", "ok")
	opts.Overwrite, opts.PCRBanks, opts.RSAKeySize = true, "sha256,sha384", 3072
	if _, err := Manufacture(ctx, s, opts); err != nil {
		t.Fatal(err)
	}
	e, _ = s.Get(PermAll)
	if !strings.Contains(string(e.Data), "--pcr-banks sha256,sha384") || !strings.Contains(string(e.Data), "--rsa-keysize 3072") {
		t.Errorf("options not passed on:\n%s", e.Data)
	}

	// A persistent CA directory keeps its CA (and key) and is used.
	caDir := filepath.Join(t.TempDir(), "ca")
	opts.CADir = caDir
	if _, err := Manufacture(ctx, s, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(caDir, "signkey.pem")); err != nil {
		t.Errorf("the CA directory was not used: %v", err)
	}
	mustBeEmpty(t, opts.TempDir, "after a manufacture with a CA directory")
}

func TestManufactureFailureLeavesNothing(t *testing.T) {
	ctx := context.Background()
	s, f := newStore(t)
	counter := f.UpdateCounter()
	opts := fakeTools(t, "fail")
	_, err := Manufacture(ctx, s, opts)
	if err == nil || !strings.Contains(err.Error(), "could not create the EK") {
		t.Fatalf("Manufacture = %v, want swtpm_setup's message", err)
	}
	mustBeEmpty(t, opts.TempDir, "after a failed manufacture")
	if f.UpdateCounter().Cmp(counter) != 0 {
		t.Errorf("a failed manufacture changed the image")
	}

	// Missing tools are named.
	opts.SwtpmSetup = filepath.Join(t.TempDir(), "no-such-swtpm_setup")
	if _, err := Manufacture(ctx, s, opts); err == nil || !strings.Contains(err.Error(), "no-such-swtpm_setup") {
		t.Errorf("missing tool: %v", err)
	}
	mustBeEmpty(t, opts.TempDir, "after a missing tool")
}

// TestManufactureCancelled: cancelling the context kills swtpm_setup and
// everything it started, and still removes the working directory.
func TestManufactureCancelled(t *testing.T) {
	s, f := newStore(t)
	counter := f.UpdateCounter()
	opts := fakeTools(t, "hang")
	marks := t.TempDir()
	pidFile, ready := filepath.Join(marks, "pid"), filepath.Join(marks, "ready")
	t.Setenv("FAKE_PIDFILE", pidFile)
	t.Setenv("FAKE_READY", ready)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for i := 0; i < 1000; i++ {
			if _, err := os.Stat(ready); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	_, err := Manufacture(ctx, s, opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Manufacture = %v, want context.Canceled", err)
	}
	if time.Since(start) > 30*time.Second {
		t.Errorf("cancellation took %v", time.Since(start))
	}
	mustBeEmpty(t, opts.TempDir, "after cancellation")
	if f.UpdateCounter().Cmp(counter) != 0 {
		t.Errorf("a cancelled manufacture changed the image")
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the fake did not start its child: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if alive(pid) {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Errorf("swtpm_setup's child %d survived the cancellation", pid)
	}
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesized command name.
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

func TestManufactureOptionsRejected(t *testing.T) {
	s, _ := newStore(t)
	opts := fakeTools(t, "ok")
	opts.PlatformModel = "two\nlines"
	if _, err := Manufacture(context.Background(), s, opts); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("a line break in an option: %v", err)
	}
	mustBeEmpty(t, opts.TempDir, "after refused options")
	if list, _ := s.List(); len(list) != 0 {
		t.Errorf("refused options changed the store: %v", list)
	}
}
