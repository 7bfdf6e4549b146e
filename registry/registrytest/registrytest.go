// Package registrytest runs the reference OCI registry (distribution, the
// Debian package docker-registry) for tests: on a free loopback port, with
// its configuration and storage in the test's temporary directory, with or
// without htpasswd authentication (htpasswd -B, Debian apache2-utils) and
// with or without a self-signed TLS certificate (made with openssl). The
// registry is stopped when the test ends. Without the tools the test is
// skipped, except under CI=true (testutil.RequireTool).
//
// It never touches a system-wide registry service the Debian package may
// have started: each server has its own port, configuration and storage.
package registrytest

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealfs/sealfs/internal/testutil"
	"github.com/sealfs/sealfs/registry"
)

// Options choose how the registry is set up.
type Options struct {
	// Auth requires HTTP basic authentication as Username/Password.
	Auth bool
	// TLS serves HTTPS with a self-signed certificate for 127.0.0.1
	// (Server.CAFile).
	TLS bool
}

// Credentials of a registry started with Auth.
const (
	Username = "sealfs-test"
	Password = "correct horse battery staple"
)

// Server is a running registry.
type Server struct {
	// Host is "127.0.0.1:PORT", the registry part of references.
	Host string
	// Root is the registry's storage directory.
	Root string
	// CAFile is the certificate (PEM) to trust with TLS, "" without.
	CAFile string
	opts   Options
	log    string
}

// Start starts a registry and stops it when t ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := testutil.RequireTool(t, "docker-registry")
	dir := t.TempDir()
	s := &Server{Root: filepath.Join(dir, "storage"), opts: opts, log: filepath.Join(dir, "registry.log")}
	var auth, tlsConf string
	if opts.Auth {
		htpasswd := testutil.RequireTool(t, "htpasswd")
		out, err := exec.Command(htpasswd, "-Bbn", Username, Password).Output()
		if err != nil {
			t.Fatalf("htpasswd: %v", err)
		}
		p := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(p, out, 0o600); err != nil {
			t.Fatal(err)
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: sealfs-test\n    path: %s\n", p)
	}
	if opts.TLS {
		openssl := testutil.RequireTool(t, "openssl")
		s.CAFile = filepath.Join(dir, "cert.pem")
		key := filepath.Join(dir, "key.pem")
		out, err := exec.Command(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
			"-nodes", "-days", "2", "-subj", "/CN=sealfs test registry",
			"-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
			"-keyout", key, "-out", s.CAFile).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl req: %v\n%s", err, out)
		}
		tlsConf = fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", s.CAFile, key)
	}
	for attempt := 0; ; attempt++ {
		port := freePort(t)
		s.Host = fmt.Sprintf("127.0.0.1:%d", port)
		conf := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: sealfs-test-secret
%s%s`, s.Root, s.Host, tlsConf, auth)
		cfg := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		err := s.run(t, bin, cfg)
		if err == nil {
			return s
		}
		if attempt == 2 {
			t.Fatalf("docker-registry did not start: %v\n%s", err, s.Log())
		}
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// run starts the registry and waits until it answers /v2/.
func (s *Server) run(t testing.TB, bin, cfg string) error {
	logf, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = filepath.Dir(cfg)
	// Never outlive the test binary, even if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	client := s.httpClient()
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("exited: %v", err)
		default:
		}
		resp, err := client.Get(s.URL("/v2/"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				t.Cleanup(stop)
				return nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("no answer on %s within 15s (last: %v)", s.Host, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Server) httpClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if s.CAFile != "" {
		pool := x509.NewCertPool()
		if pem, err := os.ReadFile(s.CAFile); err == nil {
			pool.AppendCertsFromPEM(pem)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// URL returns the registry's URL for path ("/v2/...").
func (s *Server) URL(path string) string {
	scheme := "http"
	if s.opts.TLS {
		scheme = "https"
	}
	return scheme + "://" + s.Host + path
}

// Log returns what the registry printed.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

// Ref returns the reference "HOST/repo[:tag]".
func (s *Server) Ref(repo, tag string) string {
	r := s.Host + "/" + repo
	if tag != "" {
		r += ":" + tag
	}
	return r
}

// Options returns client options for this registry: plain HTTP or its CA,
// its credentials when it requires them, and no docker configuration.
func (s *Server) Options() *registry.Options {
	o := &registry.Options{PlainHTTP: !s.opts.TLS, CAFile: s.CAFile, NoDockerConfig: true}
	if s.opts.Auth {
		o.Username, o.Password = Username, Password
	}
	return o
}

// Repository opens repo on this registry with opts (nil: Options()).
func (s *Server) Repository(t testing.TB, repo string, opts *registry.Options) *registry.Repository {
	t.Helper()
	ref, err := registry.ParseReference(s.Ref(repo, ""))
	if err != nil {
		t.Fatal(err)
	}
	if opts == nil {
		opts = s.Options()
	}
	r, err := registry.Open(ref, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// BlobPath returns where the registry stores the bytes of blob digest
// ("sha256:<hex>"), so tests can alter them.
func (s *Server) BlobPath(digest string) string {
	alg, hex, _ := strings.Cut(digest, ":")
	return filepath.Join(s.Root, "docker", "registry", "v2", "blobs", alg, hex[:2], hex, "data")
}

// Get performs an authenticated GET of path with the given Accept header
// (as another client, curl say, would) and returns the response.
func (s *Server) Get(t testing.TB, path, accept string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.URL(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if s.opts.Auth {
		req.SetBasicAuth(Username, Password)
	}
	resp, err := s.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}
