package blob

import (
	"bytes"
	"errors"
	"io/fs"
	"testing"

	"github.com/sealfs/sealfs/blob/delivery"
	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/merkle"
)

func encodeDelivery(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := delivery.Encode(&buf, data); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestDeliveryRoundTrip installs compressed and uncompressed delivery
// blobs under their names (InstallDelivery) and by content (PutDelivery).
func TestDeliveryRoundTrip(t *testing.T) {
	compressible := bytes.Repeat([]byte("sealfs delivery blob "), 40000)
	for name, data := range map[string][]byte{
		"empty":        nil,
		"small":        []byte("hello"),
		"random":       randBytes(600, 3*blockSize+9),
		"compressible": compressible,
	} {
		t.Run(name, func(t *testing.T) {
			enc := encodeDelivery(t, data)
			root := merkle.FuchsiaRoot(data)
			s := newStore(t)
			if err := s.InstallDelivery(bytes.NewReader(enc), root); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, s, root); !bytes.Equal(got, data) {
				t.Fatal("wrong bytes")
			}
			s2 := newStore(t)
			got, err := s2.PutDelivery(bytes.NewReader(enc))
			if err != nil || got != root {
				t.Fatalf("PutDelivery = %s, %v; want %s", got, err, root)
			}
			if err := s.InstallDelivery(bytes.NewReader(enc), root); !errors.Is(err, fs.ErrExist) {
				t.Fatalf("second InstallDelivery = %v, want fs.ErrExist", err)
			}
		})
	}
}

// TestDeliveryBad: a delivery blob for another name, a truncated one and
// a corrupted one install nothing and say why.
func TestDeliveryBad(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 10000)
	enc := encodeDelivery(t, data)
	name := merkle.FuchsiaRoot(data)
	s := newStore(t)

	wrong := merkle.FuchsiaRoot([]byte("something else"))
	if err := s.InstallDelivery(bytes.NewReader(enc), wrong); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("wrong name: %v, want ErrIntegrity", err)
	}
	for _, cut := range []int{0, 5, 27, 28, 40, len(enc) / 2, len(enc) - 1} {
		if err := s.InstallDelivery(bytes.NewReader(enc[:cut]), name); !errors.Is(err, delivery.ErrCorrupt) {
			t.Fatalf("truncated at %d: %v, want delivery.ErrCorrupt", cut, err)
		}
		if _, err := s.PutDelivery(bytes.NewReader(enc[:cut])); !errors.Is(err, errs.ErrCorrupt) {
			t.Fatalf("PutDelivery truncated at %d: %v", cut, err)
		}
	}
	for _, off := range []int{0, 4, 12, 20, 24, 30, 50, len(enc) - 5} {
		bad := bytes.Clone(enc)
		bad[off] ^= 0x40
		err := s.InstallDelivery(bytes.NewReader(bad), name)
		if !errors.Is(err, delivery.ErrCorrupt) && !errors.Is(err, ErrIntegrity) {
			t.Fatalf("byte %d flipped: %v, want delivery.ErrCorrupt or ErrIntegrity", off, err)
		}
	}
	if names, _ := s.List(); len(names) != 0 {
		t.Fatalf("visible after bad installs: %v", names)
	}
	checkNoTemp(t, s)
}
