package delivery

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/sealfs/sealfs/errs"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func encode(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Encode(&buf, data); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// decodeStream decodes with a Decoder whose buffered-chunk limit is
// bufLimit (0: the default), reading through r's wrapper.
func decodeStream(b []byte, bufLimit uint64, wrap func(io.Reader) io.Reader) ([]byte, *Decoder, error) {
	var r io.Reader = bytes.NewReader(b)
	if wrap != nil {
		r = wrap(r)
	}
	d, err := NewDecoder(r)
	if err != nil {
		return nil, nil, err
	}
	if bufLimit != 0 {
		d.bufLimit = bufLimit
	}
	out, err := io.ReadAll(d)
	return out, d, err
}

// The vectors of merkle-formats.md §2.4 are [derived] (computed with an
// independent re-implementation), not upstream golden bytes: upstream
// Fuchsia tests only round-trip.
func TestVectorsUncompressed(t *testing.T) {
	cases := []struct {
		name   string
		data   []byte
		header string
	}{
		{"empty", nil, "fc1ab10b 01000000 1c000000 0000000000000000 ccc8eb6b 00000000"},
		{"01020304", []byte{1, 2, 3, 4}, "fc1ab10b010000001c000000 0400000000000000 4b84dabf 00000000"},
		{"ff*8192", bytes.Repeat([]byte{0xff}, 8192), "fc1ab10b010000001c000000 0020000000000000 52f62ee3 00000000"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := append(unhex(t, c.header), c.data...)
			var h [HeaderSize]byte
			putDeliveryHeader(h[:], uint64(len(c.data)), false)
			if !bytes.Equal(h[:], want[:HeaderSize]) {
				t.Fatalf("header %x, want %x", h, want[:HeaderSize])
			}
			if len(c.data) <= 4 { // Encode writes these uncompressed
				if got := encode(t, c.data); !bytes.Equal(got, want) {
					t.Fatalf("Encode = %x, want %x", got, want)
				}
			}
			got, err := Decode(want)
			if err != nil || !bytes.Equal(got, c.data) {
				t.Fatalf("Decode = %x, %v", got, err)
			}
		})
	}
}

func TestVectorsArchive(t *testing.T) {
	// 0 entries.
	if got, want := archiveHeader(nil), unhex(t, "469b78ef0fd0b203 0200 0000 00000000 3816ddb4 00000000 0000000000000000"); !bytes.Equal(got, want) {
		t.Fatalf("empty archive header %x, want %x", got, want)
	}
	// 0xFF×65536 as the zstd CLI at level 14 compresses it: two 22-byte frames.
	entries := []seekEntry{{0, 32768, 96, 22}, {32768, 32768, 118, 22}}
	want := unhex(t, "469b78ef0fd0b2030200000002000000aba6156200000000000000000000000000000000000000000080000000000000600000000000000016000000000000000080000000000000008000000000000076000000000000001600000000000000")
	if got := archiveHeader(entries); !bytes.Equal(got, want) {
		t.Fatalf("archive header %x, want %x", got, want)
	}
	var h [HeaderSize]byte
	putDeliveryHeader(h[:], 140, true)
	if want := unhex(t, "fc1ab10b010000001c0000008c000000000000009591882801000000"); !bytes.Equal(h[:], want) {
		t.Fatalf("delivery header %x, want %x", h, want)
	}
}

// zstdCLI returns the path of the zstd tool, skipping (failing under CI=true)
// when it is missing.
func zstdCLI(t *testing.T) string {
	p, err := exec.LookPath("zstd")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("zstd CLI not found (Debian package zstd); required under CI=true")
		}
		t.Skip("zstd CLI not found (Debian package zstd)")
	}
	return p
}

func zstdRun(t *testing.T, in []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(zstdCLI(t), args...)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("zstd %v: %v: %s", args, err, stderr.Bytes())
	}
	return out
}

// assemble builds a compressed delivery blob from frames, contiguous.
func assemble(frames [][]byte, sizes []uint64) []byte {
	entries := make([]seekEntry, len(frames))
	off := uint64(archiveHeaderSize + seekEntrySize*len(frames))
	var d uint64
	for i, f := range frames {
		entries[i] = seekEntry{d, sizes[i], off, uint64(len(f))}
		d += sizes[i]
		off += uint64(len(f))
	}
	return assembleEntries(entries, frames, 0)
}

