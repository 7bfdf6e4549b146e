package nbd

import (
	"bytes"
	"testing"

	"github.com/sealfs/sealfs/nbd/nbdtest"
)

func TestStartTLS(t *testing.T) {
	pki := nbdtest.NewPKI(t)
	srv, _ := memServer(t, false)
	srv.TLSConfig = pki.ServerTLS(false)
	addr, _ := startServer(t, srv)

	// TLS is optional: a plain client is served.
	tc := dial(t, addr)
	tc.open("disk")
	tc.read(0, 512)

	tc = dial(t, addr)
	tc.hello(flagCFixedNewstyle | flagCNoZeroes)
	if err := tc.startTLS(pki.ClientTLS(false)); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	tc.sendOpt(optStartTLS, nil)
	tc.mustOptReply(optStartTLS, repErrInvalid) // already active
	if typ, _ := tc.info(optGo, "disk"); typ != repAck {
		t.Fatalf("GO over TLS: %#x", typ)
	}
	p := pattern(10000, 5)
	tc.mustWrite(777, p)
	if !bytes.Equal(tc.read(777, 10000), p) {
		t.Fatal("read back over TLS differs")
	}
	tc.sendReq(cmdDisc, 0, 0, 0, nil)
	tc.expectClosed()
}

func TestRequireTLS(t *testing.T) {
	pki := nbdtest.NewPKI(t)
	srv, _ := memServer(t, false)
	srv.TLSConfig, srv.RequireTLS = pki.ServerTLS(false), true
	addr, _ := startServer(t, srv)

	tc := dial(t, addr)
	tc.hello(flagCFixedNewstyle)
	if typ, _ := tc.info(optGo, "disk"); typ != repErrTLSReqd {
		t.Errorf("GO without TLS: %#x", typ)
	}
	if typ, _ := tc.info(optInfo, "disk"); typ != repErrTLSReqd {
		t.Errorf("INFO without TLS: %#x", typ)
	}
	tc.sendOpt(optList, nil)
	tc.mustOptReply(optList, repErrTLSReqd)
	tc.sendOpt(optStructuredRepl, nil)
	tc.mustOptReply(optStructuredRepl, repErrTLSReqd)
	tc.sendOpt(optExportName, []byte("disk"))
	tc.expectClosed()

	tc = dial(t, addr)
	tc.hello(flagCFixedNewstyle)
	if err := tc.startTLS(pki.ClientTLS(false)); err != nil {
		t.Fatal(err)
	}
	tc.sendOpt(optExportName, []byte("disk"))
	if _, err := tc.readFull(10 + 124); err != nil {
		t.Fatal(err)
	}
	tc.read(0, 4096)
}

func TestMutualTLS(t *testing.T) {
	pki := nbdtest.NewPKI(t)
	srv, _ := memServer(t, false)
	srv.TLSConfig, srv.RequireTLS = pki.ServerTLS(true), true
	addr, _ := startServer(t, srv)

	tc := dial(t, addr)
	tc.hello(flagCFixedNewstyle)
	if err := tc.startTLS(pki.ClientTLS(true)); err != nil {
		t.Fatal(err)
	}
	if typ, _ := tc.info(optGo, "disk"); typ != repAck {
		t.Fatalf("GO with client cert: %#x", typ)
	}
	tc.read(0, 4096)

	// Without a client certificate the handshake (or, with TLS 1.3, the
	// first read after it) fails.
	tc = dial(t, addr)
	tc.hello(flagCFixedNewstyle)
	if err := tc.startTLS(pki.ClientTLS(false)); err == nil {
		tc.sendOpt(optGo, infoData("disk"))
		if r, err := tc.optReply(); err == nil {
			t.Fatalf("client without certificate got reply %#x", r.typ)
		}
	}
	// A server is still fine for the next client.
	tc = dial(t, addr)
	tc.hello(flagCFixedNewstyle)
	if err := tc.startTLS(pki.ClientTLS(true)); err != nil {
		t.Fatal(err)
	}
	if typ, _ := tc.info(optGo, "disk"); typ != repAck {
		t.Fatalf("GO: %#x", typ)
	}
}
