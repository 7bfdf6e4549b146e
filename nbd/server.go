package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/errs"
)

// Defaults of the Server's limits.
const (
	DefaultMaxRequest       = 32 << 20
	DefaultHandshakeTimeout = 30 * time.Second
	DefaultMaxInFlight      = 16

	maxOptionLen   = 64 << 10 // longer options close the connection
	inFlightBudget = 64 << 20 // payload bytes buffered per connection
	shutdownWrite  = 10 * time.Second
)

// Server serves exports over NBD. Set its fields, then call Serve; do not
// change them while it runs. One Server may Serve several listeners.
type Server struct {
	// Exports are the devices offered; names must be unique. The first one
	// is the default export (the empty name).
	Exports []*Export

	// TLSConfig, if set, lets clients upgrade with NBD_OPT_STARTTLS. For
	// mutual TLS set its ClientAuth and ClientCAs.
	TLSConfig *tls.Config

	// RequireTLS refuses every export to clients that have not completed
	// STARTTLS. It needs TLSConfig.
	RequireTLS bool

	// Logger receives connection events and device errors; nil discards.
	Logger *slog.Logger

	// MaxRequest is the largest READ or WRITE payload accepted and the
	// maximum block size advertised; 0 means DefaultMaxRequest.
	MaxRequest int

	// HandshakeTimeout bounds the whole negotiation phase of a connection;
	// 0 means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration

	// MaxInFlight bounds the requests one connection has in progress at
	// once; 0 means DefaultMaxInFlight.
	MaxInFlight int
}

// Export returns the export a client asking for name gets: the one with that
// name, or for the empty name the first export.
func (s *Server) Export(name string) (*Export, bool) {
	for _, e := range s.Exports {
		if e.Name == name {
			return e, true
		}
	}
	if name == "" && len(s.Exports) > 0 {
		return s.Exports[0], true
	}
	return nil, false
}

// Serve accepts connections on l until ctx is cancelled, then shuts down
// gracefully: it closes l, lets every connection finish its in-flight
// requests, syncs every writable export and returns nil (or the sync
// error). If Accept fails for another reason, Serve shuts down the same way
// and returns that error. Serve closes l.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	defer l.Close()
	exports, err := s.prepare()
	if err != nil {
		return err
	}
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()

	var wg sync.WaitGroup
	var acceptErr error
	for {
		nc, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			acceptErr = err
			cancel()
			break
		}
		c := &conn{
			srv:     s,
			exports: exports,
			raw:     nc,
			log:     log.With("remote", nc.RemoteAddr().String()),
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.serve(ctx)
		}()
	}
	wg.Wait()
	var syncErr error
	for _, x := range exports {
		if err := x.sync(); err != nil {
			log.Error("sync on shutdown failed", "export", x.Name, "err", err)
			syncErr = errors.Join(syncErr, fmt.Errorf("nbd: sync export %q: %w", x.Name, err))
		}
	}
	if acceptErr != nil {
		return errors.Join(acceptErr, syncErr)
	}
	return syncErr
}

func (s *Server) prepare() ([]*export, error) {
	if len(s.Exports) == 0 {
		return nil, errors.New("nbd: no exports")
	}
	if s.RequireTLS && s.TLSConfig == nil {
		return nil, errors.New("nbd: RequireTLS without a TLSConfig")
	}
	seen := map[string]bool{}
	var out []*export
	for _, e := range s.Exports {
		x, err := newExport(e)
		if err != nil {
			return nil, err
		}
		if seen[e.Name] {
			return nil, fmt.Errorf("nbd: duplicate export name %q", e.Name)
		}
		seen[e.Name] = true
		out = append(out, x)
	}
	return out, nil
}

func (s *Server) maxRequest() int64 {
	if s.MaxRequest > 0 {
		return int64(s.MaxRequest)
	}
	return DefaultMaxRequest
}

// conn is one client connection.
type conn struct {
	srv     *Server
	exports []*export
	raw     net.Conn // the TCP connection: deadlines and close
	log     *slog.Logger

	rw  net.Conn // raw, or the TLS connection over it after STARTTLS
	br  *bufio.Reader
	bw  *bufio.Writer
	tls bool

	dmu     sync.Mutex // orders deadline changes against shutdown
	closing bool

	wmu    sync.Mutex // serializes replies
	broken bool       // a reply write failed
}

// errClose ends a connection without a reply (a protocol violation or a
// client that went away); its text is logged.
type errClose struct{ msg string }