// assembleEntries writes the given seek table, then the frames back to back
// starting at the first entry's offset (or after the header), then pad bytes.
func assembleEntries(entries []seekEntry, frames [][]byte, pad int) []byte {
	var archive bytes.Buffer
	archive.Write(archiveHeader(entries))
	for _, f := range frames {
		archive.Write(f)
	}
	archive.Write(make([]byte, pad))
	var h [HeaderSize]byte
	putDeliveryHeader(h[:], uint64(archive.Len()), true)
	return append(h[:], archive.Bytes()...)
}

// The §2.4 compressed example, with frames made by the real zstd CLI.
func TestZstdCLIInterop(t *testing.T) {
	frame := zstdRun(t, bytes.Repeat([]byte{0xff}, 32768), "-14", "-c", "-q")
	blob := assemble([][]byte{frame, frame}, []uint64{32768, 32768})
	if len(frame) == 22 { // zstd 1.5.x; other versions may differ in frame bytes
		want := unhex(t, "fc1ab10b010000001c0000008c000000000000009591882801000000"+
			"469b78ef0fd0b2030200000002000000aba6156200000000000000000000000000000000000000000080000000000000600000000000000016000000000000000080000000000000008000000000000076000000000000001600000000000000")
		if !bytes.Equal(blob[:len(want)], want) {
			t.Fatalf("headers %x, want %x", blob[:len(want)], want)
		}
	} else {
		t.Logf("zstd CLI frame is %d bytes (vector assumes 22); headers not compared", len(frame))
	}
	got, err := Decode(blob)
	if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{0xff}, 65536)) {
		t.Fatalf("Decode CLI blob: %d bytes, %v", len(got), err)
	}
	// Without content checksum (as Fuchsia's C++ encoder writes) too.
	data := mixed(200_000, 7)
	var frames [][]byte
	var sizes []uint64
	for lo := 0; lo < len(data); lo += defaultChunk {
		c := data[lo:min(lo+defaultChunk, len(data))]
		frames = append(frames, zstdRun(t, c, "-14", "-c", "-q", "--no-check"))
		sizes = append(sizes, uint64(len(c)))
	}
	got, err = Decode(assemble(frames, sizes))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Decode CLI (no checksum) blob: %v", err)
	}

	// Our frames are ordinary zstd frames libzstd decodes.
	ours := encode(t, data)
	d, err := NewDecoder(bytes.NewReader(ours))
	if err != nil || !d.Compressed() {
		t.Fatalf("NewDecoder: %v (compressed %v)", err, d != nil && d.Compressed())
	}
	for i, e := range d.entries {
		f := ours[HeaderSize+e.cOff : HeaderSize+e.cOff+e.cSize]
		if out := zstdRun(t, f, "-d", "-c", "-q"); !bytes.Equal(out, data[e.dOff:e.dOff+e.dSize]) {
			t.Fatalf("zstd -d of our frame %d differs", i)
		}
	}
}

// text returns n bytes of words from a small vocabulary.
func text(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 3))
	b := make([]byte, 0, n+20)
	for len(b) < n {
		b = append(b, words[r.IntN(len(words))]...)
		b = append(b, ' ')
	}
	return b[:n]
}

var words = strings.Fields("the quick brown fox jumps over a lazy dog sealfs blob merkle chunk zstd archive fuchsia delivery")

// mixed returns n bytes of text-like, zero and random runs.
func mixed(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, 0, n)
	for len(b) < n {
		k := 1 + r.IntN(20000)
		switch r.IntN(3) {
		case 0:
			for i := 0; i < k; {
				w := words[r.IntN(len(words))]
				b = append(b, w...)
				b = append(b, ' ')
				i += len(w) + 1
			}
		case 1:
			b = append(b, make([]byte, k)...)
		default:
			for range k {
				b = append(b, byte(r.Uint32()))
			}
		}
	}
	return b[:n]
}

