package delivery

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
)

func FuzzDecode(f *testing.F) {
	for _, data := range [][]byte{
		nil, {1, 2, 3, 4}, bytes.Repeat([]byte{0xff}, 8192), make([]byte, 2*defaultChunk+7),
		mixed(3*defaultChunk+100, 1), random(100, 2), text(1000, 3),
	} {
		var b bytes.Buffer
		if err := Encode(&b, data); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
	}
	f.Add(assembleEntries(nil, nil, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
		}
		// The stream decoder, in both chunk modes, agrees with Decode.
		for _, lim := range []uint64{0, 1} {
			got2, d, err2 := decodeStream(b, lim, nil)
			if (err == nil) != (err2 == nil) {
				t.Fatalf("Decode err %v, stream (limit %d) err %v", err, lim, err2)
			}
			if err2 != nil && !errors.Is(err2, ErrCorrupt) {
				t.Fatalf("stream error does not wrap ErrCorrupt: %v", err2)
			}
			if err == nil && (!bytes.Equal(got, got2) || d.Size() != int64(len(got))) {
				t.Fatal("stream decode differs from Decode")
			}
		}
		if err != nil {
			return
		}
		var enc bytes.Buffer
		if err := Encode(&enc, got); err != nil {
			t.Fatal(err)
		}
		again, err := Decode(enc.Bytes())
		if err != nil || !bytes.Equal(again, got) {
			t.Fatalf("re-encoded blob does not round-trip: %v", err)
		}
	})
}

// benchData is 16 MiB of mixed text, zero and random runs.
var benchData = sync16()

func sync16() func() []byte {
	var b []byte
	return func() []byte {
		if b == nil {
			b = mixed(16<<20, 42)
		}
		return b
	}
}

func BenchmarkEncode(b *testing.B) {
	data := benchData()
	var out bytes.Buffer
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		out.Reset()
		if err := Encode(&out, data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(out.Len())/float64(len(data)), "ratio")
}

func BenchmarkDecode(b *testing.B) {
	data := benchData()
	var blob bytes.Buffer
	if err := Encode(&blob, data); err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{"Decode", "Stream", "StreamLargeChunks"} {
		b.Run(mode, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for range b.N {
				var err error
				switch mode {
				case "Decode":
					_, err = Decode(blob.Bytes())
				default:
					var d *Decoder
					d, err = NewDecoder(bytes.NewReader(blob.Bytes()))
					if err == nil {
						if mode == "StreamLargeChunks" {
							d.bufLimit = 1 // the path chunks over 4 MiB take
						}
						_, err = io.Copy(io.Discard, d)
					}
				}
				if err != nil {
					b.Fatal(fmt.Errorf("%s: %w", mode, err))
				}
			}
		})
	}
}
