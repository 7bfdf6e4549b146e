package delivery

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// memSpool is a Spool in memory.
type memSpool struct{ b []byte }

func (m *memSpool) Write(p []byte) (int, error) { m.b = append(m.b, p...); return len(p), nil }

func (m *memSpool) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func encodeStream(t *testing.T, data []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := EncodeStream(&out, bytes.NewReader(data), int64(len(data)), &memSpool{}); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestEncodeStream: EncodeStream writes exactly Encode's bytes, compressed
// or not, around chunk boundaries and past 1023 chunks.
func TestEncodeStream(t *testing.T) {
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"one byte", []byte{7}},
		{"chunk", mixed(defaultChunk, 1)},
		{"chunk+1", mixed(defaultChunk+1, 2)},
		{"seven chunks", mixed(7*defaultChunk-5, 3)},
		{"zeros", make([]byte, 300_000)},
		{"random", random(200_000, 4)},
		{"mostly random", append(random(150_000, 5), make([]byte, 2000)...)},
		{"1023 chunks + 1", append(mixed(1<<20, 6), make([]byte, 1023*defaultChunk+1-(1<<20))...)},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := encode(t, c.data)
			got := encodeStream(t, c.data)
			if !bytes.Equal(got, want) {
				t.Fatalf("EncodeStream wrote %d bytes differing from Encode's %d", len(got), len(want))
			}
		})
	}
}

// TestEncodeStreamLargeChunks takes the path of chunks over 4 MiB (blobs
// over about 4 GiB) on a smaller blob: the frames decode to the data.
func TestEncodeStreamLargeChunks(t *testing.T) {
	defer func(old int64) { encodeBufferLimit = old }(encodeBufferLimit)
	encodeBufferLimit = 16 << 10
	for _, data := range [][]byte{mixed(5*defaultChunk+3, 7), random(3*defaultChunk, 8)} {
		b := encodeStream(t, data)
		got, err := Decode(b)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Decode: %v (equal %v)", err, bytes.Equal(got, data))
		}
	}
}

type shortReaderAt struct {
	r   *bytes.Reader
	err error
}

func (s shortReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off > 40000 {
		return 0, s.err
	}
	return s.r.ReadAt(p, off)
}

// TestEncodeStreamSourceError: a source that fails or ends early fails the
// encode with its error.
func TestEncodeStreamSourceError(t *testing.T) {
	data := mixed(200_000, 9)
	boom := errors.New("disk on fire")
	for _, c := range []struct {
		err  error
		want error
	}{{boom, boom}, {io.EOF, io.ErrUnexpectedEOF}} {
		var out bytes.Buffer
		err := EncodeStream(&out, shortReaderAt{bytes.NewReader(data), c.err}, int64(len(data)), &memSpool{})
		if !errors.Is(err, c.want) {
			t.Errorf("EncodeStream with a failing source = %v; want %v", err, c.want)
		}
	}
}