func random(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	type tc struct {
		name string
		data []byte
		comp int // expected Compressed(): 1 yes, 0 no, -1 either
	}
	b2i := func(b bool) int {
		if b {
			return 1
		}
		return 0
	}
	var cases []tc
	for _, n := range []int{0, 1, 2, 100, defaultChunk - 1, defaultChunk, defaultChunk + 1, 2*defaultChunk - 1, 3*defaultChunk + 5, 10 * defaultChunk} {
		cases = append(cases,
			tc{fmt.Sprintf("mixed-%d", n), mixed(n, uint64(n)), map[bool]int{true: 1, false: -1}[n >= 1000]},
			tc{fmt.Sprintf("zeros-%d", n), make([]byte, n), b2i(n > 64)},
			tc{fmt.Sprintf("random-%d", n), random(n, uint64(n)), 0})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := encode(t, c.data)
			d, err := NewDecoder(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			if d.Size() != int64(len(c.data)) || (c.comp >= 0 && b2i(d.Compressed()) != c.comp) {
				t.Fatalf("Size %d Compressed %v, want %d %v", d.Size(), d.Compressed(), len(c.data), c.comp)
			}
			if d.Compressed() {
				if n := len(d.entries); n != (len(c.data)+defaultChunk-1)/defaultChunk {
					t.Fatalf("%d chunks", n)
				}
				if len(b) >= HeaderSize+len(c.data) {
					t.Fatalf("compressed blob %d bytes not smaller than raw %d", len(b), HeaderSize+len(c.data))
				}
			} else if len(b) != HeaderSize+len(c.data) {
				t.Fatalf("uncompressed blob %d bytes", len(b))
			}
			got, err := Decode(b)
			if err != nil || !bytes.Equal(got, c.data) {
				t.Fatalf("Decode: %v (equal %v)", err, bytes.Equal(got, c.data))
			}
			for _, lim := range []uint64{0, 1} { // buffered chunks, streamed chunks
				for _, w := range []func(io.Reader) io.Reader{nil, iotest.OneByteReader, iotest.HalfReader, iotest.DataErrReader} {
					got, _, err := decodeStream(b, lim, w)
					if err != nil || !bytes.Equal(got, c.data) {
						t.Fatalf("stream (limit %d): %v (equal %v)", lim, err, bytes.Equal(got, c.data))
					}
				}
			}
			if again := encode(t, c.data); !bytes.Equal(again, b) {
				t.Fatal("Encode is not deterministic")
			}
		})
	}
}

func TestChunkSize(t *testing.T) {
	for _, c := range []struct{ n, want int64 }{
		{0, 32768}, {1, 32768}, {1023 * 32768, 32768},
		{1023*32768 + 1, 32768 + 8192}, // Rust chunk_size_for test
		{1023 * 40960, 40960}, {1023*40960 + 1, 49152},
		{1 << 40, 1074798592}, // ceil(2^40/1023) = 1074791426, rounded up to 8 KiB
	} {
		got := chunkSize(c.n)
		if got != c.want {
			t.Errorf("chunkSize(%d) = %d, want %d", c.n, got, c.want)
		}
		if c.n > 0 && (c.n+got-1)/got > maxEntries {
			t.Errorf("chunkSize(%d) = %d gives more than %d chunks", c.n, got, maxEntries)
		}
	}
}

// A blob just over 1023 chunks of 32 KiB uses 40 KiB chunks (819 of them).
func TestRoundTripLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	data := make([]byte, 1023*32768+1)
	copy(data, mixed(1<<20, 3))
	b := encode(t, data)
	d, err := NewDecoder(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.entries) != 819 || d.entries[0].dSize != 40960 || d.entries[818].dSize != uint64(len(data))-818*40960 {
		t.Fatalf("%d entries, first %d, last %d", len(d.entries), d.entries[0].dSize, d.entries[len(d.entries)-1].dSize)
	}
	got, err := Decode(b)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Decode: %v", err)
	}
}

// checkErr asserts err is a decode error (wraps ErrCorrupt and errs.ErrCorrupt).
func checkErr(t *testing.T, err error, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", what)
	}
	if !errors.Is(err, ErrCorrupt) || !errors.Is(err, errs.ErrCorrupt) {
		t.Fatalf("%s: %v does not wrap ErrCorrupt", what, err)
	}
}

