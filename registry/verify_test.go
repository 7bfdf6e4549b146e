package registry

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sealfs/sealfs/errs"
)

// TestVerifyingReader: a local blob that does not match its descriptor
// never hands out its last bytes, so an upload of it cannot complete;
// one that matches reads whole, however the source splits its reads.
func TestVerifyingReader(t *testing.T) {
	good := bytes.Repeat([]byte("blob "), 1000)
	desc := ocispec.Descriptor{Digest: digest.FromBytes(good), Size: int64(len(good))}
	altered := bytes.Clone(good)
	altered[len(altered)-1] ^= 1
	for _, c := range []struct {
		name string
		src  []byte
		ok   bool
	}{
		{"matches", good, true},
		{"last byte altered", altered, false},
		{"one byte short", good[:len(good)-1], false},
		{"one byte more", append(bytes.Clone(good), '!'), false},
	} {
		for _, split := range []struct {
			name string
			wrap func(io.Reader) io.Reader
		}{
			{"whole", func(r io.Reader) io.Reader { return r }},
			{"one byte at a time", iotest.OneByteReader},
			{"data with EOF", iotest.DataErrReader},
		} {
			v := &verifyingReader{r: split.wrap(bytes.NewReader(c.src)), c: io.NopCloser(nil), desc: desc, h: mustHash(desc.Digest)}
			got, err := io.ReadAll(v)
			if c.ok {
				if err != nil || !bytes.Equal(got, good) {
					t.Errorf("%s, %s: %d bytes, %v; want the blob", c.name, split.name, len(got), err)
				}
				continue
			}
			if !errors.Is(err, errs.ErrAuthentication) || len(got) >= len(good) {
				t.Errorf("%s, %s: %d bytes, %v; want fewer than %d and ErrAuthentication", c.name, split.name, len(got), err, len(good))
			}
		}
	}
}
