package tpm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sealfs/sealfs/internal/atomicfile"

	"github.com/sealfs/sealfs/nvram"
)

// The files swtpm keeps a TPM 2.0's state in (TPM number 0), which are also
// the names of the store's entries of type nvram.TypeTPM.
const (
	PermAll   = "tpm2-00.permall"
	Volatile  = "tpm2-00.volatilestate"
	SaveState = "tpm2-00.savestate"
)

// StateFiles lists them, the permanent state first.
var StateFiles = []string{PermAll, Volatile, SaveState}

// The certificates of the CA that signed the EK and platform certificates,
// as PEM, kept beside the state (entries of type TypeCertificate).
const (
	CARootEntry     = "tpm-ca-root.pem"
	CAIssuerEntry   = "tpm-ca-issuer.pem"
	TypeCertificate = "x509-pem"
)

// MaxStateFile bounds one state file read by Import (libtpms' permanent
// state is tens of kilobytes).
const MaxStateFile = 16 << 20

// ErrNoState: the store holds no TPM state (no PermAll entry). It matches
// fs.ErrNotExist.
var ErrNoState = fmt.Errorf("tpm: the store holds no TPM state (no %s entry): %w", PermAll, fs.ErrNotExist)

// ExportResult lists what Export did.
type ExportResult struct {
	Files   []string // state files written, in StateFiles order
	Removed []string // stale state files removed from the directory
	Bytes   int64
}

// Export writes the TPM state held in the store to dir, creating it (mode
// 0700) if needed, so that swtpm --tpmstate dir=DIR runs on it: each state
// file is written to a temporary file, synced and renamed into place (mode
// 0600), state files the store does not hold are removed, and the directory
// is synced. All entries are read from one snapshot; a state entry that
// cannot be used (nvram.ErrUnknownMandatory) fails the export before any
// file is written.
func Export(s *nvram.Store, dir string) (*ExportResult, error) {
	d, err := s.Snapshot()
	if err != nil {
		return nil, err
	}
	if !d.Has(PermAll) {
		return nil, ErrNoState
	}
	var entries []*nvram.Entry
	for _, name := range StateFiles {
		if !d.Has(name) {
			entries = append(entries, nil)
			continue
		}
		e, err := d.Get(name)
		if err != nil {
			return nil, fmt.Errorf("tpm: %w", err)
		}
		if e.Type != nvram.TypeTPM {
			return nil, fmt.Errorf("tpm: entry %q has type %q, not %q: %w", name, e.Type, nvram.TypeTPM, fs.ErrInvalid)
		}
		entries = append(entries, e)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tpm: %w", err)
	}
	res := &ExportResult{}
	for i, name := range StateFiles {
		path := filepath.Join(dir, name)
		if entries[i] == nil {
			err := os.Remove(path)
			if err == nil {
				res.Removed = append(res.Removed, name)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return res, fmt.Errorf("tpm: removing stale %w", err)
			}
			continue
		}
		if err := atomicfile.Write(path, entries[i].Data, 0o600); err != nil {
			return res, fmt.Errorf("tpm: %w", err)
		}
		res.Files = append(res.Files, name)
		res.Bytes += int64(len(entries[i].Data))
	}
	if err := syncDir(dir); err != nil {
		return res, fmt.Errorf("tpm: %w", err)
	}
	return res, nil
}

// ImportResult lists what Import stored.
type ImportResult struct {
	Entries []string // state entries written, in StateFiles order
	Removed []string // state entries removed because dir lacks their file
	Bytes   int64
}

// Import stores the TPM state files in dir (as swtpm --tpmstate dir=DIR
// leaves them) in the store, in one transaction: an entry per file, and
// state entries whose file is absent are removed. dir must hold PermAll.
// Existing entries keep their attributes; only their data changes. Nothing
// is written if any file cannot be read.
func Import(ctx context.Context, s *nvram.Store, dir string) (*ImportResult, error) {
	files := make([][]byte, len(StateFiles))
	for i, name := range StateFiles {
		b, err := readStateFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) && name != PermAll {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("tpm: %w", err)
		}
		files[i] = b
	}
	res := &ImportResult{}
	err := s.Update(ctx, func(d *nvram.Directory) error {
		*res = ImportResult{}
		for i, name := range StateFiles {
			if files[i] == nil {
				if d.Has(name) {
					if err := d.Remove(name); err != nil {
						return err
					}
					res.Removed = append(res.Removed, name)
				}
				continue
			}
			if err := putState(d, name, files[i]); err != nil {
				return err
			}
			res.Entries = append(res.Entries, name)
			res.Bytes += int64(len(files[i]))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// putState writes one state entry, keeping the attributes of a usable
// existing entry of type tpm.
func putState(d *nvram.Directory, name string, data []byte) error {
	e := &nvram.Entry{Name: name, Type: nvram.TypeTPM}
	if old, err := d.Get(name); err == nil && old.Type == nvram.TypeTPM {
		e = old
	}
	e.Data = data
	return d.Put(e)
}

// readStateFile reads a regular file of at most MaxStateFile bytes.
func readStateFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file: %w", path, fs.ErrInvalid)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxStateFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > MaxStateFile {
		return nil, fmt.Errorf("%s is larger than %d bytes: %w", path, MaxStateFile, fs.ErrInvalid)
	}
	return b, nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