func (e *errClose) Error() string { return e.msg }

func closeConn(format string, args ...any) error {
	return &errClose{fmt.Sprintf(format, args...)}
}

func (c *conn) serve(ctx context.Context) {
	c.rw = c.raw
	c.br = bufio.NewReaderSize(c.raw, 64<<10)
	c.bw = bufio.NewWriterSize(c.raw, 64<<10)
	stop := context.AfterFunc(ctx, c.shutdown)
	defer stop()
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("nbd: connection handler panicked", "panic", r)
		}
		if c.tls {
			c.rw.SetWriteDeadline(time.Now().Add(time.Second))
			c.rw.Close()
		}
		c.raw.Close()
	}()
	c.log.Debug("connection opened")

	x, err := c.handshake(ctx)
	if err != nil {
		c.logEnd("handshake", err)
		return
	}
	c.setReadDeadline(time.Time{})
	c.log.Info("client attached", "export", x.Name, "tls", c.tls, "read_only", x.ro)
	err = c.transmit(ctx, x)
	c.logEnd("transmission", err)
}

func (c *conn) logEnd(phase string, err error) {
	var ec *errClose
	switch {
	case err == nil:
		c.log.Debug("connection closed", "phase", phase)
	case errors.As(err, &ec):
		c.log.Warn("closing connection", "phase", phase, "reason", ec.msg)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		c.log.Info("client disconnected", "phase", phase)
	default:
		c.log.Info("connection ended", "phase", phase, "err", err)
	}
}

// shutdown interrupts the connection's reads; in-flight requests still
// reply (within shutdownWrite).
func (c *conn) shutdown() {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.closing = true
	now := time.Now()
	c.raw.SetReadDeadline(now)
	c.raw.SetWriteDeadline(now.Add(shutdownWrite))
}

func (c *conn) setReadDeadline(t time.Time) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if !c.closing {
		c.raw.SetDeadline(t)
	}
}

// ---- handshake ----

func (c *conn) handshake(ctx context.Context) (*export, error) {
	timeout := c.srv.HandshakeTimeout
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	c.setReadDeadline(time.Now().Add(timeout))

	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:], nbdMagic)
	binary.BigEndian.PutUint64(hello[8:], optMagic)
	binary.BigEndian.PutUint16(hello[16:], flagFixedNewstyle|flagNoZeroes)
	if err := c.send(hello[:]); err != nil {
		return nil, err
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.br, cf[:]); err != nil {
		return nil, err
	}
	clientFlags := binary.BigEndian.Uint32(cf[:])
	if clientFlags&^(flagCFixedNewstyle|flagCNoZeroes) != 0 {
		return nil, closeConn("unknown client flags %#x", clientFlags)
	}
	noZeroes := clientFlags&flagCNoZeroes != 0

	for {
		var h [16]byte
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			return nil, err
		}
		if m := binary.BigEndian.Uint64(h[0:]); m != optMagic {
			return nil, closeConn("bad option magic %#x", m)
		}
		opt := binary.BigEndian.Uint32(h[8:])
		n := binary.BigEndian.Uint32(h[12:])
		if n > maxOptionLen {
			return nil, closeConn("option %d of %d bytes is too long", opt, n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(c.br, data); err != nil {
			return nil, err
		}
		tlsNeeded := c.srv.RequireTLS && !c.tls

		switch opt {
		case optExportName:
			if tlsNeeded {
				return nil, closeConn("NBD_OPT_EXPORT_NAME without TLS")
			}
			x := c.lookup(string(data))
			if x == nil {
				return nil, closeConn("NBD_OPT_EXPORT_NAME: no export %q", data)
			}
			b := make([]byte, 10, 10+124)
			binary.BigEndian.PutUint64(b[0:], uint64(x.size))
			binary.BigEndian.PutUint16(b[8:], x.flags())
			if !noZeroes {
				b = b[:10+124]
			}
			return x, c.send(b)

		case optAbort:
			c.optReply(opt, repAck, nil) // the client may already be gone
			return nil, nil

		case optStartTLS:
			switch {
			case c.srv.TLSConfig == nil:
				err := c.optError(opt, repErrPolicy, "TLS is not configured on this server")
				if err != nil {
					return nil, err
				}
			case n != 0:
				if err := c.optError(opt, repErrInvalid, "NBD_OPT_STARTTLS carries no data"); err != nil {
					return nil, err
				}
			case c.tls:
				if err := c.optError(opt, repErrInvalid, "TLS is already active"); err != nil {
					return nil, err
				}
			default:
				if err := c.optReply(opt, repAck, nil); err != nil {
					return nil, err
				}
				if err := c.startTLS(ctx); err != nil {
					return nil, err
				}
			}

		case optList:
			switch {
			case tlsNeeded:
				if err := c.optError(opt, repErrTLSReqd, "TLS is required"); err != nil {
					return nil, err
				}
			case n != 0:
				if err := c.optError(opt, repErrInvalid, "NBD_OPT_LIST carries no data"); err != nil {
					return nil, err
				}
			default:
				for _, x := range c.exports {
					b := binary.BigEndian.AppendUint32(nil, uint32(len(x.Name)))
					b = append(b, x.Name...)
					if err := c.optReply(opt, repServer, b); err != nil {
						return nil, err
					}
				}
				if err := c.optReply(opt, repAck, nil); err != nil {
					return nil, err
				}
			}

		case optInfo, optGo:
			if tlsNeeded {
				if err := c.optError(opt, repErrTLSReqd, "TLS is required"); err != nil {
					return nil, err
				}
				continue
			}
			x, err := c.info(opt, data)
			if err != nil {
				return nil, err
			}
			if x != nil && opt == optGo {
				return x, nil
			}

		default:
			code, msg := uint32(repErrUnsup), "option not supported"
			if tlsNeeded {
				code, msg = repErrTLSReqd, "TLS is required"
			}
			if err := c.optError(opt, code, msg); err != nil {
				return nil, err
			}
		}
	}
}

