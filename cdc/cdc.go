package cdc

import (
	"errors"
	"fmt"
	"math"
)

// Variant selects the FastCDC algorithm.
type Variant int

// The FastCDC variants. The zero Variant is invalid, so that an Options value
// always says which algorithm it means.
const (
	V2016 Variant = 2016 // one byte per step (FastCDC paper, 2016)
	V2020 Variant = 2020 // two bytes per step, left-shifted gear table (2020 paper)
)

func (v Variant) String() string {
	switch v {
	case V2016:
		return "v2016"
	case V2020:
		return "v2020"
	}
	return fmt.Sprintf("Variant(%d)", int(v))
}

// Normalization is the level of normalized chunking, 0 to 3: level n makes
// the mask n bits stricter before the average size and n bits looser after
// it, so higher levels bunch chunk sizes more tightly around the average.
// The Rust crate's constructors default to Level1; here the level is always
// explicit (the zero value is Level0).
type Normalization int

// The normalization levels.
const (
	Level0 Normalization = iota
	Level1
	Level2
	Level3
)

// Parameter limits, the same as the reference crate's.
const (
	MinSizeLow  = 64       // smallest allowed Options.Min
	MinSizeHigh = 1 << 20  // largest allowed Options.Min
	AvgSizeLow  = 256      // smallest allowed Options.Avg
	AvgSizeHigh = 4 << 20  // largest allowed Options.Avg
	MaxSizeLow  = 1 << 10  // smallest allowed Options.Max
	MaxSizeHigh = 16 << 20 // largest allowed Options.Max
)

// ErrInvalidOptions is wrapped by every error about impossible parameters.
var ErrInvalidOptions = errors.New("cdc: invalid options")

// Options are the chunking parameters. Every chunk but the last has between
// Min and Max bytes; the last has between 1 and Max.
type Options struct {
	Variant Variant
	Min     int // minimum chunk size in bytes (hashing starts here)
	Avg     int // desired average chunk size; selects the masks
	Max     int // maximum chunk size in bytes
	Level   Normalization
	// Seed, when non-zero, is XORed into the gear table (and Seed<<1 into
	// the shifted table), as the Rust crate's with_level_and_seed does
	// (releases after 3.0.0). V2020 only. Zero gives the standard tables
	// that PuzzleFS uses.
	Seed uint64
}

// DefaultOptions returns the PuzzleFS parameters: v2020, 16 KiB / 64 KiB /
// 256 KiB, normalization level 1.
func DefaultOptions() Options {
	return Options{Variant: V2020, Min: 16 << 10, Avg: 64 << 10, Max: 256 << 10, Level: Level1}
}

// Validate reports why o cannot be used, wrapping ErrInvalidOptions, or nil.
func (o Options) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...)
	}
	switch {
	case o.Variant != V2016 && o.Variant != V2020:
		return bad("unknown variant %d (want cdc.V2016 or cdc.V2020)", int(o.Variant))
	case o.Level < Level0 || o.Level > Level3:
		return bad("normalization level %d out of range 0..3", int(o.Level))
	case o.Min < MinSizeLow || o.Min > MinSizeHigh:
		return bad("min size %d out of range %d..%d", o.Min, MinSizeLow, MinSizeHigh)
	case o.Avg < AvgSizeLow || o.Avg > AvgSizeHigh:
		return bad("average size %d out of range %d..%d", o.Avg, AvgSizeLow, AvgSizeHigh)
	case o.Max < MaxSizeLow || o.Max > MaxSizeHigh:
		return bad("max size %d out of range %d..%d", o.Max, MaxSizeLow, MaxSizeHigh)
	case o.Min > o.Avg:
		return bad("min size %d exceeds average size %d", o.Min, o.Avg)
	case o.Avg > o.Max:
		return bad("average size %d exceeds max size %d", o.Avg, o.Max)
	case o.Variant == V2020 && o.Min%2 != 0:
		// The reference hashes byte pairs from 2*(Min/2), so it would cut
		// an odd Min one byte early; refuse rather than break the bounds.
		return bad("v2020 needs an even min size, not %d (it hashes byte pairs)", o.Min)
	case o.Seed != 0 && o.Variant != V2020:
		return bad("a seed is defined for v2020 only")
	}
	return nil
}

