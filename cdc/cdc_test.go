package cdc

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/sealfs/sealfs/internal/testutil"
)

func readFixture(t testing.TB) []byte {
	t.Helper()
	p := testutil.Vector(t, "cdc/SekienAkashita.jpg")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if len(data) != 109466 || hex.EncodeToString(sum[:]) != "d9e749d9367fc908876749d6502eb212fee88c9a94892fb07da5ef3ba8bc39ed" {
		t.Fatalf("%s: unexpected content (%d bytes, sha256 %x)", p, len(data), sum)
	}
	return data
}

// randomReader returns 1..maxRead bytes per read (and now and then nothing,
// or the last bytes together with io.EOF).
type randomReader struct {
	data    []byte
	rng     *rand.Rand
	maxRead int
}

func (r *randomReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	if r.rng.IntN(16) == 0 {
		return 0, nil
	}
	n := 1 + r.rng.IntN(r.maxRead)
	n = min(n, len(p), len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	if len(r.data) == 0 && r.rng.IntN(2) == 0 {
		return n, io.EOF
	}
	return n, nil
}

// streamChunks runs a Chunker over data read in random sizes and checks that
// each returned slice holds the chunk's bytes.
func streamChunks(t testing.TB, data []byte, opts Options, seed uint64, maxRead int) []Chunk {
	t.Helper()
	r := &randomReader{data: data, rng: rand.New(rand.NewPCG(seed, 1)), maxRead: maxRead}
	k := NewChunker(r, opts)
	var out []Chunk
	for {
		c, b, err := k.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if len(b) != c.Length || c.Offset+int64(c.Length) > int64(len(data)) ||
			!bytes.Equal(b, data[c.Offset:c.Offset+int64(c.Length)]) {
			t.Fatalf("chunk %+v: returned bytes do not match the input", c)
		}
		out = append(out, c)
	}
	if _, _, err := k.Next(); err != io.EOF {
		t.Fatalf("Next after the end: %v, want io.EOF", err)
	}
	return out
}

func mustCut(t testing.TB, data []byte, opts Options) []Chunk {
	t.Helper()
	chunks, err := Cut(data, opts)
	if err != nil {
		t.Fatalf("Cut(%+v): %v", opts, err)
	}
	return chunks
}

func TestGearTable(t *testing.T) {
	for i := range 256 {
		sum := md5.Sum(bytes.Repeat([]byte{byte(i)}, 64))
		if want := binary.BigEndian.Uint64(sum[:8]); gear[i] != want {
			t.Fatalf("gear[%d] = %#x, want %#x", i, gear[i], want)
		}
		if gearLS[i] != gear[i]<<1 {
			t.Fatalf("gearLS[%d] = %#x, want %#x", i, gearLS[i], gear[i]<<1)
		}
	}
	if gear[0] != 0x3b5d3c7d207e37dc || gear[255] != 0xaabd2b2a451504e1 {
		t.Fatal("gear check values")
	}
	c, err := newCutter(DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if c.maskS != 0x0000d90703537000 || c.maskL != 0x0000d90f03530000 {
		t.Fatalf("level-1 masks for avg 64 KiB: %#x %#x", c.maskS, c.maskL)
	}
}

type vector struct {
	name    string
	opts    Options
	lengths []int
	hashes  []uint64
	md5s    []string // optional
	zeros   int      // input: this many zero bytes instead of the fixture
}

// vectors are every case of ../shared/vectors/cdc/README.md and of section
// 2.3 of ../shared/ref/puzzlefs-notes.md (the Rust crate's tests).
func vectors() []vector {
	o := func(v Variant, min, avg, max int, l Normalization) Options {
		return Options{Variant: v, Min: min, Avg: avg, Max: max, Level: l}
	}
	sekienLens := []int{21325, 17140, 28084, 18217, 24700}
	sekienMD5 := []string{
		"2bb52734718194617c957f5e07ee6054", "badfb0757fe081c20336902e7131f768",
		"18412d7414de6eb42f638351711f729d", "04fe1405fc5f960363bfcd834c056407",
		"1aa7ad95f274d6ba34a983946ebc5af3",
	}
	level0 := []int{6634, 59915, 25597, 5237, 12083}
	level3 := []int{17350, 19911, 17426, 17519, 19940, 17320}
	seeded := o(V2020, 4096, 16384, 65535, Level1)
	seeded.Seed = 666
	zeroLens := make([]int, 10)
	zeroHashes := make([]uint64, 10)
	for i := range zeroLens {
		zeroLens[i], zeroHashes[i] = 1024, 14169102344523991076
	}
	return []vector{
		{name: "v2020/16k/L1", opts: o(V2020, 4096, 16384, 65535, Level1), lengths: sekienLens, md5s: sekienMD5,
			hashes: []uint64{17968276318003433923, 8197189939299398838, 13019990849178155730, 4509236223063678303, 2504464741100432583}},
		{name: "v2016/16k/L1", opts: o(V2016, 4096, 16384, 65535, Level1), lengths: sekienLens, md5s: sekienMD5,
			hashes: []uint64{17968276318003433923, 4098594969649699419, 15733367461443853673, 4509236223063678303, 2504464741100432583}},
		{name: "v2020/32k/L1", opts: o(V2020, 8192, 32768, 131072, Level1), lengths: []int{66549, 42917},
			hashes: []uint64{15733367461443853673, 6321136627705800457}},
		{name: "v2016/32k/L1", opts: o(V2016, 8192, 32768, 131072, Level1), lengths: []int{66549, 42917},
			hashes: []uint64{15733367461443853673, 2504464741100432583}},
		{name: "v2020/64k/L1-puzzlefs", opts: DefaultOptions(), lengths: []int{109466}, hashes: []uint64{2504464741100432583}},
		{name: "v2016/64k/L1", opts: o(V2016, 16384, 65536, 262144, Level1), lengths: []int{109466}, hashes: []uint64{2504464741100432583}},
		{name: "v2020/16k/L0", opts: o(V2020, 4096, 16384, 65535, Level0), lengths: level0,
			hashes: []uint64{443122261039895162, 15733367461443853673, 10460176299449652894, 6197802202431009942, 6321136627705800457}},
		{name: "v2016/16k/L0", opts: o(V2016, 4096, 16384, 65535, Level0), lengths: level0,
			hashes: []uint64{221561130519947581, 15733367461443853673, 10460176299449652894, 6197802202431009942, 2504464741100432583}},
		{name: "v2020/16k/L3", opts: o(V2020, 8192, 16384, 32768, Level3), lengths: level3,
			hashes: []uint64{10718006254707412376, 13104072099671895560, 12322483109039221194, 16009206469796846404, 2473608525189754172, 2504464741100432583}},
		{name: "v2016/16k/L3", opts: o(V2016, 4096, 16384, 65535, Level3), lengths: level3,
			hashes: []uint64{14582375164208481996, 13104072099671895560, 6161241554519610597, 16009206469796846404, 10460176299449652894, 2504464741100432583}},
		{name: "v2020/16k/L1/seed666", opts: seeded, lengths: []int{10605, 55745, 11346, 5883, 11586, 14301},
			hashes: []uint64{9312357714466240148, 226910853333574584, 12271755243986371352, 14153975939352546047, 5890158701071314778, 8981594897574481255}},
		{name: "v2020/zeros/256/L1", opts: o(V2020, 64, 256, 1024, Level1), zeros: 10240, lengths: zeroLens, hashes: zeroHashes},
	}
}

func TestVectors(t *testing.T) {
	fixture := readFixture(t)
	for _, v := range vectors() {
		t.Run(v.name, func(t *testing.T) {
			data := fixture
			if v.zeros > 0 {
				data = make([]byte, v.zeros)
			}
			check := func(how string, got []Chunk) {
				t.Helper()
				if len(got) != len(v.lengths) {
					t.Fatalf("%s: %d chunks %+v, want %d", how, len(got), got, len(v.lengths))
				}
				off := int64(0)
				for i, c := range got {
					if c.Offset != off || c.Length != v.lengths[i] || c.Hash != v.hashes[i] {
						t.Errorf("%s: chunk %d = {off %d len %d hash %d}, want {off %d len %d hash %d}",
							how, i, c.Offset, c.Length, c.Hash, off, v.lengths[i], v.hashes[i])
					}
					if v.md5s != nil {
						sum := md5.Sum(data[c.Offset : c.Offset+int64(c.Length)])
						if hex.EncodeToString(sum[:]) != v.md5s[i] {
							t.Errorf("%s: chunk %d md5 %x, want %s", how, i, sum, v.md5s[i])
						}
					}
					off += int64(v.lengths[i])
				}
			}
			check("Cut", mustCut(t, data, v.opts))
			for i, maxRead := range []int{1, 7, 4096, 100000, 1 << 20} {
				check("Chunker", streamChunks(t, data, v.opts, uint64(i), maxRead))
			}
		})
	}
}

// checkChunks checks the invariants: chunks in order, covering data, all
// within [Min, Max] except the last (within [1, Max]).
func checkChunks(t testing.TB, data []byte, opts Options, chunks []Chunk) {
	t.Helper()
	var joined []byte
	for i, c := range chunks {
		if c.Offset != int64(len(joined)) {
			t.Fatalf("chunk %d at offset %d, want %d", i, c.Offset, len(joined))
		}
		if c.Length > opts.Max || c.Length < 1 || (i < len(chunks)-1 && c.Length < opts.Min) {
			t.Fatalf("chunk %d of %d: length %d outside [%d, %d]", i, len(chunks), c.Length, opts.Min, opts.Max)
		}
		joined = append(joined, data[c.Offset:c.Offset+int64(c.Length)]...)
	}
	if !bytes.Equal(joined, data) {
		t.Fatalf("chunks cover %d bytes, input has %d", len(joined), len(data))
	}
}

func sameChunks(t testing.TB, a, b []Chunk) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("Cut gave %d chunks, Chunker %d", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("chunk %d: Cut %+v, Chunker %+v", i, a[i], b[i])
		}
	}
}

