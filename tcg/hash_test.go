package tcg

import (
	"bytes"
	"errors"
	"testing"
)

// TestHashKnownAnswers uses the "abc" examples of FIPS 180-4 (SHA-1/2),
// FIPS 202 (SHA-3) and GB/T 32905-2016 appendix A.1 (SM3).
func TestHashKnownAnswers(t *testing.T) {
	tests := []struct {
		id        AlgID
		size      int
		blockSize int
		abc       string
	}{
		{AlgSHA1, 20, 64, "a9993e364706816aba3e25717850c26c9cd0d89d"},
		{AlgSHA256, 32, 64, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{AlgSHA384, 48, 128, "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"},
		{AlgSHA512, 64, 128, "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"},
		{AlgSHA3_256, 32, 136, "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532"},
		{AlgSHA3_384, 48, 104, "ec01498288516fc926459f58e2c6ad8df9b473cb0fc08c2596da7cf0e49be4b298d88cea927ac7f539f1edf228376d25"},
		{AlgSHA3_512, 64, 72, "b751850b1a57168a5693cd924b6b096e08f621827444f70d884f5d0240d2712e10e116e9192af3c91a7ec57647e3934057340b4cf408d5a56592f8274eec53f0"},
		{AlgSM3_256, 32, 64, "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"},
	}
	for _, tc := range tests {
		t.Run(tc.id.String(), func(t *testing.T) {
			h, err := LookupHash(tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if h.ID != tc.id || h.Name != tc.id.String() || h.Size != tc.size || h.BlockSize != tc.blockSize {
				t.Errorf("descriptor = %+v", *h)
			}
			// The descriptor must agree with what the implementation reports,
			// since HMAC and KDFa rely on both.
			if d := h.New(); d.Size() != h.Size || d.BlockSize() != h.BlockSize {
				t.Errorf("New() reports size %d block %d, descriptor says %d/%d", d.Size(), d.BlockSize(), h.Size, h.BlockSize)
			}
			want := unhex(t, tc.abc)
			if got := h.Sum([]byte("abc")); !bytes.Equal(got, want) {
				t.Errorf("Sum(abc) = %x, want %x", got, want)
			}
			if got := h.Sum([]byte("a"), nil, []byte("bc")); !bytes.Equal(got, want) {
				t.Errorf("Sum(a, nil, bc) = %x, want %x", got, want)
			}
		})
	}
}

// TestHMACKnownAnswers uses RFC 4231 test cases 1, 2 and 6 (the last has a
// key longer than the block size, which HMAC must hash first).
func TestHMACKnownAnswers(t *testing.T) {
	long := bytes.Repeat([]byte{0xaa}, 131)
	tests := []struct {
		name      string
		id        AlgID
		key, data []byte
		want      string
	}{
		{"case1", AlgSHA256, bytes.Repeat([]byte{0x0b}, 20), []byte("Hi There"),
			"b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
		{"case1", AlgSHA512, bytes.Repeat([]byte{0x0b}, 20), []byte("Hi There"),
			"87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"},
		{"case2", AlgSHA256, []byte("Jefe"), []byte("what do ya want for nothing?"),
			"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
		{"case2", AlgSHA512, []byte("Jefe"), []byte("what do ya want for nothing?"),
			"164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"},
		{"case6", AlgSHA256, long, []byte("Test Using Larger Than Block-Size Key - Hash Key First"),
			"60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
		{"case6", AlgSHA512, long, []byte("Test Using Larger Than Block-Size Key - Hash Key First"),
			"80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f3526b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598"},
	}
	for _, tc := range tests {
		t.Run(tc.id.String()+"/"+tc.name, func(t *testing.T) {
			h, err := LookupHash(tc.id)
			if err != nil {
				t.Fatal(err)
			}
			m := h.NewHMAC(tc.key)
			m.Write(tc.data)
			if got, want := m.Sum(nil), unhex(t, tc.want); !bytes.Equal(got, want) {
				t.Errorf("got %x, want %x", got, want)
			}
		})
	}
}

func TestLookupHashErrors(t *testing.T) {
	for _, id := range []AlgID{0, 0x1234, AlgAES, AlgCamellia, AlgSM4, AlgCBC, AlgNull} {
		h, err := LookupHash(id)
		if h != nil || !errors.Is(err, ErrUnsupportedAlgorithm) {
			t.Errorf("LookupHash(%s) = %v, %v; want nil, ErrUnsupportedAlgorithm", id, h, err)
		}
	}
}

// TestLookupHashReturnsCopy guards the registry against callers that
// modify what they got back.
func TestLookupHashReturnsCopy(t *testing.T) {
	h, _ := LookupHash(AlgSHA256)
	h.Size = 1
	h.New = nil
	h2, _ := LookupHash(AlgSHA256)
	if h2.Size != 32 || h2.New == nil {
		t.Fatal("modifying a LookupHash result changed the registry")
	}
}
