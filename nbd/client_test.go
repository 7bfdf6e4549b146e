package nbd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sealfs/sealfs/blockdev"
)

// testClient is a minimal NBD client speaking the wire format directly, so
// tests can also misbehave.
type testClient struct {
	t     testing.TB
	raw   net.Conn
	c     net.Conn
	br    *bufio.Reader
	size  uint64
	flags uint16
	// block sizes from NBD_INFO_BLOCK_SIZE
	minBS, prefBS, maxBS uint32
	handle               uint64
}

func dial(t testing.TB, addr string) *testClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &testClient{t: t, raw: c, c: c, br: bufio.NewReader(c)}
}

func (tc *testClient) write(b []byte) {
	tc.t.Helper()
	if _, err := tc.c.Write(b); err != nil {
		tc.t.Fatalf("write: %v", err)
	}
}

func (tc *testClient) readFull(n int) ([]byte, error) {
	b := make([]byte, n)
	_, err := io.ReadFull(tc.br, b)
	return b, err
}

// hello reads the server greeting and sends the client flags.
func (tc *testClient) hello(clientFlags uint32) {
	tc.t.Helper()
	b, err := tc.readFull(18)
	if err != nil {
		tc.t.Fatalf("greeting: %v", err)
	}
	if binary.BigEndian.Uint64(b) != nbdMagic || binary.BigEndian.Uint64(b[8:]) != optMagic {
		tc.t.Fatalf("bad greeting % x", b)
	}
	if f := binary.BigEndian.Uint16(b[16:]); f != flagFixedNewstyle|flagNoZeroes {
		tc.t.Fatalf("handshake flags %#x", f)
	}
	tc.write(binary.BigEndian.AppendUint32(nil, clientFlags))
}

func (tc *testClient) sendOpt(opt uint32, data []byte) {
	tc.t.Helper()
	b := binary.BigEndian.AppendUint64(nil, optMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	tc.write(append(b, data...))
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (tc *testClient) optReply() (optReply, error) {
	h, err := tc.readFull(20)
	if err != nil {
		return optReply{}, err
	}
	if m := binary.BigEndian.Uint64(h); m != repMagic {
		return optReply{}, fmt.Errorf("bad reply magic %#x", m)
	}
	r := optReply{opt: binary.BigEndian.Uint32(h[8:]), typ: binary.BigEndian.Uint32(h[12:])}
	r.data, err = tc.readFull(int(binary.BigEndian.Uint32(h[16:])))
	return r, err
}

func (tc *testClient) mustOptReply(opt, typ uint32) optReply {
	tc.t.Helper()
	r, err := tc.optReply()
	if err != nil {
		tc.t.Fatalf("option %d reply: %v", opt, err)
	}
	if r.opt != opt || r.typ != typ {
		tc.t.Fatalf("option %d: reply option %d type %#x (%q), want type %#x", opt, r.opt, r.typ, r.data, typ)
	}
	return r
}

func infoData(name string, reqs ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(reqs)))
	for _, r := range reqs {
		b = binary.BigEndian.AppendUint16(b, r)
	}
	return b
}

// info sends NBD_OPT_INFO or NBD_OPT_GO and collects the replies up to the
// final one, whose type it returns.
func (tc *testClient) info(opt uint32, name string, reqs ...uint16) (uint32, map[uint16][]byte) {
	tc.t.Helper()
	tc.sendOpt(opt, infoData(name, reqs...))
	infos := map[uint16][]byte{}
	for {
		r, err := tc.optReply()
		if err != nil {
			tc.t.Fatalf("option %d: %v", opt, err)
		}
		if r.typ != repInfo {
			return r.typ, infos
		}
		typ := binary.BigEndian.Uint16(r.data)
		infos[typ] = r.data[2:]
		switch typ {
		case infoExport:
			tc.size = binary.BigEndian.Uint64(r.data[2:])
			tc.flags = binary.BigEndian.Uint16(r.data[10:])
		case infoBlockSize:
			tc.minBS = binary.BigEndian.Uint32(r.data[2:])
			tc.prefBS = binary.BigEndian.Uint32(r.data[6:])
			tc.maxBS = binary.BigEndian.Uint32(r.data[10:])
		}
	}
}

// open performs a complete handshake with NBD_OPT_GO.
func (tc *testClient) open(name string) {
	tc.t.Helper()
	tc.hello(flagCFixedNewstyle | flagCNoZeroes)
	if typ, _ := tc.info(optGo, name, infoBlockSize); typ != repAck {
		tc.t.Fatalf("NBD_OPT_GO %q: reply %#x", name, typ)
	}
}

