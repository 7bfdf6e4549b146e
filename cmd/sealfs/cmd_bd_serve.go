package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/sealfs/sealfs/bd"
	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/nbd"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// bdServeOptions are the flags of `sealfs bd serve`: the variant and key
// flags shared with the other bd commands, plus the server's own.
type bdServeOptions struct {
	bdOptions
	Root        string
	Listen      string
	Name        string
	ReadOnly    bool
	TLSCert     string
	TLSKey      string
	TLSClientCA string
	Debug       bool
}

func (o *bdServeOptions) AddFlags(fs *pflag.FlagSet) {
	o.bdOptions.AddFlags(fs, "std|crypt|verity|vericrypt|dmverity")
	fs.StringVar(&o.Root, "root", "", "trusted root hash `HEX` (verity, vericrypt, dmverity)")
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:10809", "listen on `HOST:PORT` (port 0 picks a free one)")
	fs.StringVar(&o.Name, "name", "", "export `NAME` (default: the image's file name; clients that ask for no name get it too)")
	fs.BoolVar(&o.ReadOnly, "read-only", false, "refuse writes (dmverity is always read-only)")
	fs.StringVar(&o.TLSCert, "tls-cert", "", "server certificate `PEM` file; clients must then use TLS (NBD STARTTLS)")
	fs.StringVar(&o.TLSKey, "tls-key", "", "server private key `PEM` file")
	fs.StringVar(&o.TLSClientCA, "tls-client-ca", "", "CA certificate `PEM` file: require client certificates signed by it (mutual TLS)")
	fs.BoolVar(&o.Debug, "debug", false, "log every connection event")
}

const bdServeLong = `Serve a protected block device image over NBD (the Network Block Device
protocol) until SIGINT or SIGTERM, so standard clients can use it:

  nbdinfo nbd://127.0.0.1:10809            nbdcopy nbd://127.0.0.1:10809 out.img
  qemu-img convert -O raw nbd://127.0.0.1:10809/NAME copy.img
  qemu-io -f raw nbd://127.0.0.1:10809/NAME -c 'read 0 64k'

The device is opened as bd opens it (see 'sealfs bd --help'); verity and
vericrypt check every block read against the trusted --root: a block that
fails is an I/O error for that request (logged with its block number), the
rest of the image stays readable. Writes to verity variants change the root:
it is logged after every flush and printed on exit; keep it somewhere
trusted and pass it as --root next time.

With --tls-cert and --tls-key every client must upgrade to TLS (nbds:// in
libnbd, tls-creds-x509 in qemu); with --tls-client-ca also present a
certificate signed by that CA. On SIGINT or SIGTERM the server stops
accepting, finishes the requests in flight, flushes the device and exits 0.`