func (c *conn) lookup(name string) *export {
	for _, x := range c.exports {
		if x.Name == name {
			return x
		}
	}
	if name == "" {
		return c.exports[0]
	}
	return nil
}

// info answers NBD_OPT_INFO and NBD_OPT_GO; it returns the export when the
// client may use it.
func (c *conn) info(opt uint32, data []byte) (*export, error) {
	bad := func() (*export, error) {
		return nil, c.optError(opt, repErrInvalid, "malformed request")
	}
	if len(data) < 6 {
		return bad()
	}
	nameLen := int64(binary.BigEndian.Uint32(data))
	if nameLen > int64(len(data))-6 {
		return bad()
	}
	name := string(data[4 : 4+nameLen])
	rest := data[4+nameLen:]
	nreq := int(binary.BigEndian.Uint16(rest))
	if len(rest) != 2+2*nreq {
		return bad()
	}
	var wantName, wantDesc bool
	for i := range nreq {
		switch binary.BigEndian.Uint16(rest[2+2*i:]) {
		case infoName:
			wantName = true
		case infoDescription:
			wantDesc = true
		}
	}
	x := c.lookup(name)
	if x == nil {
		return nil, c.optError(opt, repErrUnknown, fmt.Sprintf("no export named %q", name))
	}
	b := binary.BigEndian.AppendUint16(nil, infoExport)
	b = binary.BigEndian.AppendUint64(b, uint64(x.size))
	b = binary.BigEndian.AppendUint16(b, x.flags())
	if err := c.optReply(opt, repInfo, b); err != nil {
		return nil, err
	}
	pref := uint32(min(x.bs, c.srv.maxRequest()))
	b = binary.BigEndian.AppendUint16(nil, infoBlockSize)
	b = binary.BigEndian.AppendUint32(b, 1)
	b = binary.BigEndian.AppendUint32(b, pref)
	b = binary.BigEndian.AppendUint32(b, uint32(c.srv.maxRequest()))
	if err := c.optReply(opt, repInfo, b); err != nil {
		return nil, err
	}
	if wantName {
		b = binary.BigEndian.AppendUint16(nil, infoName)
		if err := c.optReply(opt, repInfo, append(b, x.Name...)); err != nil {
			return nil, err
		}
	}
	if wantDesc && x.Description != "" {
		b = binary.BigEndian.AppendUint16(nil, infoDescription)
		if err := c.optReply(opt, repInfo, append(b, x.Description...)); err != nil {
			return nil, err
		}
	}
	return x, c.optReply(opt, repAck, nil)
}