// Chunk is one chunk of the input.
type Chunk struct {
	Offset int64  // position of the chunk's first byte in the input
	Length int    // number of bytes
	Hash   uint64 // gear hash at the cut, as the reference reports it (0 for a final chunk of at most Min bytes)
}

// Cut splits data into chunks. The chunks are in order, cover data exactly,
// and are empty for empty data. It fails only for invalid options.
func Cut(data []byte, opts Options) ([]Chunk, error) {
	c, err := newCutter(opts)
	if err != nil {
		return nil, err
	}
	chunks := make([]Chunk, 0, len(data)/opts.Avg+1)
	for off := 0; off < len(data); {
		n, h := c.cut(data[off:])
		chunks = append(chunks, Chunk{Offset: int64(off), Length: n, Hash: h})
		off += n
	}
	return chunks, nil
}

// cutter is a validated parameter set, ready to find cut points.
type cutter struct {
	min, avg, max  int
	maskS, maskL   uint64
	maskSL, maskLL uint64 // maskS<<1, maskL<<1 (v2020)
	v2020          bool
	gear, gearLS   *[256]uint64
}

func newCutter(o Options) (*cutter, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	bits := int(math.Round(math.Log2(float64(o.Avg)))) // 8..22 for valid Avg
	c := &cutter{
		min: o.Min, avg: o.Avg, max: o.Max,
		maskS: masks[bits+int(o.Level)],
		maskL: masks[bits-int(o.Level)],
		v2020: o.Variant == V2020,
		gear:  &gear, gearLS: &gearLS,
	}
	c.maskSL, c.maskLL = c.maskS<<1, c.maskL<<1
	if o.Seed != 0 {
		g, gl := new([256]uint64), new([256]uint64)
		for i := range g {
			g[i] = gear[i] ^ o.Seed
			gl[i] = gearLS[i] ^ o.Seed<<1
		}
		c.gear, c.gearLS = g, gl
	}
	return c, nil
}

// gearLS is gear shifted left by one bit, the v2020 table for the first byte
// of each pair.
var gearLS = func() (t [256]uint64) {
	for i, g := range gear {
		t[i] = g << 1
	}
	return t
}()

// cut returns the length of the chunk at the start of src and the hash at
// its cut. src must be non-empty; only its first max bytes are looked at, and
// a src shorter than max is taken to be the end of the input.
func (c *cutter) cut(src []byte) (int, uint64) {
	remaining := len(src)
	if remaining <= c.min {
		return remaining, 0
	}
	center := c.avg
	if remaining > c.max {
		remaining = c.max
	} else if remaining < center {
		center = remaining
	}
	if c.v2020 {
		return c.cut2020(src, center, remaining)
	}
	return c.cut2016(src, center, remaining)
}

func (c *cutter) cut2016(src []byte, center, remaining int) (int, uint64) {
	g := c.gear
	var h uint64
	m := c.maskS
	for i, b := range src[c.min:center] {
		h = h<<1 + g[b]
		if h&m == 0 {
			return c.min + i, h
		}
	}
	m = c.maskL
	for i, b := range src[center:remaining] {
		h = h<<1 + g[b]
		if h&m == 0 {
			return center + i, h
		}
	}
	return remaining, h
}

func (c *cutter) cut2020(src []byte, center, remaining int) (int, uint64) {
	g, gl := c.gear, c.gearLS
	var h uint64
	// Pairs (2i, 2i+1) for i from min/2 to center/2, then to remaining/2.
	start := c.min &^ 1
	end := center &^ 1
	m, ml := c.maskS, c.maskSL
	b := src[start:end]
	for len(b) >= 2 {
		h = h<<2 + gl[b[0]]
		if h&ml == 0 {
			return end - len(b), h
		}
		h += g[b[1]]
		if h&m == 0 {
			return end - len(b) + 1, h
		}
		b = b[2:]
	}
	start = end
	end = remaining &^ 1
	m, ml = c.maskL, c.maskLL
	b = src[start:end]
	for len(b) >= 2 {
		h = h<<2 + gl[b[0]]
		if h&ml == 0 {
			return end - len(b), h
		}
		h += g[b[1]]
		if h&m == 0 {
			return end - len(b) + 1, h
		}
		b = b[2:]
	}
	return remaining, h
}
