package disk

// Common extent integrity protection (spec "Common extent integrity protection
// scheme"; reference integrity.rs). Facts the spec leaves open, taken from the
// reference:
//
//   - The section is commit ID (8) | XOR mask (1) | save area (8 per
//     checkpoint), placed at headSkip+protOff.
//   - The checksum covers the whole extent buffer handed in, including the
//     exempt head (magic) and everything past the first IO Block, with the
//     whole protection section zeroed.
//   - Checkpoint i (1..n, n = log2(IO Block / 128 B)) is the 8 bytes ending at
//     offset 128<<i; its original data goes to save slot i-1. Saving runs from
//     i = n down to 1, restoring from 1 up to n.
//   - The XOR mask covers [headSkip, 128) except the commit ID and mask bytes,
//     which are written unmasked after masking (commit ID = checksum ^ mask).
//   - The mask is chosen deterministically (find_distinct_u8_value): the first
//     high nibble h occurring fewer than 16 times among the avoided values,
//     then the lowest low nibble not occurring with that high nibble (never
//     0x00). Avoided values: the masked region's bytes (after the checkpoint
//     data was saved), the checksum bytes, and for each remembered previous
//     commit ID tail pair (t0, t7): t0^checksum[0] and t7^checksum[7]. Freshly
//     cleared extents (and every header written at mkfs) use zero tails.

// IntegrityLen returns the length of the common extent integrity protection
// section for layout l.
func IntegrityLen(l Layout) int { return integrityLen(l.ioLog2128()) }

func integrityLen(n int) int { return ChecksumLen + 1 + ChecksumLen*n }

// integrityParams validates the placement arguments and returns the number of
// checkpoints n and the IO Block size in bytes.
func integrityParams(extent []byte, headSkip, protOff int, l Layout) (n, ioBlock int, err error) {
	if headSkip < 0 || protOff < 0 || headSkip > 128-ChecksumLen-1 || protOff > 128-headSkip-ChecksumLen-1 {
		return 0, 0, errf(errArg, "integrity section at head skip %d + offset %d is not within the first 128 bytes", headSkip, protOff)
	}
	n = l.ioLog2128()
	if n+7 >= 62 {
		return 0, 0, errf(ErrUnsupported, "IO Block of 2^%d bytes", n+7)
	}
	ioBlock = 1 << (n + 7)
	if len(extent) < ioBlock {
		return 0, 0, errf(ErrCorrupt, "integrity protected extent has %d bytes, less than its first IO Block (%d)", len(extent), ioBlock)
	}
	return n, ioBlock, nil
}

// VerifyAndRemoveIntegrity verifies the integrity protections of extent, the
// complete protected extent (at least its first IO Block; the checksum covers
// all of extent), and removes them in place: on success extent holds the
// original contents with the protection section zeroed. headSkip bytes at the
// start (a magic) are exempt; protOff is the section's offset after them.
// On failure it returns an error wrapping ErrTorn and extent's contents are
// unspecified.
func VerifyAndRemoveIntegrity(extent []byte, headSkip, protOff int, l Layout) error {
	n, _, err := integrityParams(extent, headSkip, protOff, l)
	if err != nil {
		return err
	}
	sec := headSkip + protOff
	if i := tier0Check(extent, headSkip); i >= 0 {
		return errf(ErrTorn, "tier 0: zero byte at offset %d", i)
	}
	var commit [ChecksumLen]byte
	copy(commit[:], extent[sec:])
	mask := extent[sec+ChecksumLen]
	xorBytes(extent[headSkip:sec], mask)
	clear(extent[sec : sec+ChecksumLen+1])
	xorBytes(extent[sec+ChecksumLen+1:128], mask)

	save := sec + ChecksumLen + 1
	for i := 1; i <= n; i++ {
		slot := extent[save+ChecksumLen*(i-1):][:ChecksumLen]
		var data [ChecksumLen]byte
		copy(data[:], slot)
		clear(slot)
		cp := extent[(128<<i)-ChecksumLen:][:ChecksumLen]
		if [ChecksumLen]byte(cp) != commit {
			return errf(ErrTorn, "tier 1: checkpoint at offset %d holds %x, commit ID is %x", (128<<i)-ChecksumLen, cp, commit)
		}
		copy(cp, data[:])
	}

	want := commit
	xorBytes(want[:], mask)
	if got := Checksum(extent); got != want {
		return errf(ErrTorn, "checksum %x, expected %x", got, want)
	}
	return nil
}

// tier0Check returns the offset of the first zero byte in extent[headSkip:128],
// or -1.
func tier0Check(extent []byte, headSkip int) int {
	for i := headSkip; i < 128; i++ {
		if extent[i] == 0 {
			return i
		}
	}
	return -1
}

// ApplyIntegrity applies the integrity protections to extent in place, as the
// reference does for an extent whose first device IO Block is known to be
// clear (ExtentIntegrityState::new_clean(), used for all image headers). The
// protection section's contents are ignored. See VerifyAndRemoveIntegrity for
// the arguments.
func ApplyIntegrity(extent []byte, headSkip, protOff int, l Layout) error {
	return ApplyIntegrityAvoiding(extent, headSkip, protOff, l, [2][2]byte{})
}

// ApplyIntegrityAvoiding is ApplyIntegrity for an extent whose storage still
// holds earlier commit IDs: lastTails lists the (first, last) bytes of up to
// two commit IDs possibly present on storage ({0,0} for an unused slot), and
// the new commit ID is made to differ from them in both bytes.
func ApplyIntegrityAvoiding(extent []byte, headSkip, protOff int, l Layout, lastTails [2][2]byte) error {
	n, _, err := integrityParams(extent, headSkip, protOff, l)
	if err != nil {
		return err
	}
	sec := headSkip + protOff
	clear(extent[sec : sec+integrityLen(n)])
	sum := Checksum(extent)

	save := sec + ChecksumLen + 1
	for i := n; i >= 1; i-- {
		copy(extent[save+ChecksumLen*(i-1):][:ChecksumLen], extent[(128<<i)-ChecksumLen:][:ChecksumLen])
	}

	var counts [16]int
	count := func(p []byte) {
		for _, v := range p {
			counts[v>>4]++
		}
	}
	region0, region1 := extent[headSkip:sec], extent[sec+ChecksumLen+1:128]
	var tails [4]byte
	for i, t := range lastTails {
		tails[2*i] = t[0] ^ sum[0]
		tails[2*i+1] = t[1] ^ sum[ChecksumLen-1]
	}
	count(region0)
	count(region1)
	count(sum[:])
	count(tails[:])
	h := byte(0)
	for counts[h] >= 16 {
		h++
	}
	var used [16]bool
	used[0] = h == 0
	mark := func(p []byte) {
		for _, v := range p {
			if v>>4 == h {
				used[v&0xf] = true
			}
		}
	}
	mark(region0)
	mark(region1)
	mark(sum[:])
	mark(tails[:])
	lo := byte(0)
	for used[lo] {
		lo++
	}
	mask := h<<4 | lo

	xorBytes(region0, mask)
	xorBytes(region1, mask)
	commit := sum
	xorBytes(commit[:], mask)
	copy(extent[sec:], commit[:])
	extent[sec+ChecksumLen] = mask
	for i := 1; i <= n; i++ {
		copy(extent[(128<<i)-ChecksumLen:], commit[:])
	}
	return nil
}

func xorBytes(p []byte, m byte) {
	for i := range p {
		p[i] ^= m
	}
}
