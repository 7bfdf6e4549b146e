package registry

import (
	"errors"
	"io/fs"
	"testing"
)

func TestIsReference(t *testing.T) {
	for _, c := range []struct {
		s    string
		want bool
	}{
		{"127.0.0.1:5000/img:v1", true},
		{"localhost/img:v1", true},
		{"localhost:5000/a/b", true},
		{"ghcr.io/org/img:v1", true},
		{"registry.example.com/img", true},
		{"oci:v1", false},           // a layout and a tag
		{"dir/oci:v1", false},       // no '.' or ':' before the first '/'
		{"/abs/oci:v1", false},      // absolute path
		{"./my.dir/oci:v1", false},  // the escape for a host-like directory
		{"../my.dir/oci:v1", false}, // likewise
		{"my.dir/oci:v1", true},     // looks like a host: a reference
		{"localhostx/oci:v1", false},
		{"", false},
	} {
		if got := IsReference(c.s); got != c.want {
			t.Errorf("IsReference(%q) = %v, want %v", c.s, got, c.want)
		}
	}
}

func TestParseReference(t *testing.T) {
	const dg = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, c := range []struct {
		s    string
		want Reference
	}{
		{"127.0.0.1:5000/img:v1", Reference{"127.0.0.1:5000", "img", "v1", ""}},
		{"127.0.0.1:5000/img", Reference{"127.0.0.1:5000", "img", "", ""}},
		{"localhost/a/b/c:latest", Reference{"localhost", "a/b/c", "latest", ""}},
		{"ghcr.io/org/img@" + dg, Reference{"ghcr.io", "org/img", "", dg}},
		{"ghcr.io/org/img:v2@" + dg, Reference{"ghcr.io", "org/img", "v2", dg}},
	} {
		got, err := ParseReference(c.s)
		if err != nil {
			t.Errorf("ParseReference(%q): %v", c.s, err)
			continue
		}
		if got != c.want {
			t.Errorf("ParseReference(%q) = %+v, want %+v", c.s, got, c.want)
		}
		if got.String() != c.s {
			t.Errorf("ParseReference(%q).String() = %q", c.s, got.String())
		}
	}
	for _, bad := range []string{
		"oci:v1",                       // not a reference
		"127.0.0.1:5000/Img:v1",        // upper case repository
		"127.0.0.1:5000/img:bad/tag",   // '/' after the tag colon belongs to the path, then "bad" has no tag
		"127.0.0.1:5000/img:-v1",       // tag grammar
		"127.0.0.1:5000/img@sha256:xy", // digest grammar
		"127.0.0.1:5000/",              // no repository
		"127.0.0.1:5000/img:",          // empty tag
	} {
		if r, err := ParseReference(bad); err == nil {
			// "img:bad/tag" parses as repository "img:bad/tag", which the
			// repository grammar refuses; anything accepted is a bug.
			t.Errorf("ParseReference(%q) = %+v, want an error", bad, r)
		} else if !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("ParseReference(%q): %v, want fs.ErrInvalid", bad, err)
		}
	}
}

// FuzzParseReference: whatever parses formats back to itself and parses
// again to the same value.
func FuzzParseReference(f *testing.F) {
	for _, s := range []string{"127.0.0.1:5000/img:v1", "ghcr.io/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "localhost/x", "oci:v1", "a.b/c:d:e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseReference(s)
		if err != nil {
			return
		}
		r2, err := ParseReference(r.String())
		if err != nil || r2 != r {
			t.Fatalf("%q parsed to %+v, whose String %q parses to %+v, %v", s, r, r.String(), r2, err)
		}
	})
}
