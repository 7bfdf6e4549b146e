module github.com/sealfs/sealfs

go 1.24.0

require (
	capnproto.org/go/capnp/v3 v3.1.0-alpha.2
	github.com/emmansun/gmsm v0.15.5
	github.com/hanwen/go-fuse/v2 v2.12.1
	github.com/klauspost/compress v1.19.0
	github.com/opencontainers/go-digest v1.0.0
	github.com/opencontainers/image-spec v1.1.1
	github.com/rogpeppe/go-internal v1.14.1
	github.com/spf13/cobra v1.10.2
	github.com/spf13/pflag v1.0.9
	golang.org/x/crypto v0.48.0
	golang.org/x/sync v0.14.0
	golang.org/x/sys v0.41.0
	oras.land/oras-go/v2 v2.6.0
)

require (
	github.com/colega/zeropool v0.0.0-20230505084239-6fb4a4f75381 // indirect
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	golang.org/x/tools v0.26.0 // indirect
)