func smallBlobs(t *testing.T) map[string][]byte {
	var lines bytes.Buffer
	for i := 0; lines.Len() < 3*defaultChunk+100; i++ {
		fmt.Fprintf(&lines, "line %d of a small compressible blob\n", i*i%1000)
	}
	comp := encode(t, lines.Bytes())
	raw := encode(t, random(300, 5))
	if comp[24] != 1 || raw[24] != 0 {
		t.Fatal("test blobs do not have the expected form")
	}
	return map[string][]byte{"compressed": comp, "uncompressed": raw}
}

func TestTruncated(t *testing.T) {
	for name, b := range smallBlobs(t) {
		t.Run(name, func(t *testing.T) {
			for i := range len(b) {
				_, err := Decode(b[:i])
				checkErr(t, err, fmt.Sprintf("Decode(b[:%d])", i))
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("Decode(b[:%d]): %v does not wrap io.ErrUnexpectedEOF", i, err)
				}
				for _, lim := range []uint64{0, 1} {
					_, _, err = decodeStream(b[:i], lim, nil)
					checkErr(t, err, fmt.Sprintf("stream b[:%d]", i))
					if !errors.Is(err, io.ErrUnexpectedEOF) {
						t.Fatalf("stream b[:%d]: %v does not wrap io.ErrUnexpectedEOF", i, err)
					}
				}
			}
			// Trailing bytes.
			long := append(bytes.Clone(b), 0)
			_, err := Decode(long)
			checkErr(t, err, "trailing byte")
			_, _, err = decodeStream(long, 0, nil)
			checkErr(t, err, "stream trailing byte")
		})
	}
}

// Flipping any byte must be detected or leave the output unchanged; it
// must never yield different bytes without an error.
func TestFlippedBytes(t *testing.T) {
	for name, b := range smallBlobs(t) {
		want, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(name, func(t *testing.T) {
			undetected := 0
			end := len(b)
			if name == "uncompressed" {
				end = HeaderSize // payload bytes are not checksummed: the Merkle root is their check
			}
			for i := range end {
				for _, x := range []byte{0x01, 0x80, 0xff} {
					c := bytes.Clone(b)
					c[i] ^= x
					got, err := Decode(c)
					if err != nil {
						checkErr(t, err, fmt.Sprintf("flip %#x at %d", x, i))
					} else if !bytes.Equal(got, want) {
						t.Fatalf("flip %#x at %d: wrong bytes without an error", x, i)
					}
					for _, lim := range []uint64{0, 1} {
						got2, _, err2 := decodeStream(c, lim, nil)
						if err2 != nil {
							checkErr(t, err2, fmt.Sprintf("stream flip %#x at %d", x, i))
						} else if !bytes.Equal(got2, want) {
							t.Fatalf("stream flip %#x at %d: wrong bytes without an error", x, i)
						}
					}
					if err == nil {
						undetected++
						t.Logf("flip %#x at %d: decoded to the same bytes", x, i)
					}
				}
			}
			t.Logf("%d of %d flips decoded to the original bytes", undetected, 3*end)
		})
	}
}

// withHeader returns b with delivery header fields rewritten and the CRC fixed.
func fixDeliveryCRC(b []byte) []byte {
	binary.LittleEndian.PutUint32(b[20:24], 0)
	binary.LittleEndian.PutUint32(b[20:24], crcIEEE(b[:HeaderSize]))
	return b
}

func TestBadHeaders(t *testing.T) {
	comp := smallBlobs(t)["compressed"]
	type mut struct {
		name        string
		f           func(b []byte) []byte
		unsupported bool
	}
	set32 := func(off int, v uint32, fix bool) func([]byte) []byte {
		return func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[off:], v)
			if fix {
				fixDeliveryCRC(b)
			}
			return b
		}
	}
	muts := []mut{
		{"magic", func(b []byte) []byte { b[0] = 0xfd; return fixDeliveryCRC(b) }, false},
		{"type0", set32(4, 0, true), false},
		{"type2", set32(4, 2, true), true},
		{"type3", set32(4, 3, true), true},
		{"type9", set32(4, 9, true), false},
		{"header length", set32(8, 32, true), false},
		{"crc", set32(20, 0x12345678, false), false},
		{"flags", set32(24, 3, true), false},
		{"flags high", set32(24, 0x80000001, true), false},
		{"payload short", func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[12:], 31)
			return fixDeliveryCRC(b)
		}, false},
		{"payload huge", func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[12:], 1<<62)
			return fixDeliveryCRC(b)
		}, false},
		{"payload max", func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[12:], ^uint64(0))
			return fixDeliveryCRC(b)
		}, false},
		{"compressed empty", func(b []byte) []byte {
			b = b[:HeaderSize]
			binary.LittleEndian.PutUint64(b[12:], 0)
			return fixDeliveryCRC(b)
		}, false},
	}
	for _, m := range muts {
		t.Run(m.name, func(t *testing.T) {
			b := m.f(bytes.Clone(comp))
			_, err := Decode(b)
			checkErr(t, err, "Decode")
			if got := errors.Is(err, errs.ErrUnsupported); got != m.unsupported {
				t.Fatalf("%v: unsupported = %v, want %v", err, got, m.unsupported)
			}
			_, _, err = decodeStream(b, 0, nil)
			checkErr(t, err, "stream")
			t.Log(err)
		})
	}
}

