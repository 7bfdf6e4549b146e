package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"
)

// keyFileEnv names a key file, so the key appears neither in argv nor in
// the environment itself.
const keyFileEnv = "SEALFS_KEY_FILE"

const keyHelp = `
Key: the raw bytes of a key file, as the reference cocoonfs tool's -k takes
them (no newline is stripped). Give it one way:
  -k, --key-file FILE    read the key from FILE ("-" reads standard input)
  --key-hex HEX          the key in hex, for testing only: anything on the command
                         line is visible to other users (ps, /proc) and lands in
                         shell history
  SEALFS_KEY_FILE=FILE   like --key-file, from the environment; used only when
                         neither flag is given
The key never appears in output, logs or error messages.`

// keyOptions says where the key comes from. File and Hex are flags; EnvFile
// and Stdin are filled by the command layer so that runX functions do not
// read the process environment themselves.
type keyOptions struct {
	File    string
	Hex     string
	EnvFile string    // value of SEALFS_KEY_FILE
	Stdin   io.Reader // for --key-file -
}

func (o *keyOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&o.File, "key-file", "k", "", `read the key from the raw bytes of `+"`FILE`"+` ("-": standard input)`)
	fs.StringVar(&o.Hex, "key-hex", "", "the key as `HEX` (testing only: visible in ps)")
}

// readsStdin reports whether the key is to be read from standard input.
func (o *keyOptions) readsStdin() bool {
	return o.File == "-" || o.File == "" && o.Hex == "" && o.EnvFile == "-"
}

// given reports whether any key source is set.
func (o *keyOptions) given() bool {
	return o.File != "" || o.Hex != "" || o.EnvFile != ""
}

// load returns the key. The caller owns the buffer and must clear it.
func (o *keyOptions) load() ([]byte, error) {
	switch {
	case o.File != "" && o.Hex != "":
		return nil, usageErrorf("give the key once: --key-file and --key-hex are mutually exclusive")
	case o.Hex != "":
		// hex.DecodeString's errors quote the offending character, which
		// is part of the key: report only that the string is malformed.
		key, err := hex.DecodeString(o.Hex)
		if err != nil || len(key) == 0 {
			clear(key)
			return nil, usageErrorf("--key-hex: not a hex string (want an even number of hex digits, at least 2)")
		}
		return key, nil
	case o.File != "":
		return o.readFile(o.File, "--key-file")
	case o.EnvFile != "":
		return o.readFile(o.EnvFile, keyFileEnv)
	}
	return nil, usageErrorf("no key given: pass --key-file FILE, set %s=FILE, or (for testing only) pass --key-hex HEX", keyFileEnv)
}

func (o *keyOptions) readFile(path, source string) ([]byte, error) {
	var key []byte
	var err error
	if path == "-" && o.Stdin != nil {
		key, err = io.ReadAll(o.Stdin)
	} else {
		key, err = os.ReadFile(path)
	}
	if err != nil {
		clear(key)
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is added below, once
		}
		return nil, withCode(ExitError, fmt.Errorf("%s %s: read key: %w", source, path, err))
	}
	if len(key) == 0 {
		return nil, withCode(ExitError, fmt.Errorf("%s %s: the key file is empty", source, path))
	}
	return key, nil
}
