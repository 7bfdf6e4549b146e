// Package blockdev is the untrusted medium every sealfs on-disk format is
// written against.
//
// Formats (CocoonFS images, raw block devices, …) reach storage only through
// the Device interface, never through os.File. That single seam is what
// lets one crash and tamper harness exercise every format the same way: the
// Faulty wrapper cuts power between or inside writes and flips bits, its
// write log records what reached the medium, and Replay and ReplayTorn
// rebuild the image at any point of a run. A format that survives the
// harness on a Memory device survives on a File, because neither promises
// more than the interface does.
//
// # Trust
//
// The medium is untrusted. Besides losing power it may return bits that
// differ from those written, and an attacker may rewrite it between mounts.
// This package checksums nothing: formats authenticate what they read.
//
// # Durability and the write barrier
//
// A WriteAt that returned nil has handed its bytes to the device; it has
// not made them durable. If power fails before the next successful Sync,
// any subset of the writes issued since the previous Sync may be on the
// medium, in any order, and a write in flight may be torn: some of its
// bytes new, others old. A tear stays within one IO block — BlockSize
// bytes, aligned to a multiple of BlockSize — so formats that must detect
// a torn update keep each commit record inside one block and authenticate
// it; no write is guaranteed atomic, not even within one block.
//
// Sync is the only ordering tool. When Sync returns nil, every write that
// returned before Sync was called is durable, and no write issued after
// Sync returns becomes effective, even partially, before those writes. A
// failed Sync guarantees nothing about the writes since the last successful
// one (as with fsync, the kernel may have dropped them), so formats treat
// it as fatal for the mounted instance rather than retrying. Trim and
// Resize are ordered by Sync like writes.
//
// Faulty is kinder than this contract: it applies writes in issue order and
// tears only the write it is told to. Tests that want reordering within a
// barrier interval can build such images from the Log with Replay.
//
// # Errors
//
// Failures wrap the sentinels ErrOutOfRange, ErrReadOnly and ErrPowerCut
// (test with errors.Is) and name the offsets and lengths involved. Writes
// past Size fail rather than extend the device: a device only changes size
// through Resize.
//
// # Optional capabilities
//
// Devices may implement ReadOnlyDevice, Resizer and Trimmer; formats
// discover them by type assertion (IsReadOnly wraps the first).
//
// # Concurrency
//
// Every Device must allow concurrent ReadAt calls, so formats can read in
// parallel. The devices in this package go further and allow any of their
// methods to be called concurrently; each documents what it serializes. On
// any device, concurrent writes to overlapping ranges leave the overlap
// unspecified, and a WriteAt that has not returned when Sync is called may
// land on either side of that barrier: order a write before a barrier by
// waiting for it to return.
package blockdev