func newBdServeCommand(g *globalOptions) *cobra.Command {
	o := &bdServeOptions{}
	cmd := &cobra.Command{
		Use:   "serve IMAGE --variant std|crypt|verity|vericrypt|dmverity [flags]",
		Short: "Export a protected block device over NBD (optionally TLS)",
		Long:  bdServeLong,
		Example: `  sealfs bd serve disk.img --variant vericrypt --key-file xts.key --mac-key-file mac.key \
      --tree disk.tree --root 3a7f... --listen 127.0.0.1:10809
  sealfs bd serve disk.img --variant crypt --key-file xts.key --tls-cert srv.pem --tls-key srv.key \
      --tls-client-ca ca.pem`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.JSON = g.JSON
			return asRunError(runBdServe(cmd, o, args[0]))
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// bdServeDevice is an opened variant: the device to export and what to
// release after serving.
type bdServeDevice struct {
	dev      blockdev.Device
	root     func() []byte // nil unless the variant has a changing root
	closers  []io.Closer
	readOnly bool
}

func (d *bdServeDevice) Close() error {
	var err error
	for i := len(d.closers) - 1; i >= 0; i-- {
		err = errors.Join(err, d.closers[i].Close())
	}
	return err
}

func bdServeRoot(o *bdServeOptions) ([]byte, error) {
	if o.Root == "" {
		return nil, usageErrorf("--root is required for variant %s", o.Variant)
	}
	r, err := hex.DecodeString(o.Root)
	if err != nil || len(r) == 0 {
		return nil, usageErrorf("--root: %q is not a hex hash", o.Root)
	}
	return r, nil
}

// bdServeOpen opens IMAGE as the chosen variant.
func bdServeOpen(o *bdServeOptions, path string) (_ *bdServeDevice, err error) {
	if err := o.check("std", "crypt", "verity", "vericrypt", "dmverity"); err != nil {
		return nil, err
	}
	needTree := o.verity() || o.Variant == "dmverity"
	ro := o.ReadOnly || o.Variant == "dmverity"
	d := &bdServeDevice{readOnly: ro}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	var root []byte
	if needTree {
		if root, err = bdServeRoot(o); err != nil {
			return nil, err
		}
	}
	cache, err := o.treeCache()
	if err != nil {
		return nil, err
	}
	var xtsKey, macKey []byte
	defer func() { clear(xtsKey); clear(macKey) }()
	if o.crypt() {
		if xtsKey, err = o.cryptKey(path, false); err != nil {
			return nil, err
		}
	}
	if o.verity() {
		if macKey, err = o.macKey(); err != nil {
			return nil, err
		}
	}

	// The bd device does the block I/O; the files only pass it through.
	fopts := &blockdev.FileOptions{ReadOnly: ro, BlockSize: 512}
	data, err := blockdev.OpenFile(path, fopts)
	if err != nil {
		return nil, withCode(ExitError, err)
	}
	d.closers = append(d.closers, data)
	var tree *blockdev.File
	if needTree {
		if tree, err = blockdev.OpenFile(o.treePath(path), fopts); err != nil {
			return nil, withCode(ExitError, fmt.Errorf("tree: %w", err))
		}
		d.closers = append(d.closers, tree)
	}
	switch o.Variant {
	case "std":
		d.dev, err = bd.NewStd(data, &bd.StdOptions{BlockSize: o.BlockSize})
	case "crypt":
		d.dev, err = bd.NewCrypt(data, xtsKey, &bd.CryptOptions{BlockSize: o.BlockSize})
	case "verity":
		var v *bd.Verity
		v, err = bd.OpenVerity(data, tree, macKey, root, &bd.VerityOptions{BlockSize: o.BlockSize, TreeCache: cache})
		if err == nil {
			d.dev, d.root = v, v.Root
		}
	case "vericrypt":
		var v *bd.VeriCrypt
		v, err = bd.OpenVeriCrypt(data, tree, xtsKey, macKey, root, &bd.VeriCryptOptions{BlockSize: o.BlockSize, TreeCache: cache})
		if err == nil {
			d.dev, d.root = v, v.Root
		}
	case "dmverity":
		d.dev, err = bd.OpenDmVerity(data, tree, root, nil)
	}
	if err != nil {
		return nil, bdServeOpenError(err)
	}
	return d, nil
}

// bdServeOpenError gives open failures their exit codes: a tree that does
// not match the trusted root is an authentication failure, bad parameters
// are usage errors.
func bdServeOpenError(err error) error {
	switch {
	case errors.Is(err, errs.ErrAuthentication):
		return withCode(ExitAuthentication, err)
	case errors.Is(err, errs.ErrWrongKey):
		return withCode(ExitWrongKey, err)
	case errors.Is(err, errs.ErrCorrupt), errors.Is(err, errs.ErrUnsupported):
		return withCode(ExitCorrupt, err)
	}
	return err
}

func bdServeTLS(o *bdServeOptions) (*tls.Config, error) {
	if o.TLSCert == "" && o.TLSKey == "" {
		if o.TLSClientCA != "" {
			return nil, usageErrorf("--tls-client-ca needs --tls-cert and --tls-key")
		}
		return nil, nil
	}
	if o.TLSCert == "" || o.TLSKey == "" {
		return nil, usageErrorf("--tls-cert and --tls-key go together")
	}
	cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
	if err != nil {
		return nil, withCode(ExitError, fmt.Errorf("TLS certificate: %w", err))
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if o.TLSClientCA != "" {
		pem, err := os.ReadFile(o.TLSClientCA)
		if err != nil {
			return nil, withCode(ExitError, fmt.Errorf("--tls-client-ca: %w", err))
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usageErrorf("--tls-client-ca: no PEM certificate in %s", o.TLSClientCA)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

func runBdServe(cmd *cobra.Command, o *bdServeOptions, path string) error {
	tlsCfg, err := bdServeTLS(o)
	if err != nil {
		return err
	}
	d, err := bdServeOpen(o, path)
	if err != nil {
		return err
	}
	defer d.Close()

	level := slog.LevelInfo
	if o.Debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
	name := o.Name
	if !cmd.Flags().Changed("name") {
		name = filepath.Base(path)
	}
	exp := &nbd.Export{Name: name, Device: d.dev, ReadOnly: d.readOnly, Description: "sealfs " + o.Variant}
	if d.root != nil {
		var rootMu sync.Mutex
		last := d.root()
		exp.AfterSync = func() {
			r := d.root()
			rootMu.Lock()
			changed := !bytes.Equal(r, last)
			last = r
			rootMu.Unlock()
			if changed {
				logger.Info("root changed", "root", hex.EncodeToString(r))
			}
		}
	}
	srv := &nbd.Server{Exports: []*nbd.Export{exp}, TLSConfig: tlsCfg, RequireTLS: tlsCfg != nil, Logger: logger}

	l, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return withCode(ExitError, err)
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	tlsMode := "off"
	switch {
	case tlsCfg != nil && tlsCfg.ClientCAs != nil:
		tlsMode = "mutual"
	case tlsCfg != nil:
		tlsMode = "required"
	}
	out := cmd.OutOrStdout()
	addr := l.Addr().String()
	if o.JSON {
		err = writeJSON(out, map[string]any{
			"listen": addr, "export": name, "size": d.dev.Size(), "variant": o.Variant,
			"read_only": blockdev.IsReadOnly(d.dev) || d.readOnly, "tls": tlsMode,
		})
	} else {
		_, err = fmt.Fprintf(out, "listening on %s\nexport %q: %d bytes, variant %s, %s, TLS %s\n",
			addr, name, d.dev.Size(), o.Variant, map[bool]string{true: "read-only", false: "read-write"}[d.readOnly], tlsMode)
	}
	if err != nil {
		l.Close()
		return err
	}

	serveErr := srv.Serve(ctx, l)
	logger.Info("server stopped")
	if d.root != nil {
		r := hex.EncodeToString(d.root())
		if o.JSON {
			writeJSON(out, map[string]any{"root": r})
		} else {
			fmt.Fprintf(out, "root: %s\n", r)
		}
	}
	if err := d.Close(); err != nil {
		serveErr = errors.Join(serveErr, err)
	}
	d.closers = nil
	return serveErr
}
