// Package nbd serves blockdev.Device values over the Network Block Device
// protocol, so standard clients (qemu-io, qemu-img, the kernel's nbd-client,
// libnbd's nbdinfo, nbdcopy and nbdfuse) can use sealfs's protected block
// devices.
//
// It is written by hand because no well-kept Go NBD server library serves an
// arbitrary io.ReaderAt/WriterAt with STARTTLS and the protocol subset is
// small: the server side of fixed newstyle negotiation and the simple-reply
// transmission phase.
//
// # Protocol
//
// The server speaks fixed newstyle negotiation (NBD_FLAG_FIXED_NEWSTYLE,
// NBD_FLAG_NO_ZEROES) and answers the options NBD_OPT_EXPORT_NAME,
// NBD_OPT_INFO and NBD_OPT_GO (replying NBD_INFO_EXPORT and
// NBD_INFO_BLOCK_SIZE always, NBD_INFO_NAME and NBD_INFO_DESCRIPTION when
// asked), NBD_OPT_LIST, NBD_OPT_ABORT and NBD_OPT_STARTTLS. Every other
// option, NBD_OPT_STRUCTURED_REPLY and extended headers included, gets
// NBD_REP_ERR_UNSUP, so transmission uses simple replies only; the clients
// above all fall back to them. An empty export name selects the first
// export.
//
// In the transmission phase it handles NBD_CMD_READ, NBD_CMD_WRITE (with
// NBD_CMD_FLAG_FUA), NBD_CMD_FLUSH, NBD_CMD_WRITE_ZEROES, NBD_CMD_TRIM (only
// when the device implements blockdev.Trimmer and the export allows it) and
// NBD_CMD_DISC. Requests of one connection run concurrently and may be
// answered out of order, as the protocol permits. The transmission flags are
// HAS_FLAGS, SEND_FLUSH and CAN_MULTI_CONN, plus READ_ONLY for read-only
// exports or SEND_FUA, SEND_WRITE_ZEROES and (where allowed) SEND_TRIM for
// writable ones.
//
// # Alignment
//
// Requests are byte-addressed. The server advertises a minimum block size
// of 1, the device's BlockSize as the preferred size and Server.MaxRequest
// (32 MiB by default) as the maximum, and it widens every request to whole
// device blocks itself: an unaligned read reads the covering blocks, an
// unaligned write reads, patches and rewrites the first and last block. So
// devices only ever see block-aligned I/O (except for a final partial block
// when the size is not a multiple of the block size).
//
// # Errors
//
// A device error becomes the errno of that request's reply: EIO for read and
// write failures (an authentication failure of a verity device included;
// it is logged with the offset and block number), EPERM for writes to a
// read-only export, ENOSPC for writes past the end, EINVAL for reads past
// the end, lengths above the maximum and unknown commands. The connection
// and its other requests carry on. A client that breaks the protocol
// (a wrong magic, unknown client flags, an option longer than 64 KiB, a
// write payload above the maximum, a handshake slower than
// Server.HandshakeTimeout) is disconnected; other clients are unaffected.
//
// # TLS
//
// With Server.TLSConfig set, clients may upgrade with NBD_OPT_STARTTLS; with
// Server.RequireTLS they must: before STARTTLS every option but
// NBD_OPT_ABORT is answered NBD_REP_ERR_TLS_REQD and NBD_OPT_EXPORT_NAME
// closes the connection. Mutual TLS is the tls.Config's business
// (ClientAuth and ClientCAs).
//
// # Concurrency and shutdown
//
// A Server serves any number of connections; requests on one export are
// serialized against the device as a readers-writer lock (reads in
// parallel, writes, trims and flushes one at a time), because blockdev only
// promises concurrent ReadAt. When Serve's context is cancelled it stops
// accepting, stops reading new requests, lets in-flight requests finish and
// reply, syncs every writable export and closes the connections. The
// server never closes the devices; their owner does.
package nbd