func crcIEEE(b []byte) uint32 {
	var h [HeaderSize]byte
	copy(h[:], b)
	return crc32.ChecksumIEEE(h[:])
}

// TestSeekTableInvariants builds archives with valid CRCs that break one
// rule each.
func TestSeekTableInvariants(t *testing.T) {
	chunk := mixed(defaultChunk, 21)
	enc, _ := sharedEncoder()
	f := enc.EncodeAll(chunk, nil)
	fs := uint64(len(f))
	hsz := uint64(archiveHeaderSize + 2*seekEntrySize)
	good := []seekEntry{{0, defaultChunk, hsz, fs}, {defaultChunk, defaultChunk, hsz + fs, fs}}
	frames := [][]byte{f, f}
	if got, err := Decode(assembleEntries(good, frames, 0)); err != nil || !bytes.Equal(got, append(bytes.Clone(chunk), chunk...)) {
		t.Fatalf("good archive: %v", err)
	}
	// Gaps between frames and at the end are allowed.
	gappy := []seekEntry{{0, defaultChunk, hsz + 3, fs}, {defaultChunk, defaultChunk, hsz + 3 + fs + 5, fs}}
	b := assembleEntries(gappy, nil, 0)
	var payload bytes.Buffer
	payload.Write(b[HeaderSize:])
	payload.Write(make([]byte, 3))
	payload.Write(f)
	payload.Write(make([]byte, 5))
	payload.Write(f)
	payload.Write(make([]byte, 7))
	var h [HeaderSize]byte
	putDeliveryHeader(h[:], uint64(payload.Len()), true)
	gapBlob := append(h[:], payload.Bytes()...)
	for _, lim := range []uint64{0, 1} {
		if got, _, err := decodeStream(gapBlob, lim, nil); err != nil || len(got) != 2*defaultChunk {
			t.Fatalf("archive with gaps (limit %d): %v", lim, err)
		}
	}
	if _, err := Decode(gapBlob); err != nil {
		t.Fatalf("archive with gaps: %v", err)
	}
	// Zero entries: an empty blob.
	if got, err := Decode(assembleEntries(nil, nil, 0)); err != nil || len(got) != 0 {
		t.Fatalf("zero-entry archive: %d bytes, %v", len(got), err)
	}

	bad := map[string][]seekEntry{
		"I0 first offset":      {{1, defaultChunk, hsz, fs}, {defaultChunk + 1, defaultChunk, hsz + fs, fs}},
		"I1 inside header":     {{0, defaultChunk, hsz - 1, fs}, {defaultChunk, defaultChunk, hsz + fs, fs}},
		"I2 not contiguous":    {{0, defaultChunk, hsz, fs}, {defaultChunk + 1, defaultChunk, hsz + fs, fs}},
		"I2 overlap":           {{0, defaultChunk, hsz, fs}, {defaultChunk - 1, defaultChunk, hsz + fs, fs}},
		"I3 overlap":           {{0, defaultChunk, hsz, fs}, {defaultChunk, defaultChunk, hsz + fs - 1, fs}},
		"I3 decreasing":        {{0, defaultChunk, hsz + fs, fs}, {defaultChunk, defaultChunk, hsz, fs}},
		"I4 zero dsize":        {{0, 0, hsz, fs}, {0, defaultChunk, hsz + fs, fs}},
		"I4 zero csize":        {{0, defaultChunk, hsz, 0}, {defaultChunk, defaultChunk, hsz, fs}},
		"I5 past end":          {{0, defaultChunk, hsz, fs}, {defaultChunk, defaultChunk, hsz + fs, fs + 1}},
		"I5 overflow":          {{0, defaultChunk, hsz, fs}, {defaultChunk, defaultChunk, ^uint64(0) - 5, fs}},
		"dsize too small":      {{0, defaultChunk - 1, hsz, fs}, {defaultChunk - 1, defaultChunk, hsz + fs, fs}},
		"dsize too large":      {{0, defaultChunk + 1, hsz, fs}, {defaultChunk + 1, defaultChunk, hsz + fs, fs}},
		"dsize absurd":         {{0, 1 << 40, hsz, fs}, {1 << 40, defaultChunk, hsz + fs, fs}},
		"dsize overflow":       {{0, defaultChunk, hsz, fs}, {defaultChunk, ^uint64(0) - 10, hsz + fs, fs}},
		"dsize within ratio":   {{0, fs * maxZstdRatio, hsz, fs}, {fs * maxZstdRatio, defaultChunk, hsz + fs, fs}},
		"dsize over buf limit": {{0, maxBufferedChunk + 1, hsz, fs}, {maxBufferedChunk + 1, defaultChunk, hsz + fs, fs}},
	}
	for name, entries := range bad {
		t.Run(name, func(t *testing.T) {
			b := assembleEntries(entries, frames, 0)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := Decode(b)
			runtime.ReadMemStats(&after)
			checkErr(t, err, "Decode")
			if a := after.TotalAlloc - before.TotalAlloc; a > 64<<20 {
				t.Errorf("allocated %d bytes", a)
			}
			for _, lim := range []uint64{0, 1} {
				_, _, err := decodeStream(b, lim, nil)
				checkErr(t, err, fmt.Sprintf("stream limit %d", lim))
			}
			t.Log(err)
		})
	}

	// Archive-header fields (CRC fixed).
	arch := func(mod func(a []byte)) []byte {
		b := assembleEntries(good, frames, 0)
		mod(b[HeaderSize:])
		a := b[HeaderSize:]
		binary.LittleEndian.PutUint32(a[16:20], archiveCRC(a[:hsz]))
		return b
	}
	for name, c := range map[string]struct {
		b           []byte
		unsupported bool
	}{
		"magic":      {arch(func(a []byte) { a[7] ^= 1 }), false},
		"version 1":  {arch(func(a []byte) { a[8] = 1 }), false},
		"version 3":  {arch(func(a []byte) { a[8] = 3 }), true},
		"n 1024":     {arch(func(a []byte) { binary.LittleEndian.PutUint32(a[12:], 1024) }), false},
		"n 3":        {arch(func(a []byte) { binary.LittleEndian.PutUint32(a[12:], 3) }), false},
		"n huge":     {arch(func(a []byte) { binary.LittleEndian.PutUint32(a[12:], ^uint32(0)) }), false},
		"n too long": {arch(func(a []byte) { binary.LittleEndian.PutUint32(a[12:], 1000) }), false},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Decode(c.b)
			checkErr(t, err, "Decode")
			if got := errors.Is(err, errs.ErrUnsupported); got != c.unsupported {
				t.Fatalf("%v: unsupported = %v", err, got)
			}
			t.Log(err)
		})
	}
	// Reserved fields are covered by the CRC but not checked.
	if _, err := Decode(arch(func(a []byte) { a[20] = 1; a[10] = 0 })); err != nil {
		t.Fatalf("non-zero reserved field: %v", err)
	}
}

