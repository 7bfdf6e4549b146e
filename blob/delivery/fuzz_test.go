package delivery

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
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
	// A 5 MiB chunk (streamed) whose frame asks for a 128 MiB window, and a
	// seek table claiming a 1 TiB chunk from a 32 MiB frame that is not there.
	f.Add(assemble([][]byte{rleFrame(0x88, 40, 'x')}, []uint64{40 << 17}))
	f.Add(assembleEntries([]seekEntry{{0, 1 << 40, archiveHeaderSize + seekEntrySize, 32 << 20}}, nil, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
		}
		// The stream decoder, in both chunk modes, agrees with Decode, and
		// its memory is bounded by what the format allows, whatever the
		// headers claim (checkStreamMemory).
		for _, lim := range []uint64{0, 1} {
			checkStreamMemory(t, b, lim)
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

// streamMemorySlack covers the zstd decoders' own state (made once per
// process) and the test's bookkeeping.
const streamMemorySlack = 16 << 20

// checkStreamMemory decodes b with the stream decoder (chunks over
// bufLimit streamed; 0: the default) into a sink and checks what that
// allocated: at most two chunk buffers (a frame and its output, each at
// most bufLimit) when every chunk is buffered, plus the largest zstd
// window the decoder accepts when some chunk is streamed — never anything
// that grows with the sizes the headers or the seek table claim.
func checkStreamMemory(t *testing.T, b []byte, bufLimit uint64) {
	t.Helper()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	d, err := NewDecoder(bytes.NewReader(b))
	if err == nil {
		if bufLimit != 0 {
			d.bufLimit = bufLimit
		}
		_, err = io.Copy(io.Discard, d)
	}
	runtime.ReadMemStats(&after)
	limit := uint64(2*maxBufferedChunk + streamMemorySlack)
	if d != nil {
		for _, e := range d.entries {
			if e.dSize > d.bufLimit || e.cSize > d.bufLimit {
				limit = maxWindow + 2*maxBufferedChunk + streamMemorySlack
			}
		}
	}
	if a := after.TotalAlloc - before.TotalAlloc; a > limit {
		t.Fatalf("decoding %d bytes (limit %d) allocated %d bytes, more than %d (err %v)", len(b), bufLimit, a, limit, err)
	}
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
