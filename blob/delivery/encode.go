package delivery

import (
	"fmt"
	"io"
	"runtime"
	"sync"
)

// Encode writes data to dst as a Type 1 delivery blob: a chunked archive of
// zstd frames when that is strictly smaller than data, else data itself
// uncompressed (always for empty data). See the package documentation for
// the exact choices.
func Encode(dst io.Writer, data []byte) error {
	var hdr [HeaderSize]byte
	if len(data) == 0 {
		putDeliveryHeader(hdr[:], 0, false)
		_, err := dst.Write(hdr[:])
		return err
	}
	frames, entries, archiveLen, err := compressChunks(data)
	if err != nil {
		return err
	}
	if archiveLen >= uint64(len(data)) {
		putDeliveryHeader(hdr[:], uint64(len(data)), false)
		if _, err := dst.Write(hdr[:]); err != nil {
			return err
		}
		_, err := dst.Write(data)
		return err
	}
	putDeliveryHeader(hdr[:], archiveLen, true)
	if _, err := dst.Write(hdr[:]); err != nil {
		return err
	}
	if _, err := dst.Write(archiveHeader(entries)); err != nil {
		return err
	}
	for _, f := range frames {
		if _, err := dst.Write(f); err != nil {
			return err
		}
	}
	return nil
}

// compressChunks compresses data chunk by chunk (in parallel) and returns
// the frames, the seek table and the archive size.
func compressChunks(data []byte) ([][]byte, []seekEntry, uint64, error) {
	enc, err := sharedEncoder()
	if err != nil {
		return nil, nil, 0, fmt.Errorf("delivery: zstd encoder: %w", err)
	}
	chunk := chunkSize(int64(len(data)))
	n := int((int64(len(data)) + chunk - 1) / chunk)
	if n > maxEntries {
		// Unreachable: chunkSize guarantees at most 1023 chunks.
		return nil, nil, 0, fmt.Errorf("delivery: %d chunks exceed %d", n, maxEntries)
	}
	frames := make([][]byte, n)
	workers := min(runtime.GOMAXPROCS(0), n)
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				lo := int64(i) * chunk
				hi := min(lo+chunk, int64(len(data)))
				frames[i] = enc.EncodeAll(data[lo:hi], nil)
			}
		}()
	}
	wg.Wait()

	entries := make([]seekEntry, n)
	off := uint64(archiveHeaderSize + seekEntrySize*n)
	for i, f := range frames {
		lo := uint64(i) * uint64(chunk)
		hi := min(lo+uint64(chunk), uint64(len(data)))
		entries[i] = seekEntry{dOff: lo, dSize: hi - lo, cOff: off, cSize: uint64(len(f))}
		off += uint64(len(f))
	}
	return frames, entries, off, nil
}