// Two zstd frames in one chunk slot decode as their concatenation (as
// libzstd does); a skippable frame alone decodes to nothing and is refused
// by the size check.
func TestFrameEdgeCases(t *testing.T) {
	enc, _ := sharedEncoder()
	a, bb := mixed(1000, 1), mixed(2000, 2)
	two := append(enc.EncodeAll(a, nil), enc.EncodeAll(bb, nil)...)
	blob := assemble([][]byte{two}, []uint64{3000})
	got, err := Decode(blob)
	if err != nil || !bytes.Equal(got, append(bytes.Clone(a), bb...)) {
		t.Fatalf("two frames: %v", err)
	}
	skippable := []byte{0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4}
	_, err = Decode(assemble([][]byte{skippable}, []uint64{1}))
	checkErr(t, err, "skippable frame")
	// Garbage after a frame.
	_, err = Decode(assemble([][]byte{append(enc.EncodeAll(a, nil), 0, 0, 0, 0, 0)}, []uint64{1000}))
	checkErr(t, err, "garbage after frame")
	for _, lim := range []uint64{0, 1} {
		_, _, err = decodeStream(assemble([][]byte{append(enc.EncodeAll(a, nil), 0, 0, 0, 0, 0)}, []uint64{1000}), lim, nil)
		checkErr(t, err, "stream garbage after frame")
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// I/O errors of the source pass through and are not reported as corruption.
func TestReaderError(t *testing.T) {
	b := smallBlobs(t)["compressed"]
	boom := errors.New("boom")
	for _, n := range []int{0, 10, HeaderSize + 40, len(b) - 3} {
		r := io.MultiReader(bytes.NewReader(b[:n]), errReader{boom})
		d, err := NewDecoder(r)
		if err == nil {
			_, err = io.ReadAll(d)
		}
		if !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
			t.Fatalf("cut at %d: %v", n, err)
		}
	}
}

// rleFrame is a hand-made zstd frame (no checksum) of n RLE blocks of
// 128 KiB of byte c, declaring window descriptor wd.
func rleFrame(wd byte, n int, c byte) []byte {
	f := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, wd}
	for i := range n {
		last := 0
		if i == n-1 {
			last = 1
		}
		h := (128<<10)<<3 | 1<<1 | last
		f = append(f, byte(h), byte(h>>8), byte(h>>16), c)
	}
	return f
}

