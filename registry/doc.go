// Package registry is sealfs's transport to OCI registries (the
// distribution-spec API that distribution, Harbor, Zot and every cloud
// registry serve): resolve and fetch manifests, fetch blobs whole, check
// which blobs a repository already has, upload the missing ones several at a
// time (mounting them from another repository of the same registry where the
// registry allows it), and push a manifest under a tag. Packages image and
// blob build their push, pull and lazy-mount commands on it.
//
// # Trust
//
// A registry is untrusted storage. Every byte this package returns has been
// checked against the digest it was asked for (and the size, when one was
// given) before the caller sees it: [Repository.ReadBlob] and
// [Repository.FetchManifest] return nothing on a mismatch, and
// [Repository.CopyBlob] reports one after the last byte, so its caller must
// stage what it wrote and discard it on error (image and blob write to a
// temporary file and link it into place only on success). A mismatch is
// [ErrDigestMismatch], which also matches errs.ErrAuthentication. A manifest
// resolved from a tag is only as trustworthy as the registry's answer; the
// callers check it against a root of trust of their own (the PuzzleFS
// fs-verity root digest, the blob store's Merkle roots).
//
// Blobs are fetched whole, never by ranges: the callers verify whole blobs
// (sha256, fs-verity, Fuchsia Merkle roots), and a PuzzleFS chunk is at most
// 256 KiB, so a ranged GET would save nothing it could verify.
//
// # Errors
//
// Failures are classified so that callers (and the CLI's exit statuses) can
// tell them apart with errors.Is: [ErrUnauthorized] (401 or 403, no or wrong
// credentials), [ErrNotFound] (no such repository, tag, manifest or blob;
// it also matches fs.ErrNotExist), [ErrDigestMismatch] (the registry served
// bytes that are not what was asked for) and [ErrNetwork] (the registry
// could not be reached or spoken to: refused connections, DNS, TLS
// handshakes and certificates, timeouts, 5xx answers after retries). Errors
// name the registry and the request, never credentials.
//
// # Options
//
// [Options] follow oras and docker: PlainHTTP for a registry without TLS,
// CAFile for a private certificate authority, Username and Password, and,
// when no username is given, the credentials docker and oras store
// (~/.docker/config.json or $DOCKER_CONFIG, with its credential helpers and
// credsStore). Requests that fail with a timeout, 429 or 5xx are retried
// with backoff (oras's default policy).
//
// # Dependency
//
// The HTTP protocol, the token and basic authentication handshakes and the
// docker credential store are oras.land/oras-go/v2's (pinned to v2.6.0, the
// newest release whose go.mod accepts go 1.24). It is chosen over
// github.com/google/go-containerregistry because sealfs needs the
// distribution protocol and credentials, not image manipulation: oras-go
// is that layer alone (its dependencies are OCI's go-digest and image-spec
// and golang.org/x/sync),
// exposes the HEAD, mount and monolithic-upload steps one by one so this
// package can count and report them, and its credential store reads docker's
// config and helpers without pulling in the docker CLI.
// go-containerregistry (v0.22.1) brings its own image model, tarball and
// daemon code, and through the docker CLI, the moby client and OpenTelemetry
// a dependency tree ten times larger, for features sealfs does not use; it
// also needs go 1.25.
//
// A *Repository is safe for concurrent use.
package registry
