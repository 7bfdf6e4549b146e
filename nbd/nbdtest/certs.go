// Package nbdtest holds test helpers for NBD servers: a throwaway X.509 PKI
// laid out the way libnbd (tls-certificates=DIR) and qemu
// (tls-creds-x509,dir=DIR) expect it.
package nbdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a CA with one server and one client certificate, written as PEM
// files into Dir (ca-cert.pem, server-cert.pem, server-key.pem,
// client-cert.pem, client-key.pem), and an unrelated client certificate in
// OtherDir signed by a different CA (its ca-cert.pem is the real CA, so
// the client trusts the server but the server must refuse the client).
type PKI struct {
	Dir      string
	OtherDir string
	// NoClientDir holds only ca-cert.pem: a client without a certificate.
	NoClientDir string

	CA         *x509.Certificate
	CAPool     *x509.CertPool
	ServerCert tls.Certificate
	ClientCert tls.Certificate
}

// ServerTLS returns a server configuration; with mutual set, clients must
// present a certificate signed by the CA.
func (p *PKI) ServerTLS(mutual bool) *tls.Config {
	cfg := &tls.Config{Certificates: []tls.Certificate{p.ServerCert}, MinVersion: tls.VersionTLS12}
	if mutual {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = p.CAPool
	}
	return cfg
}

// ClientTLS returns a client configuration trusting the CA, presenting the
// client certificate if withCert.
func (p *PKI) ClientTLS(withCert bool) *tls.Config {
	cfg := &tls.Config{RootCAs: p.CAPool, ServerName: "localhost"}
	if withCert {
		cfg.Certificates = []tls.Certificate{p.ClientCert}
	}
	return cfg
}

type keyPair struct {
	cert *x509.Certificate
	der  []byte
	key  *ecdsa.PrivateKey
}

func newCert(t testing.TB, tmpl *x509.Certificate, parent *keyPair) *keyPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	signer, parentCert := key, tmpl
	if parent != nil {
		signer, parentCert = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &keyPair{cert, der, key}
}

func newCA(t testing.TB, name string) *keyPair {
	return newCert(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}, nil)
}

func leaf(t testing.TB, ca *keyPair, name string, server bool) *keyPair {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	return newCert(t, tmpl, ca)
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeKey(t testing.TB, path string, k *ecdsa.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, "PRIVATE KEY", der)
}

func tlsCert(kp *keyPair) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{kp.der}, PrivateKey: kp.key, Leaf: kp.cert}
}

// NewPKI makes the certificates in fresh temporary directories.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	ca := newCA(t, "sealfs test CA")
	srv := leaf(t, ca, "localhost", true)
	cli := leaf(t, ca, "sealfs test client", false)
	other := newCA(t, "unrelated CA")
	stranger := leaf(t, other, "stranger", false)

	p := &PKI{Dir: t.TempDir(), OtherDir: t.TempDir(), NoClientDir: t.TempDir(), CA: ca.cert, CAPool: x509.NewCertPool()}
	p.CAPool.AddCert(ca.cert)
	p.ServerCert, p.ClientCert = tlsCert(srv), tlsCert(cli)
	for _, d := range []string{p.Dir, p.OtherDir, p.NoClientDir} {
		writePEM(t, filepath.Join(d, "ca-cert.pem"), "CERTIFICATE", ca.der)
	}
	writePEM(t, filepath.Join(p.Dir, "server-cert.pem"), "CERTIFICATE", srv.der)
	writeKey(t, filepath.Join(p.Dir, "server-key.pem"), srv.key)
	writePEM(t, filepath.Join(p.Dir, "client-cert.pem"), "CERTIFICATE", cli.der)
	writeKey(t, filepath.Join(p.Dir, "client-key.pem"), cli.key)
	writePEM(t, filepath.Join(p.OtherDir, "client-cert.pem"), "CERTIFICATE", stranger.der)
	writeKey(t, filepath.Join(p.OtherDir, "client-key.pem"), stranger.key)
	return p
}