func TestSliceStreamEquivalence(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 42))
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	// Long runs of zeros force max-size cuts.
	clear(data[1<<20 : 1<<20+300000])
	optionSets := []Options{
		DefaultOptions(),
		{Variant: V2020, Min: 4096, Avg: 16384, Max: 65535, Level: Level2},
		{Variant: V2016, Min: 4096, Avg: 16384, Max: 65535, Level: Level2},
		{Variant: V2020, Min: 66, Avg: 300, Max: 1025, Level: Level3, Seed: 7},
		{Variant: V2016, Min: 65, Avg: 300, Max: 1025, Level: Level3},
		{Variant: V2016, Min: 64, Avg: 256, Max: 1024, Level: Level0},
		{Variant: V2020, Min: 2048, Avg: 2048, Max: 2048, Level: Level1},
	}
	for _, opts := range optionSets {
		for trial := range 4 {
			n := rng.IntN(len(data) + 1)
			in := data[:n]
			want := mustCut(t, in, opts)
			checkChunks(t, in, opts, want)
			maxRead := []int{1, 13, 5000, 1 << 20}[trial]
			if maxRead == 1 && n > 200000 {
				in, want = in[:200000], mustCut(t, in[:200000], opts)
			}
			sameChunks(t, want, streamChunks(t, in, opts, rng.Uint64(), maxRead))
		}
	}
}