func (c *conn) startTLS(ctx context.Context) error {
	if c.br.Buffered() > 0 {
		return closeConn("client sent data before the TLS handshake")
	}
	tc := tls.Server(c.raw, c.srv.TLSConfig)
	if err := tc.HandshakeContext(ctx); err != nil {
		return closeConn("TLS handshake: %v", err)
	}
	c.rw, c.tls = tc, true
	c.br = bufio.NewReaderSize(tc, 64<<10)
	c.bw = bufio.NewWriterSize(tc, 64<<10)
	st := tc.ConnectionState()
	var subject string
	if len(st.PeerCertificates) > 0 {
		subject = st.PeerCertificates[0].Subject.String()
	}
	c.log.Debug("TLS established", "version", tls.VersionName(st.Version), "client", subject)
	return nil
}

func (c *conn) send(b []byte) error {
	if _, err := c.bw.Write(b); err != nil {
		return err
	}
	return c.bw.Flush()
}

func (c *conn) optReply(opt, typ uint32, data []byte) error {
	var h [20]byte
	binary.BigEndian.PutUint64(h[0:], repMagic)
	binary.BigEndian.PutUint32(h[8:], opt)
	binary.BigEndian.PutUint32(h[12:], typ)
	binary.BigEndian.PutUint32(h[16:], uint32(len(data)))
	if _, err := c.bw.Write(h[:]); err != nil {
		return err
	}
	return c.send(data)
}

func (c *conn) optError(opt, typ uint32, msg string) error {
	c.log.Debug("option refused", "option", opt, "reply", typ&^repFlagError, "msg", msg)
	return c.optReply(opt, typ, []byte(msg))
}

// ---- transmission ----

type request struct {
	flags  uint16
	typ    uint16
	handle uint64
	off    uint64
	length uint32
	data   []byte // WRITE payload
}

func (c *conn) transmit(ctx context.Context, x *export) error {
	maxInFlight := c.srv.MaxInFlight
	if maxInFlight <= 0 {
		maxInFlight = DefaultMaxInFlight
	}
	lim := newLimiter(maxInFlight, inFlightBudget)
	var wg sync.WaitGroup
	var rerr error
	var h [requestSize]byte
	for {
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			if !c.isClosing() {
				rerr = err
			}
			break
		}
		if m := binary.BigEndian.Uint32(h[0:]); m != requestMagic {
			rerr = closeConn("bad request magic %#x", m)
			break
		}
		r := request{
			flags:  binary.BigEndian.Uint16(h[4:]),
			typ:    binary.BigEndian.Uint16(h[6:]),
			handle: binary.BigEndian.Uint64(h[8:]),
			off:    binary.BigEndian.Uint64(h[16:]),
			length: binary.BigEndian.Uint32(h[24:]),
		}
		if r.typ == cmdDisc {
			break
		}
		cost := int64(0)
		if r.typ == cmdRead || r.typ == cmdWrite {
			cost = min(int64(r.length), c.srv.maxRequest())
		}
		if r.typ == cmdWrite {
			if int64(r.length) > c.srv.maxRequest() {
				// The payload cannot be skipped safely: refuse and hang up.
				c.reply(r.handle, errInval, nil)
				rerr = closeConn("write of %d bytes exceeds the maximum %d", r.length, c.srv.maxRequest())
				break
			}
			lim.acquire(cost)
			r.data = make([]byte, r.length)
			if _, err := io.ReadFull(c.br, r.data); err != nil {
				lim.release(cost)
				if !c.isClosing() {
					rerr = err
				}
				break
			}
		} else {
			lim.acquire(cost)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer lim.release(cost)
			errno, data := c.safeHandle(x, &r)
			c.reply(r.handle, errno, data)
		}()
	}
	wg.Wait()
	if err := x.sync(); err != nil {
		c.log.Error("flush on disconnect failed", "export", x.Name, "err", err)
	}
	return rerr
}

func (c *conn) isClosing() bool {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	return c.closing
}

// safeHandle is handle with a device panic turned into EIO for that
// request, so one bad block cannot take the server down.
func (c *conn) safeHandle(x *export, r *request) (errno uint32, data []byte) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("request handler panicked", "export", x.Name, "type", r.typ, "offset", r.off, "panic", p)
			errno, data = errIO, nil
		}
	}()
	return c.handle(x, r)
}

func (c *conn) reply(handle uint64, errno uint32, data []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.broken {
		return
	}
	var h [replySize]byte
	binary.BigEndian.PutUint32(h[0:], simpleReplyMagc)
	binary.BigEndian.PutUint32(h[4:], errno)
	binary.BigEndian.PutUint64(h[8:], handle)
	_, err := c.bw.Write(h[:])
	if err == nil && errno == 0 {
		_, err = c.bw.Write(data)
	}
	if err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		// The client is gone or stuck; stop the reader too.
		c.broken = true
		c.raw.Close()
	}
}