// Chunks over 4 MiB take the streaming path; memory stays bounded by the
// zstd window, not by the claimed sizes.
func TestLargeChunkBounded(t *testing.T) {
	for _, c := range []struct {
		name   string
		wd     byte // window descriptor: 0x50 = 8 MiB, 0x88 = 128 MiB, 0x90 = 256 MiB
		blocks int
		ok     bool
	}{
		{"4MiB buffered", 0x50, 32, true},
		{"4MiB buffered window 128MiB", 0x88, 32, true},
		{"4MiB buffered window 256MiB refused", 0x90, 32, false},
		{"5MiB streamed", 0x50, 40, true},
		{"100MiB window 128MiB", 0x88, 800, true},
		{"window 256MiB refused", 0x90, 40, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			size := uint64(c.blocks) << 17
			blob := assemble([][]byte{rleFrame(c.wd, c.blocks, 'x')}, []uint64{size})
			var m0, m1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m0)
			d, err := NewDecoder(bytes.NewReader(blob))
			if err != nil {
				t.Fatal(err)
			}
			var sum countWriter
			_, err = io.Copy(&sum, d)
			runtime.ReadMemStats(&m1)
			if !c.ok {
				checkErr(t, err, "stream")
				return
			}
			if err != nil || sum.n != size || sum.bad {
				t.Fatalf("%d bytes (bad %v), %v", sum.n, sum.bad, err)
			}
			a := m1.TotalAlloc - m0.TotalAlloc
			t.Logf("allocated %d MiB", a>>20)
			if a > maxWindow+32<<20 || (size <= maxBufferedChunk && a > 3*maxBufferedChunk) {
				t.Fatalf("allocated %d MiB", a>>20)
			}
		})
	}
	// Uncompressed payload claiming 4 EiB: no allocation, truncation error.
	var h [HeaderSize]byte
	putDeliveryHeader(h[:], 1<<62, false)
	_, err := Decode(append(h[:], 1, 2, 3))
	checkErr(t, err, "huge uncompressed")
	_, _, err = decodeStream(append(h[:], 1, 2, 3), 0, nil)
	checkErr(t, err, "huge uncompressed stream")
}

type countWriter struct {
	n   uint64
	bad bool
}

func (w *countWriter) Write(p []byte) (int, error) {
	w.n += uint64(len(p))
	w.bad = w.bad || bytes.IndexFunc(p, func(r rune) bool { return r != 'x' }) >= 0
	return len(p), nil
}
