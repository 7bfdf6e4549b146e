package cocoonfs

import (
	"testing"
	"testing/fstest"
)

func TestIOFS(t *testing.T) {
	for _, v := range formatted {
		t.Run(v.image, func(t *testing.T) {
			f, err := Open(openVector(t, v.image), vectorKey, nil)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for ino := range v.files {
				names = append(names, formatIno(ino))
			}
			if err := fstest.TestFS(f.FS(), names...); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestParseName(t *testing.T) {
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"42", true}, {"16", true}, {"18446744073709551615", true},
		{"042", false}, {"+42", false}, {"0x2a", false}, {"1", false}, {"", false}, {"42/x", false},
		{"18446744073709551616", false},
	} {
		if _, ok := parseName(c.name); ok != c.ok {
			t.Errorf("parseName(%q) ok = %v, want %v", c.name, ok, c.ok)
		}
	}
}
