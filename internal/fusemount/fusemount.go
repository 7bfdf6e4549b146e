// Package fusemount holds what the read-write FUSE views of sealfs
// (cocoonfs/fusefs, nvram/fusefs) share about mount points: finding FUSE
// mounts in /proc/self/mountinfo, unmounting them with fusermount3, and
// clearing the dead mount a killed server leaves behind.
//
// A FUSE server that dies without unmounting (kill -9, a crash) leaves its
// mount point in place; every access to it then fails with ENOTCONN until
// it is unmounted. Such a mount holds no data, so it is safe to detach
// lazily (fusermount3 -u -z) once nothing serves it any more.
package fusemount

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNotMounted: the path is not a mount point.
var ErrNotMounted = errors.New("not a mount point")

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	Mountpoint string // absolute, as the kernel names it
	FSType     string // e.g. "fuse.sealfs"
	Source     string
}

// IsFUSE reports whether the mount is a FUSE file system.
func (m Mount) IsFUSE() bool {
	return m.FSType == "fuse" || m.FSType == "fuseblk" || strings.HasPrefix(m.FSType, "fuse.")
}

// List returns the mounts of this process's mount namespace, in mount
// order (a later mount on the same path hides an earlier one).
func List() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("fusemount: %w", err)
	}
	defer f.Close()
	var out []Mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		m := Mount{Mountpoint: unescape(fields[4])}
		for i := 5; i+1 < len(fields); i++ {
			if fields[i] == "-" {
				m.FSType = fields[i+1]
				if i+2 < len(fields) {
					m.Source = unescape(fields[i+2])
				}
				break
			}
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("fusemount: /proc/self/mountinfo: %w", err)
	}
	return out, nil
}

// Find returns the topmost mount on path (absolute and clean).
func Find(path string) (Mount, bool, error) {
	list, err := List()
	if err != nil {
		return Mount{}, false, err
	}
	var found Mount
	ok := false
	for _, m := range list {
		if m.Mountpoint == path {
			found, ok = m, true
		}
	}
	return found, ok, nil
}

// WithSource returns the mount points of the FUSE mounts of type fstype
// whose source is source, e.g. every mount a server made of one image.
func WithSource(fstype, source string) ([]string, error) {
	list, err := List()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range list {
		if m.FSType == fstype && m.Source == source {
			out = append(out, m.Mountpoint)
		}
	}
	return out, nil
}

// Source turns a name (an image's path) into a mount source fusermount3
// accepts, since it separates its options by commas: commas become
// underscores. /proc/self/mountinfo shows the result.
func Source(name string) string { return strings.ReplaceAll(name, ",", "_") }

// Resolve makes mountpoint absolute, resolving symbolic links in its
// parent but not in the mount point itself: a dead server makes any stat
// of the mount point fail.
func Resolve(mountpoint string) (string, error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return "", fmt.Errorf("fusemount: %q: %w", mountpoint, err)
	}
	if dir, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		abs = filepath.Join(dir, filepath.Base(abs))
	}
	return abs, nil
}

// Unmount unmounts the FUSE file system on mountpoint with fusermount3 -u
// (or fusermount -u, or umount(2) when neither is installed); with lazy,
// it detaches the mount even while it is busy or its server is dead (-z).
// A path that is not a mount point is ErrNotMounted; one that is not a
// FUSE mount is refused with fs.ErrInvalid.
func Unmount(mountpoint string, lazy bool) error {
	abs, err := Resolve(mountpoint)
	if err != nil {
		return err
	}
	m, ok, err := Find(abs)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("fusemount: %s: %w", abs, ErrNotMounted)
	}
	if !m.IsFUSE() {
		return fmt.Errorf("fusemount: %s is a %s mount, not a FUSE one: %w", abs, m.FSType, fs.ErrInvalid)
	}
	for _, name := range []string{"fusermount3", "fusermount"} {
		bin, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		args := []string{"-u"}
		if lazy {
			args = append(args, "-z")
		}
		// abs starts with '/', so it cannot be taken for an option.
		if out, err := exec.Command(bin, append(args, abs)...).CombinedOutput(); err != nil {
			return fmt.Errorf("fusemount: %s %s %s: %v: %s", name, strings.Join(args, " "), abs, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	flags := 0
	if lazy {
		flags = unix.MNT_DETACH
	}
	if err := unix.Unmount(abs, flags); err != nil {
		return fmt.Errorf("fusemount: unmount %s (neither fusermount3 nor fusermount is installed): %w", abs, err)
	}
	return nil
}

// IsDead reports whether mountpoint is a FUSE mount whose server is gone:
// accessing it fails with ENOTCONN.
func IsDead(mountpoint string) bool {
	var st unix.Stat_t
	return errors.Is(unix.Stat(mountpoint, &st), unix.ENOTCONN)
}

// unescape undoes the kernel's octal escapes (\040 for a space, \011,
// \012, \134) in a mountinfo field.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
