package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out")
	if err := Write(p, []byte("first"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("second"), 0o640); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "second" {
		t.Fatalf("contents %q", b)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v", st.Mode())
	}
	// A failing fill leaves the old contents and no temporary file.
	boom := errors.New("boom")
	if err := WriteFrom(p, 0o600, func(w io.Writer) error {
		w.Write([]byte("partial"))
		return boom
	}); err != boom {
		t.Fatalf("WriteFrom = %v, want the fill's error", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "second" {
		t.Fatalf("a failed write changed the file to %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("%d entries left in the directory", len(ents))
	}
}