// handle runs one request and returns its errno and, for reads, the data.
func (c *conn) handle(x *export, r *request) (uint32, []byte) {
	off, n := int64(r.off), int64(r.length)
	inRange := r.off <= uint64(x.size) && uint64(r.length) <= uint64(x.size)-r.off
	switch r.typ {
	case cmdRead:
		if n > c.srv.maxRequest() {
			return errInval, nil
		}
		if !inRange {
			return errInval, nil
		}
		buf := make([]byte, n)
		if n == 0 {
			return 0, buf
		}
		if err := x.readAt(buf, off); err != nil {
			c.logIOError("read", x, off, n, err)
			return errnoFor(err, errInval), nil
		}
		return 0, buf

	case cmdWrite:
		if x.ro {
			return errPerm, nil
		}
		if !inRange {
			return errNoSpc, nil
		}
		if n > 0 {
			if err := x.writeAt(r.data, off); err != nil {
				c.logIOError("write", x, off, n, err)
				return errnoFor(err, errNoSpc), nil
			}
		}
		return c.fua(x, r)

	case cmdWriteZeroes:
		if x.ro {
			return errPerm, nil
		}
		if !inRange {
			return errNoSpc, nil
		}
		zero := make([]byte, min(n, 1<<20))
		for done := int64(0); done < n; {
			k := min(n-done, int64(len(zero)))
			if err := x.writeAt(zero[:k], off+done); err != nil {
				c.logIOError("write zeroes", x, off+done, k, err)
				return errnoFor(err, errNoSpc), nil
			}
			done += k
		}
		return c.fua(x, r)

	case cmdTrim:
		if x.ro {
			return errPerm, nil
		}
		if x.trim == nil {
			return errInval, nil
		}
		if !inRange {
			return errInval, nil
		}
		if err := x.trimRange(off, n); err != nil {
			c.logIOError("trim", x, off, n, err)
			return errnoFor(err, errInval), nil
		}
		return c.fua(x, r)

	case cmdFlush:
		if err := x.sync(); err != nil {
			c.log.Error("flush failed", "export", x.Name, "err", err)
			return errIO, nil
		}
		return 0, nil

	default:
		c.log.Warn("unknown command", "type", r.typ)
		return errInval, nil
	}
}

func (c *conn) fua(x *export, r *request) (uint32, []byte) {
	if r.flags&cmdFlagFUA == 0 {
		return 0, nil
	}
	if err := x.sync(); err != nil {
		c.log.Error("FUA sync failed", "export", x.Name, "err", err)
		return errIO, nil
	}
	return 0, nil
}

func (c *conn) logIOError(op string, x *export, off, n int64, err error) {
	level := slog.LevelWarn
	if errors.Is(err, errs.ErrAuthentication) {
		level = slog.LevelError
	}
	c.log.Log(context.Background(), level, "device "+op+" failed",
		"export", x.Name, "offset", off, "length", n,
		"block", off/x.bs, "last_block", (off+max(n, 1)-1)/x.bs, "block_size", x.bs, "err", err)
}

// errnoFor maps a device error to an NBD errno; rangeErr is the errno for
// an out-of-range access.
func errnoFor(err error, rangeErr uint32) uint32 {
	switch {
	case errors.Is(err, blockdev.ErrReadOnly):
		return errPerm
	case errors.Is(err, blockdev.ErrOutOfRange):
		return rangeErr
	case errors.Is(err, errs.ErrNoSpace):
		return errNoSpc
	default:
		return errIO
	}
}

// limiter bounds the requests and payload bytes a connection has in flight.
type limiter struct {
	mu         sync.Mutex
	cond       sync.Cond
	n, maxN    int
	used, maxB int64
}

func newLimiter(maxN int, maxB int64) *limiter {
	l := &limiter{maxN: maxN, maxB: maxB}
	l.cond.L = &l.mu
	return l
}

func (l *limiter) acquire(b int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.n >= l.maxN || (l.used > 0 && l.used+b > l.maxB) {
		l.cond.Wait()
	}
	l.n++
	l.used += b
}

func (l *limiter) release(b int64) {
	l.mu.Lock()
	l.n--
	l.used -= b
	l.mu.Unlock()
	l.cond.Broadcast()
}