func TestValidate(t *testing.T) {
	good := Options{Variant: V2020, Min: 4096, Avg: 16384, Max: 65536, Level: Level1}
	for _, tc := range []struct {
		mod  func(*Options)
		want string
	}{
		{func(o *Options) { o.Variant = 0 }, "unknown variant"},
		{func(o *Options) { o.Variant = 2019 }, "unknown variant"},
		{func(o *Options) { o.Level = 4 }, "normalization level"},
		{func(o *Options) { o.Level = -1 }, "normalization level"},
		{func(o *Options) { o.Min = 63 }, "min size 63 out of range"},
		{func(o *Options) { o.Min = 0 }, "min size 0 out of range"},
		{func(o *Options) { o.Min, o.Avg, o.Max = 2<<20, 4<<20, 8<<20 }, "min size"},
		{func(o *Options) { o.Min = 64; o.Avg = 255 }, "average size 255 out of range"},
		{func(o *Options) { o.Avg = 8 << 20; o.Max = 16 << 20 }, "average size"},
		{func(o *Options) { o.Min, o.Avg, o.Max = 64, 256, 1023 }, "max size 1023 out of range"},
		{func(o *Options) { o.Max = 16<<20 + 1 }, "max size"},
		{func(o *Options) { o.Min = 20000 }, "min size 20000 exceeds average size 16384"},
		{func(o *Options) { o.Max = 8192 }, "average size 16384 exceeds max size 8192"},
		{func(o *Options) { o.Variant = V2016; o.Seed = 1 }, "seed"},
		{func(o *Options) { o.Min = 4095 }, "even min size"},
	} {
		o := good
		tc.mod(&o)
		err := o.Validate()
		if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: Validate() = %v, want ErrInvalidOptions with %q", o, err, tc.want)
			continue
		}
		if _, cerr := Cut([]byte("x"), o); !errors.Is(cerr, ErrInvalidOptions) {
			t.Errorf("%+v: Cut error %v", o, cerr)
		}
		if _, _, kerr := NewChunker(strings.NewReader("x"), o).Next(); !errors.Is(kerr, ErrInvalidOptions) {
			t.Errorf("%+v: Chunker error %v", o, kerr)
		}
	}
	for _, o := range []Options{good, DefaultOptions(),
		{Variant: V2016, Min: 65, Avg: 256, Max: 1023 + 2, Level: Level3},
		{Variant: V2020, Min: 1 << 20, Avg: 4 << 20, Max: 16 << 20, Level: Level3},
		{Variant: V2020, Min: 1024, Avg: 1024, Max: 1024, Seed: 1}} {
		if err := o.Validate(); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
}

