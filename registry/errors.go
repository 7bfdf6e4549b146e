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
	ErrNotFound = fmt.Errorf("not found in the registry (%w)", fs.ErrNotExist)
	// ErrDigestMismatch: the registry served bytes whose digest or size is
	// not the one asked for. It matches errs.ErrAuthentication too: the
	// bytes were never returned.
	ErrDigestMismatch = fmt.Errorf("digest mismatch (%w)", errs.ErrAuthentication)
	// ErrNetwork: the registry could not be reached or did not answer in
	// the protocol (connection refused or reset, DNS, TLS handshake or
	// certificate, timeout, 5xx after retries).
	ErrNetwork = errors.New("registry unreachable")
)

// classify wraps err, from an operation op on the registry host, with the
// class it belongs to. Errors already classified, and cancellations, pass
// through unchanged.
func classify(host, op string, err error) error {
	if err == nil {
		return nil
	}
	for _, e := range []error{ErrUnauthorized, ErrNotFound, ErrDigestMismatch, ErrNetwork} {
		if errors.Is(err, e) {
			return err
		}
	}
	// A cancellation, or a local blob that failed its check while it was
	// being uploaded, is not the registry's doing.
	if errors.Is(err, context.Canceled) || errors.Is(err, errs.ErrAuthentication) {
		return err
	}
	hint, class := classOf(err)
	if class == nil {
		return fmt.Errorf("registry %s: %s: %w", host, op, err)
	}
	return fmt.Errorf("registry %s: %s: %w%s: %w", host, op, class, hint, err)
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
