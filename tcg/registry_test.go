package tcg

import (
	"errors"
	"strings"
	"testing"
)

func TestAlgIDString(t *testing.T) {
	tests := []struct {
		id   AlgID
		want string
	}{
		{AlgSHA1, "SHA1"},
		{AlgAES, "AES"},
		{AlgSHA256, "SHA256"},
		{AlgSHA384, "SHA384"},
		{AlgSHA512, "SHA512"},
		{AlgNull, "NULL"},
		{AlgSM3_256, "SM3_256"},
		{AlgSM4, "SM4"},
		{AlgCamellia, "CAMELLIA"},
		{AlgSHA3_256, "SHA3_256"},
		{AlgSHA3_384, "SHA3_384"},
		{AlgSHA3_512, "SHA3_512"},
		{AlgCBC, "CBC"},
		{AlgID(0x1234), "0x1234"},
		{AlgID(0xabcd), "0xabcd"},
		{AlgID(0x0001), "0x0001"},
	}
	for _, tc := range tests {
		if got := tc.id.String(); got != tc.want {
			t.Errorf("AlgID(%#04x).String() = %q, want %q", uint16(tc.id), got, tc.want)
		}
	}
}

// TestAlgIDValues pins the registry numbers, which are on-disk format.
func TestAlgIDValues(t *testing.T) {
	want := map[AlgID]uint16{
		AlgSHA1: 0x0004, AlgAES: 0x0006, AlgSHA256: 0x000B, AlgSHA384: 0x000C, AlgSHA512: 0x000D,
		AlgNull: 0x0010, AlgSM3_256: 0x0012, AlgSM4: 0x0013, AlgCamellia: 0x0026,
		AlgSHA3_256: 0x0027, AlgSHA3_384: 0x0028, AlgSHA3_512: 0x0029, AlgCBC: 0x0042,
	}
	for id, v := range want {
		if uint16(id) != v {
			t.Errorf("%s = %#04x, want %#04x", id, uint16(id), v)
		}
	}
}

func TestLookupErrorsNameTheID(t *testing.T) {
	checks := []struct {
		err     error
		mention string
	}{
		{func() error { _, err := LookupHash(0x1234); return err }(), "0x1234"},
		{func() error { _, err := LookupHash(AlgCBC); return err }(), "CBC (0x0042)"},
		{func() error { _, err := LookupBlockCipher(0x4321, 128); return err }(), "0x4321"},
		{func() error { _, err := LookupBlockCipher(AlgAES, 100); return err }(), "100"},
		{func() error { _, err := LookupBlockCipher(AlgSHA256, 256); return err }(), "SHA256"},
	}
	for _, c := range checks {
		if !errors.Is(c.err, ErrUnsupportedAlgorithm) {
			t.Errorf("%v does not wrap ErrUnsupportedAlgorithm", c.err)
			continue
		}
		if !strings.Contains(c.err.Error(), c.mention) {
			t.Errorf("error %q does not mention %q", c.err, c.mention)
		}
	}
}
