package registry

import (
	"fmt"
	"io/fs"
	"strings"

	orasreg "oras.land/oras-go/v2/registry"
)

// Reference names a repository in a registry, and optionally a tag or a
// manifest digest in it: REGISTRY/REPOSITORY[:TAG][@DIGEST].
type Reference struct {
	// Registry is the host, with a port when one was given
	// ("127.0.0.1:5000", "ghcr.io").
	Registry string
	// Repository is the path inside the registry ("sealfs/images").
	Repository string
	// Tag is "" when none was given.
	Tag string
	// Digest pins a manifest ("sha256:<hex>"); "" when none was given.
	// With both, the digest is what is fetched and the tag only informs.
	Digest string
}

// IsReference reports whether s names something in a registry rather than
// a local path, by docker's rule: s has a '/', and the part before the
// first one holds a '.' or a ':' or is "localhost". "127.0.0.1:5000/a:v1",
// "ghcr.io/org/img:v1" and "localhost/a:v1" are references; "oci:v1",
// "dir/oci:v1", "/abs/oci:v1" are paths. A path whose first element looks
// like a host is written "./my.dir/oci:v1" ("." and ".." are never hosts).
func IsReference(s string) bool {
	first, _, ok := strings.Cut(s, "/")
	if !ok || first == "." || first == ".." {
		return false
	}
	return strings.ContainsAny(first, ".:") || first == "localhost"
}

// ParseReference parses REGISTRY/REPOSITORY[:TAG][@DIGEST]. The repository
// must follow the distribution grammar (lowercase path components), the tag
// the OCI tag grammar, the digest "algorithm:hex". Errors wrap fs.ErrInvalid.
func ParseReference(s string) (Reference, error) {
	var r Reference
	if !IsReference(s) {
		return r, fmt.Errorf("registry: %q is not a registry reference (want HOST/REPOSITORY[:TAG]; the host needs a '.' or ':' or must be localhost): %w", s, fs.ErrInvalid)
	}
	rest := s
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		r.Digest = rest[i+1:]
		rest = rest[:i]
		if r.Digest == "" {
			return Reference{}, fmt.Errorf("registry: reference %q: empty digest after '@': %w", s, fs.ErrInvalid)
		}
	}
	r.Registry, rest, _ = strings.Cut(rest, "/")
	// A tag follows the last ':' after the last '/'; the registry part
	// (already cut off) may hold a port.
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.Contains(rest[i:], "/") {
		r.Tag = rest[i+1:]
		rest = rest[:i]
		if r.Tag == "" {
			return Reference{}, fmt.Errorf("registry: reference %q: empty tag after ':': %w", s, fs.ErrInvalid)
		}
	}
	r.Repository = rest
	if err := r.validate(); err != nil {
		return Reference{}, fmt.Errorf("registry: reference %q: %w: %w", s, err, fs.ErrInvalid)
	}
	return r, nil
}

// validate checks each part with the grammar oras applies.
func (r Reference) validate() error {
	o := orasreg.Reference{Registry: r.Registry, Repository: r.Repository}
	if err := o.ValidateRegistry(); err != nil {
		return err
	}
	if err := o.ValidateRepository(); err != nil {
		return err
	}
	if r.Tag != "" {
		o.Reference = r.Tag
		if err := o.ValidateReferenceAsTag(); err != nil {
			return err
		}
	}
	if r.Digest != "" {
		o.Reference = r.Digest
		if err := o.ValidateReferenceAsDigest(); err != nil {
			return err
		}
	}
	return nil
}

// String formats the reference as ParseReference reads it.
func (r Reference) String() string {
	s := r.Registry + "/" + r.Repository
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// Name is REGISTRY/REPOSITORY, without tag or digest.
func (r Reference) Name() string { return r.Registry + "/" + r.Repository }

// Manifest is what to resolve in the repository: the digest when there is
// one, else the tag ("" when neither was given).
func (r Reference) Manifest() string {
	if r.Digest != "" {
		return r.Digest
	}
	return r.Tag
}
