package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"syscall"

	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/sealfs/sealfs/errs"
)

// Classes of registry failures; see the package documentation.
var (
	// ErrUnauthorized: the registry refused the request for want of
	// credentials, or refused the credentials given (401, 403).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrNotFound: the registry has no such repository, tag, manifest or
	// blob. It matches fs.ErrNotExist too.
	ErrNotFound error = &alias{"not found", fs.ErrNotExist}
	// ErrDigestMismatch: the registry served bytes whose digest or size is
	// not the one asked for. It matches errs.ErrAuthentication too: the
	// bytes were never returned.
	ErrDigestMismatch error = &alias{"digest mismatch", errs.ErrAuthentication}
	// ErrNetwork: the registry could not be reached or did not answer in
	// the protocol (connection refused or reset, DNS, TLS handshake or
	// certificate, timeout, 5xx after retries).
	ErrNetwork = errors.New("registry unreachable")
)

// alias is a sentinel that also matches a more general one.
type alias struct {
	msg  string
	also error
}

func (a *alias) Error() string        { return a.msg }
func (a *alias) Is(target error) bool { return target == a.also }

// classify wraps err, from an operation op on the registry host, with the
// class it belongs to and the host and operation. Errors classify already
// wrapped, cancellations, and local blobs that failed their check pass
// through unchanged.
func classify(host, op string, err error) error {
	if err == nil {
		return nil
	}
	var done *opError
	if errors.As(err, &done) || errors.Is(err, context.Canceled) || (errors.Is(err, errs.ErrAuthentication) && !errors.Is(err, ErrDigestMismatch)) {
		return err
	}
	e := &opError{host: host, op: op, err: err}
	for _, c := range []error{ErrUnauthorized, ErrNotFound, ErrDigestMismatch, ErrNetwork} {
		if errors.Is(err, c) {
			return e // already says its class
		}
	}
	e.hint, e.class = classOf(err)
	return e
}

// opError is a failed registry operation.
type opError struct {
	host, op string
	class    error // nil if none
	hint     string
	err      error
}

func (e *opError) Error() string {
	if e.class == nil {
		return fmt.Sprintf("registry %s: %s: %v", e.host, e.op, e.err)
	}
	return fmt.Sprintf("registry %s: %s: %v%s: %v", e.host, e.op, e.class, e.hint, e.err)
}

func (e *opError) Unwrap() []error {
	if e.class == nil {
		return []error{e.err}
	}
	return []error{e.class, e.err}
}

// classOf returns a hint for the user and the class of an error from oras
// or net/http, or a nil class if it belongs to none.
func classOf(err error) (string, error) {
	var resp *errcode.ErrorResponse
	if errors.As(err, &resp) {
		switch {
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			return "", ErrUnauthorized
		case resp.StatusCode == http.StatusNotFound:
			return "", ErrNotFound
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout:
			return "", ErrNetwork
		}
		for _, e := range resp.Errors {
			switch e.Code {
			case errcode.ErrorCodeUnauthorized, errcode.ErrorCodeDenied:
				return "", ErrUnauthorized
			case errcode.ErrorCodeBlobUnknown, errcode.ErrorCodeManifestUnknown, errcode.ErrorCodeNameUnknown:
				return "", ErrNotFound
			}
		}
		return "", nil
	}
	if errors.Is(err, errdef.ErrNotFound) {
		return "", ErrNotFound
	}
	if errors.Is(err, auth.ErrBasicCredentialNotFound) {
		return " (no credentials for this registry)", ErrUnauthorized
	}
	var uae x509.UnknownAuthorityError
	var cve *tls.CertificateVerificationError
	var hne x509.HostnameError
	var rhe tls.RecordHeaderError
	switch {
	case errors.As(err, &uae), errors.As(err, &cve), errors.As(err, &hne):
		return " (the registry's TLS certificate is not trusted; give its CA with --ca-file)", ErrNetwork
	case errors.As(err, &rhe), strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return " (the registry speaks plain HTTP; use --plain-http)", ErrNetwork
	case errors.Is(err, errPlainToTLS), strings.Contains(err.Error(), "malformed HTTP response"):
		return " (the registry speaks TLS; drop --plain-http)", ErrNetwork
	}
	var ne net.Error
	var oe *net.OpError
	var de *net.DNSError
	if errors.As(err, &ne) || errors.As(err, &oe) || errors.As(err, &de) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded) {
		return "", ErrNetwork
	}
	return "", nil
}
