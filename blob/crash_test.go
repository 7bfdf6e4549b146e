package blob

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sealfs/sealfs/merkle"
)

// The test binary doubles as a writer process that the crash tests kill.
// crashEnv selects the mode, crashDirEnv the store, crashBytesEnv how many
// bytes to write before announcing "ready" and waiting to be killed.
const (
	crashEnv      = "SEALFS_BLOB_CRASH_CHILD"
	crashDirEnv   = "SEALFS_BLOB_CRASH_DIR"
	crashBytesEnv = "SEALFS_BLOB_CRASH_BYTES"
)

func TestMain(m *testing.M) {
	switch os.Getenv(crashEnv) {
	case "":
		os.Exit(m.Run())
	case "partial":
		crashChildPartial()
	case "loop":
		crashChildLoop()
	}
	fmt.Fprintln(os.Stderr, "unknown crash child mode")
	os.Exit(3)
}

// crashData is what the children install: deterministic, several blocks.
func crashData(i int) []byte { return randBytes(uint64(1000+i), 40*blockSize+i*999) }

// crashChildPartial writes N bytes of crashData(0) (and flushes them to the
// temporary file), says "ready" and waits for SIGKILL.
func crashChildPartial() {
	s, err := Open(os.Getenv(crashDirEnv), &Options{Create: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	n, _ := strconv.Atoi(os.Getenv(crashBytesEnv))
	data := crashData(0)
	w, err := s.Create(merkle.FuchsiaRoot(data), int64(len(data)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	w.Write(data[:n])
	w.bw.Flush()
	fmt.Println("ready")
	for {
		time.Sleep(time.Hour) // not select{}: the runtime would call that a deadlock and exit
	}
}

// crashChildLoop installs and removes blobs until it is killed, so the
// kill lands anywhere: in a write, in Close's fsync, link or cleanup.
func crashChildLoop() {
	s, err := Open(os.Getenv(crashDirEnv), &Options{Create: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("ready")
	for i := 0; ; i++ {
		data := crashData(i % 7)
		name := merkle.FuchsiaRoot(data)
		if err := s.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			os.Exit(1)
		}
		if _, err := s.Put(bytes.NewReader(data)); err != nil {
			os.Exit(1)
		}
	}
}

// startChild runs the test binary as a crash child and waits for "ready".
func startChild(t *testing.T, mode, dir string, n int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnv+"="+mode, crashDirEnv+"="+dir, crashBytesEnv+"="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child did not get ready: %q, %v", line, err)
	}
	return cmd
}

func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v", err)
	}
}

// TestCrashMidInstall kills a writer after N bytes (and after all bytes,
// before Close), then reopens the store: no blob is visible, the temporary
// file is gone, and the blob installs normally.
func TestCrashMidInstall(t *testing.T) {
	data := crashData(0)
	name := merkle.FuchsiaRoot(data)
	for _, n := range []int{0, 1, blockSize + 17, len(data) / 2, len(data)} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			dir := t.TempDir() + "/store"
			cmd := startChild(t, "partial", dir, n)
			kill(t, cmd)
			s := &Store{dir: dir, blobs: dir + "/" + blobsDir, tmp: dir + "/" + tmpDir}
			if tmp, _ := s.tempFiles(); len(tmp) != 1 {
				t.Fatalf("before reopening: temp files %v, want the killed writer's", tmp)
			}
			s, err := Open(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkNoTemp(t, s)
			if names, _ := s.List(); len(names) != 0 {
				t.Fatalf("visible after a killed install: %v", names)
			}
			if _, err := s.Open(name); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Open = %v, want fs.ErrNotExist", err)
			}
			install(t, s, data)
			if err := s.Verify(name); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCrashAnywhere kills a process that installs and removes blobs in a
// loop at varying moments. Afterwards every visible blob verifies and
// reopening leaves no temporary file.
func TestCrashAnywhere(t *testing.T) {
	known := map[merkle.Digest]bool{}
	for i := range 7 {
		known[merkle.FuchsiaRoot(crashData(i))] = true
	}
	dir := t.TempDir() + "/store"
	for i := range 6 {
		cmd := startChild(t, "loop", dir, 0)
		time.Sleep(time.Duration(5+i*17) * time.Millisecond)
		kill(t, cmd)
		s, err := Open(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkNoTemp(t, s)
		names, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if !known[n] {
				t.Fatalf("unexpected blob %s", n)
			}
			if err := s.Verify(n); err != nil {
				t.Fatalf("after kill %d: %v", i, err)
			}
		}
	}
}
