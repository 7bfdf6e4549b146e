package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// imageOptions are shared by every command that opens an image.
type imageOptions struct {
	JSON       bool // the global --json flag
	Force      bool
	Key        keyOptions
	ExpectRoot string // hex root digest the image must have
	MinCounter string // decimal update counter the image must not precede
}

func (o *imageOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVarP(&o.Force, "force", "f", false,
		"open even if the device's block size exceeds the image's IO block (risks a torn write destroying the journal; read-only opens never need it)")
	fs.StringVar(&o.ExpectRoot, "expect-root", "",
		"refuse the image unless its authentication root digest is `HEX` (as printed by info): detects a rolled-back or swapped image")
	fs.StringVar(&o.MinCounter, "min-counter", "",
		"refuse the image if its update counter comes before `N` (modulo 2^128): detects a rolled-back image")
	o.Key.AddFlags(fs)
}

// openOptions turns the flags into library options.
func (o *imageOptions) openOptions(readWrite bool) (*cocoonfs.Options, error) {
	opts := &cocoonfs.Options{Force: o.Force, ReadWrite: readWrite}
	if o.ExpectRoot != "" {
		root, err := hex.DecodeString(o.ExpectRoot)
		if err != nil || len(root) == 0 {
			return nil, usageErrorf("--expect-root: %q is not a hex digest", o.ExpectRoot)
		}
		opts.ExpectRoot = root
	}
	if o.MinCounter != "" {
		c, ok := new(big.Int).SetString(o.MinCounter, 10)
		if !ok || c.Sign() < 0 || c.BitLen() > 128 {
			return nil, usageErrorf("--min-counter: %q is not a decimal number below 2^128", o.MinCounter)
		}
		opts.MinCounter = c
	}
	return opts, nil
}

// bind fills what does not come from the command's own flags.
func (o *imageOptions) bind(g *globalOptions, cmd *cobra.Command) {
	o.JSON = g.JSON
	o.Key.EnvFile = os.Getenv(keyFileEnv)
	o.Key.Stdin = cmd.InOrStdin()
}

// runFunc is the shape of every runX once its options are bound.
type runFunc func(cmd *cobra.Command, args []string) error

// runE adapts a runX call to cobra: binds the shared options and marks the
// error as the command's own (see runError).
func runE(g *globalOptions, o *imageOptions, run runFunc) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		o.bind(g, cmd)
		if err := run(cmd, args); err != nil {
			return &runError{err}
		}
		return nil
	}
}

// openDevice opens an image read-only. Its errors are the OS's, so they get
// the generic code rather than being mistaken for a missing inode.
func openDevice(path string) (*blockdev.File, error) {
	dev, err := blockdev.OpenFile(path, &blockdev.FileOptions{ReadOnly: true})
	return dev, withCode(ExitError, err)
}

// openFS loads the key, opens the image read-only and wipes the key:
// cocoonfs.Open derives its own keys and keeps no reference to ours. It
// holds a shared lock on the image until closed (see lockImageForReading).
func openFS(o *imageOptions, path string) (*cocoonfs.FS, func(), error) {
	key, err := o.Key.load()
	if err != nil {
		return nil, nil, err
	}
	defer clear(key)
	opts, err := o.openOptions(false)
	if err != nil {
		return nil, nil, err
	}
	release, err := lockImageForReading(path)
	if err != nil {
		return nil, nil, err
	}
	dev, err := openDevice(path)
	if err != nil {
		release()
		return nil, nil, err
	}
	f, err := cocoonfs.Open(dev, key, opts)
	if errors.Is(err, cocoonfs.ErrPendingJournal) {
		err = fmt.Errorf("%w; run 'sealfs replay %s' to apply it (read commands never write to the image)", err, path)
	}
	if err != nil {
		dev.Close()
		release()
		return nil, nil, err
	}
	return f, func() { f.Close(); dev.Close(); release() }, nil
}

// readLockWait is how long a reader waits for a command that is changing
// the image to finish before it reports the image in use.
const readLockWait = 2 * time.Second

// lockImageForReading takes the image's lock shared, so a read never sees
// an image half-way through a commit (which would look like tampering,
// exit 4, or like a pending journal, exit 7). It waits up to readLockWait
// for the lock, time enough for a command that changes the image to
// finish, then reports the image in use (exit 1): a read-write mount or
// tpm run holds the lock for as long as it serves. On a file system
// without flock the image is read unlocked: reading never writes.
func lockImageForReading(path string) (func(), error) {
	deadline := time.Now().Add(readLockWait)
	for {
		release, err := lockImage(path, false)
		if err == nil || !errors.Is(err, errImageInUse) {
			if errors.Is(err, errLockUnsupported) {
				return func() {}, nil
			}
			return release, err
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// openFSWritable opens an image read-write: a pending journal is replayed,
// and transactions can begin. It holds the image's lock (see lockImage)
// until closed, so a command never changes an image a mount serves.
func openFSWritable(o *imageOptions, path string) (*cocoonfs.FS, func(), error) {
	release, err := lockImage(path, true)
	if err != nil {
		return nil, nil, err
	}
	f, closeFS, err := openFSLocked(o, path)
	if err != nil {
		release()
		return nil, nil, err
	}
	return f, func() { closeFS(); release() }, nil
}

// openFSLocked is openFSWritable for a caller that holds the lock already
// (the servers, which hold it for as long as they serve).
func openFSLocked(o *imageOptions, path string) (*cocoonfs.FS, func(), error) {
	key, err := o.Key.load()
	if err != nil {
		return nil, nil, err
	}
	defer clear(key)
	opts, err := o.openOptions(true)
	if err != nil {
		return nil, nil, err
	}
	dev, err := blockdev.OpenFile(path, nil)
	if err != nil {
		return nil, nil, withCode(ExitError, err)
	}
	f, err := cocoonfs.Open(dev, key, opts)
	if err != nil {
		dev.Close()
		return nil, nil, err
	}
	return f, func() { f.Close(); dev.Close() }, nil
}

// needArgs checks the positional arguments; runX functions call it so that
// in-process callers get the same usage errors as the command line.
func needArgs(args []string, names ...string) error {
	switch {
	case len(args) < len(names):
		return usageErrorf("missing %s", names[len(args)])
	case len(args) > len(names):
		return usageErrorf("unexpected argument %q", args[len(names)])
	}
	return nil
}