func TestEdgeCases(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	for _, v := range []Variant{V2016, V2020} {
		opts := Options{Variant: v, Min: 4096, Avg: 16384, Max: 65536, Level: Level1}
		for _, tc := range []struct {
			name string
			data []byte
			want []Chunk // nil: only check invariants and equivalence
		}{
			{"empty", nil, []Chunk{}},
			{"one byte", []byte{1}, []Chunk{{0, 1, 0}}},
			{"below min", random(4000), []Chunk{{0, 4000, 0}}},
			{"exactly min", random(4096), []Chunk{{0, 4096, 0}}},
			{"max zeros", make([]byte, 65536), nil},
			{"max+1 zeros", make([]byte, 65537), nil},
			{"3 max zeros", make([]byte, 3*65536), nil},
			{"exactly max random", random(65536), nil},
		} {
			t.Run(v.String()+"/"+tc.name, func(t *testing.T) {
				got := mustCut(t, tc.data, opts)
				checkChunks(t, tc.data, opts, got)
				if tc.want != nil {
					if len(got) != len(tc.want) {
						t.Fatalf("got %+v, want %+v", got, tc.want)
					}
					for i := range got {
						if got[i] != tc.want[i] {
							t.Fatalf("got %+v, want %+v", got, tc.want)
						}
					}
				}
				if strings.Contains(tc.name, "zeros") {
					// Zeros never match a mask: every chunk is max-size but the last.
					for i, c := range got {
						if i < len(got)-1 && c.Length != opts.Max {
							t.Fatalf("zeros: chunk %d has %d bytes", i, c.Length)
						}
					}
					if n := len(tc.data); n%opts.Max == 1 && got[len(got)-1] != (Chunk{int64(n - 1), 1, 0}) {
						t.Fatalf("zeros: last chunk %+v", got[len(got)-1])
					}
				}
				sameChunks(t, got, streamChunks(t, tc.data, opts, 9, 3000))
			})
		}
	}
}

