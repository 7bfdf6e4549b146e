// Package metadata is the Go code capnpc-go generates from metadata.capnp,
// sealfs's wire-compatible description of the PuzzleFS v3 metadata schema.
//
// Regenerating needs the capnp compiler (Debian: apt-get install capnproto)
// and capnpc-go at the version of the runtime in go.mod on PATH:
//
//	go install capnproto.org/go/capnp/v3/capnpc-go@v3.1.0-alpha.2
//	go generate ./image/internal/metadata
package metadata

//go:generate sh -c "capnp compile -I\"$(go list -m -f '{{.Dir}}' capnproto.org/go/capnp/v3)/std\" -ogo metadata.capnp"
