package image

import (
	"regexp"
	"strings"
	"testing"
)

// TestValidTag checks the hand-written tag check against the OCI grammar
// as a regexp.
func TestValidTag(t *testing.T) {
	grammar := regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	cases := []string{"", "v1", "V1.0-rc_2", "_x", ".x", "-x", "x.", "x-", "a/b", "a:b", "ä", "a b",
		strings.Repeat("a", 128), strings.Repeat("a", 129), "latest", "1", "a..b", "x\n"}
	for _, c := range cases {
		if got, want := ValidTag(c), grammar.MatchString(c); got != want {
			t.Errorf("ValidTag(%q) = %v, the grammar says %v", c, got, want)
		}
	}
}

func FuzzValidTag(f *testing.F) {
	grammar := regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	for _, s := range []string{"v1", "-a", "a.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidTag(s), grammar.MatchString(s); got != want {
			t.Fatalf("ValidTag(%q) = %v, the grammar says %v", s, got, want)
		}
	})
}
