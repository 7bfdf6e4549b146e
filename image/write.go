package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sealfs/sealfs/errs"
)

// emptyConfig is the OCI empty JSON blob, "{}".
var emptyConfig = []byte("{}")

// createLayout opens the OCI layout in dir, creating it (and dir) if it
// does not exist yet: the oci-layout file, then an index.json without
// manifests, so that a layout is valid from the start and stays valid if
// what fills it (a build, a pull) is interrupted. A directory that exists
// and is not empty must already be a layout; one that has its oci-layout
// file but no index.json (creation cut short) gets an empty index.json.
func createLayout(dir string) (*Layout, error) {
	l, err := OpenLayout(dir)
	if errors.Is(err, fs.ErrNotExist) && fileExists(filepath.Join(dir, "oci-layout")) && !fileExists(filepath.Join(dir, "index.json")) {
		if err := writeFileAtomic(dir, "index.json", emptyIndex); err != nil {
			return nil, err
		}
		l, err = OpenLayout(dir)
	}
	if err == nil {
		if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
		l.removeStaleTemps()
		return l, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		for _, e := range ents {
			if e.Name() == "oci-layout" {
				return nil, fmt.Errorf("image: %s: oci-layout exists but the layout does not open: %w", dir, errs.ErrCorrupt)
			}
		}
		return nil, fmt.Errorf("image: %s is neither an OCI layout nor empty", dir)
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	if err := writeFileAtomic(dir, "oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(dir, "index.json", emptyIndex); err != nil {
		return nil, err
	}
	return &Layout{dir: dir}, nil
}

// emptyIndex is the index.json of a new layout. setTag keeps its fields,
// so the first tag's index.json is what it would be without it.
var emptyIndex = []byte(`{"manifests":[],"schemaVersion":2}`)

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// writeFileAtomic replaces dir/name with data: a synced temporary file
// renamed over it, then the directory synced.
func writeFileAtomic(dir, name string, data []byte) error {
	if err := renameIntoPlace(filepath.Join(dir, name), "."+name+".tmp-*", data, true); err != nil {
		return fmt.Errorf("image: writing %s: %w", name, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("image: sync %s: %w", dir, err)
	}
	return nil
}

// renameIntoPlace writes data to a temporary file (named by pattern, in p's
// directory), fsynced if sync is set, and renames it to p.
func renameIntoPlace(p, pattern string, data []byte, sync bool) error {
	f, err := os.CreateTemp(filepath.Dir(p), pattern)
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// syncDir fsyncs a directory, making the entries created in it durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// putBlob stores b under its sha256 name unless an intact copy is there
// already, and reports whether it wrote it. A blob file whose bytes do not
// match its name (left by a crash or damaged) is replaced. Blobs are not
// synced one by one; syncBlobs makes them durable before anything refers
// to them.
func (l *Layout) putBlob(b []byte) (Digest, bool, error) {
	d := Digest(sha256.Sum256(b))
	p := l.BlobPath(d)
	if st, err := os.Lstat(p); err == nil && st.Mode().IsRegular() && st.Size() == int64(len(b)) {
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, b) {
			return d, false, nil
		}
	}
	if err := writeNewFile(p, b); err != nil {
		return d, false, fmt.Errorf("image: blob %s: %w", d, err)
	}
	return d, true, nil
}

// writeNewFile makes p a file holding b, replacing whatever is there, so
// that p never names a partial file: an unnamed O_TMPFILE file linked into
// place when it is complete (nothing is left behind if the build dies), or,
// where the file system lacks O_TMPFILE, a temporary name renamed over p.
func writeNewFile(p string, b []byte) error {
	dir := filepath.Dir(p)
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err == nil {
		f := os.NewFile(uintptr(fd), p)
		_, err = f.Write(b)
		if err == nil {
			err = unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, p, unix.AT_SYMLINK_FOLLOW)
			if errors.Is(err, unix.EEXIST) { // a damaged blob: replace it
				if err = os.Remove(p); err == nil {
					err = unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, p, unix.AT_SYMLINK_FOLLOW)
				}
			}
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil || !errors.Is(err, unix.ENOENT) {
			return err
		}
		// /proc is not mounted: fall back to a named temporary file.
	}
	return renameIntoPlace(p, ".blob.tmp-*", b, false)
}

// staleTemp is how old a build's temporary blob must be before a later
// build removes it: an interrupted build leaves them behind, a running one
// renames them within moments.
const staleTemp = time.Hour

// removeStaleTemps removes temporary blob files left by interrupted builds.
func (l *Layout) removeStaleTemps() {
	dir := filepath.Join(l.dir, "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".blob.tmp-") {
			continue
		}
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleTemp {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// syncBlobs makes every blob written so far durable: one syncfs of the
// file system holding the layout instead of an fsync per chunk, then the
// blob directory itself.
func (l *Layout) syncBlobs() error {
	dir := filepath.Join(l.dir, "blobs", "sha256")
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("image: syncfs %s: %w", dir, err)
	}
	runtime.KeepAlive(d)
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("image: sync %s: %w", dir, err)
	}
	return nil
}

// canonicalJSON encodes v the way puzzlefs's OCI library writes JSON: keys
// sorted, no white space, no HTML escaping, no trailing newline.
func canonicalJSON(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(generic); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// lockLayout takes an exclusive lock on the layout directory, held while
// index.json is read and replaced, so concurrent builds into one layout do
// not lose each other's tags.
func (l *Layout) lockLayout() (unlock func(), err error) {
	d, err := os.Open(l.dir)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		d.Close()
		return nil, fmt.Errorf("image: lock %s: %w", l.dir, err)
	}
	return func() { d.Close() }, nil
}

// setTag points tag at the manifest desc in index.json, replacing an entry
// with the same tag and keeping every other entry and field as it is.
func (l *Layout) setTag(tag string, desc Descriptor) error {
	unlock, err := l.lockLayout()
	if err != nil {
		return err
	}
	defer unlock()
	index := map[string]any{}
	raw, err := readSmall(filepath.Join(l.dir, "index.json"), maxJSONSize)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		index["schemaVersion"] = 2
	case err != nil:
		return err
	default:
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&index); err != nil {
			return fmt.Errorf("image: index.json: %w: %w", err, errs.ErrCorrupt)
		}
	}
	var kept []any
	if old, ok := index["manifests"].([]any); ok {
		for _, m := range old {
			if e, ok := m.(map[string]any); ok {
				if a, ok := e["annotations"].(map[string]any); ok && a[AnnotationRefName] == tag {
					continue
				}
			}
			kept = append(kept, m)
		}
	}
	index["manifests"] = append(kept, desc)
	out, err := canonicalJSON(index)
	if err != nil {
		return fmt.Errorf("image: index.json: %w", err)
	}
	return writeFileAtomic(l.dir, "index.json", out)
}

// ociArch is the platform architecture puzzlefs records: the build
// machine's, in OCI (= Go) naming.
func ociArch() string { return runtime.GOARCH }