type errReader struct {
	data []byte
	err  error
}

func (r *errReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestChunkerErrors(t *testing.T) {
	boom := errors.New("boom")
	k := NewChunker(&errReader{data: make([]byte, 1000), err: boom}, DefaultOptions())
	for range 2 {
		if _, _, err := k.Next(); err != boom {
			t.Fatalf("Next = %v, want the read error", err)
		}
	}
	if _, _, err := NewChunker(zeroReader{}, DefaultOptions()).Next(); err != io.ErrNoProgress {
		t.Fatalf("Next over a reader that never progresses = %v", err)
	}
}

// FuzzChunker checks, for fuzzed bytes and parameters: Cut and a Chunker
// over random read sizes give the same chunks, every chunk but the last is
// within [Min, Max], and the chunks concatenate to the input. The input is
// at most 256 fuzzed bytes followed by up to 16 KiB of pseudo-random bytes:
// short fuzz inputs still span many chunks, and the fuzzer's minimization of
// each new input (quadratic in its length) stays short.
func FuzzChunker(f *testing.F) {
	f.Add([]byte("hello, world"), uint16(0), uint16(0), uint16(0), uint16(0), uint8(0), uint64(1))
	f.Add(make([]byte, 300), uint16(9000), uint16(10), uint16(300), uint16(100), uint8(5), uint64(2))
	f.Add(bytes.Repeat([]byte("abcdefghij0123456789"), 20), uint16(3000), uint16(400), uint16(50), uint16(3000), uint8(3), uint64(3))
	f.Add([]byte{}, uint16(16383), uint16(100), uint16(700), uint16(2000), uint8(1), uint64(4))
	f.Add([]byte{0xff, 0}, uint16(12345), uint16(1), uint16(0), uint16(0), uint8(134), uint64(666))
	f.Fuzz(func(t *testing.T, prefix []byte, extra, minX, avgX, maxX uint16, mode uint8, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, uint64(extra)))
		data := append([]byte(nil), prefix[:min(len(prefix), 256)]...)
		for range int(extra) % 16384 {
			data = append(data, byte(rng.Uint32()))
		}
		opts := Options{Variant: V2016, Level: Normalization(mode / 2 % 4)}
		if mode%2 == 1 {
			opts.Variant = V2020
			if mode >= 128 {
				opts.Seed = seed
			}
		}
		// Small sizes, so that short inputs hold many chunks.
		opts.Min = MinSizeLow + int(minX)%256
		if opts.Variant == V2020 {
			opts.Min &^= 1
		}
		opts.Avg = max(opts.Min, AvgSizeLow+int(avgX)%1024)
		opts.Max = max(opts.Avg, MaxSizeLow+int(maxX)%2048)
		want, err := Cut(data, opts)
		if err != nil {
			t.Fatal(err)
		}
		checkChunks(t, data, opts, want)
		sameChunks(t, want, streamChunks(t, data, opts, seed, 1+int(seed%5000)))
	})
}

func BenchmarkCut(b *testing.B) {
	data := make([]byte, 64<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i+8 <= len(data); i += 8 {
		binary.LittleEndian.PutUint64(data[i:], rng.Uint64())
	}
	for _, v := range []Variant{V2020, V2016} {
		opts := DefaultOptions() // 16K/64K/256K, level 1
		opts.Variant = v
		b.Run(v.String()+"/L1/16K-64K-256K", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := Cut(data, opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("Chunker/v2020/L1/16K-64K-256K", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			k := NewChunker(bytes.NewReader(data), DefaultOptions())
			for {
				if _, _, err := k.Next(); err == io.EOF {
					break
				} else if err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