func (tc *testClient) startTLS(cfg *tls.Config) error {
	tc.t.Helper()
	tc.sendOpt(optStartTLS, nil)
	tc.mustOptReply(optStartTLS, repAck)
	c := tls.Client(tc.raw, cfg)
	if err := c.Handshake(); err != nil {
		return err
	}
	tc.c, tc.br = c, bufio.NewReader(c)
	return nil
}

func (tc *testClient) sendReq(typ, flags uint16, off uint64, length uint32, data []byte) uint64 {
	tc.t.Helper()
	tc.handle++
	b := binary.BigEndian.AppendUint32(nil, requestMagic)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, tc.handle)
	b = binary.BigEndian.AppendUint64(b, off)
	b = binary.BigEndian.AppendUint32(b, length)
	tc.write(append(b, data...))
	return tc.handle
}

// readReply reads one simple reply; readLen gives the payload length of a
// successful reply by handle.
func (tc *testClient) readReply(readLen func(handle uint64) int) (handle uint64, errno uint32, data []byte, err error) {
	h, err := tc.readFull(replySize)
	if err != nil {
		return 0, 0, nil, err
	}
	if m := binary.BigEndian.Uint32(h); m != simpleReplyMagc {
		return 0, 0, nil, fmt.Errorf("bad reply magic %#x", m)
	}
	errno = binary.BigEndian.Uint32(h[4:])
	handle = binary.BigEndian.Uint64(h[8:])
	if errno == 0 {
		data, err = tc.readFull(readLen(handle))
	}
	return handle, errno, data, err
}

// do sends one request and waits for its reply.
func (tc *testClient) do(typ, flags uint16, off uint64, length uint32, payload []byte) (uint32, []byte) {
	tc.t.Helper()
	h := tc.sendReq(typ, flags, off, length, payload)
	got, errno, data, err := tc.readReply(func(uint64) int {
		if typ == cmdRead {
			return int(length)
		}
		return 0
	})
	if err != nil {
		tc.t.Fatalf("request %d: %v", typ, err)
	}
	if got != h {
		tc.t.Fatalf("reply handle %d, want %d", got, h)
	}
	return errno, data
}

func (tc *testClient) read(off uint64, n uint32) []byte {
	tc.t.Helper()
	errno, data := tc.do(cmdRead, 0, off, n, nil)
	if errno != 0 {
		tc.t.Fatalf("read %d at %d: errno %d", n, off, errno)
	}
	return data
}

func (tc *testClient) mustWrite(off uint64, p []byte) {
	tc.t.Helper()
	if errno, _ := tc.do(cmdWrite, 0, off, uint32(len(p)), p); errno != 0 {
		tc.t.Fatalf("write %d at %d: errno %d", len(p), off, errno)
	}
}

// expectClosed waits for the server to hang up.
func (tc *testClient) expectClosed() {
	tc.t.Helper()
	tc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, tc.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		tc.t.Fatalf("server did not close the connection")
	}
}

// ---- server fixtures ----

// logBuffer is a concurrency-safe log sink.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startServer serves srv on 127.0.0.1:0 until the test ends and returns the
// address and a function that shuts it down and returns Serve's error.
func startServer(t testing.TB, srv *Server) (string, func() error) {
	t.Helper()
	if srv.Logger == nil {
		lb := &logBuffer{}
		srv.Logger = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("server log:\n%s", lb)
			}
		})
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	var once sync.Once
	var serr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case serr = <-done:
			case <-time.After(20 * time.Second):
				serr = errors.New("Serve did not return after cancel")
			}
		})
		return serr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return l.Addr().String(), stop
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// alignedOnly refuses I/O that is not block-aligned (except a final
// partial block), like a block-granular protected device would.
type alignedOnly struct {
	blockdev.Device
	mu     sync.Mutex
	syncs  int
	writes int
}

func (a *alignedOnly) check(n int, off int64) error {
	bs := int64(a.BlockSize())
	if off%bs != 0 || (int64(n)%bs != 0 && off+int64(n) != a.Size()) {
		return fmt.Errorf("unaligned access of %d bytes at %d: %w", n, off, blockdev.ErrOutOfRange)
	}
	return nil
}

func (a *alignedOnly) ReadAt(p []byte, off int64) (int, error) {
	if err := a.check(len(p), off); err != nil {
		return 0, err
	}
	return a.Device.ReadAt(p, off)
}

func (a *alignedOnly) WriteAt(p []byte, off int64) (int, error) {
	if err := a.check(len(p), off); err != nil {
		return 0, err
	}
	a.mu.Lock()
	a.writes++
	a.mu.Unlock()
	return a.Device.WriteAt(p, off)
}

func (a *alignedOnly) Sync() error {
	a.mu.Lock()
	a.syncs++
	a.mu.Unlock()
	return a.Device.Sync()
}

func (a *alignedOnly) syncCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.syncs
}

func (a *alignedOnly) ReadOnly() bool { return blockdev.IsReadOnly(a.Device) }
