package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/errs"
)

const testSize = 1 << 20

func memServer(t testing.TB, ro bool) (*Server, *blockdev.Memory) {
	m := blockdev.NewMemoryFrom(pattern(testSize, 1), 4096)
	return &Server{Exports: []*Export{{Name: "disk", Description: "test disk", Device: m, ReadOnly: ro}}}, m
}

func TestHandshakeGo(t *testing.T) {
	srv, _ := memServer(t, false)
	addr, _ := startServer(t, srv)
	tc := dial(t, addr)
	tc.hello(flagCFixedNewstyle | flagCNoZeroes)
	typ, infos := tc.info(optGo, "disk", infoName, infoDescription, infoBlockSize)
	if typ != repAck {
		t.Fatalf("GO reply %#x", typ)
	}
	if tc.size != testSize {
		t.Errorf("size %d", tc.size)
	}
	want := uint16(flagHasFlags | flagSendFlush | flagCanMultiConn | flagSendFUA | flagSendWriteZeroes | flagSendTrim)
	if tc.flags != want {
		t.Errorf("flags %#x, want %#x", tc.flags, want)
	}
	if tc.minBS != 1 || tc.prefBS != 4096 || tc.maxBS != DefaultMaxRequest {
		t.Errorf("block sizes %d/%d/%d", tc.minBS, tc.prefBS, tc.maxBS)
	}
	if string(infos[infoName]) != "disk" || string(infos[infoDescription]) != "test disk" {
		t.Errorf("name %q description %q", infos[infoName], infos[infoDescription])
	}
	if got := tc.read(0, 4096); !bytes.Equal(got, pattern(testSize, 1)[:4096]) {
		t.Error("read returned wrong bytes")
	}
	tc.sendReq(cmdDisc, 0, 0, 0, nil)
	tc.expectClosed()
}

func TestCommands(t *testing.T) {
	srv, m := memServer(t, false)
	addr, _ := startServer(t, srv)
	tc := dial(t, addr)
	tc.open("disk")
	model := pattern(testSize, 1)

	data := pattern(8192, 2)
	tc.mustWrite(4096, data)
	copy(model[4096:], data)
	if errno, _ := tc.do(cmdWrite, cmdFlagFUA, 65536, 4096, data[:4096]); errno != 0 {
		t.Fatalf("FUA write: errno %d", errno)
	}
	copy(model[65536:], data[:4096])
	if errno, _ := tc.do(cmdFlush, 0, 0, 0, nil); errno != 0 {
		t.Fatalf("flush: errno %d", errno)
	}
	if errno, _ := tc.do(cmdWriteZeroes, 0, 100000, 50000, nil); errno != 0 {
		t.Fatalf("write zeroes: errno %d", errno)
	}
	clear(model[100000:150000])
	// Trim: only whole blocks inside the range are discarded (Memory zeroes them).
	if errno, _ := tc.do(cmdTrim, 0, 200000, 20000, nil); errno != 0 {
		t.Fatalf("trim: errno %d", errno)
	}
	clear(model[200704:217088])
	if got := tc.read(0, testSize); !bytes.Equal(got, model) {
		t.Fatalf("export differs from model")
	}
	if !bytes.Equal(m.Bytes(), model) {
		t.Fatalf("device differs from model")
	}
	if errno, data := tc.do(cmdRead, 0, 0, 0, nil); errno != 0 || len(data) != 0 {
		t.Fatalf("empty read: %d, %d bytes", errno, len(data))
	}
	tc.sendReq(cmdDisc, 0, 0, 0, nil)
	tc.expectClosed()
}

func TestExportNameOption(t *testing.T) {
	srv, _ := memServer(t, false)
	addr, _ := startServer(t, srv)
	for _, noZeroes := range []bool{false, true} {
		tc := dial(t, addr)
		cf := uint32(flagCFixedNewstyle)
		if noZeroes {
			cf |= flagCNoZeroes
		}
		tc.hello(cf)
		tc.sendOpt(optExportName, []byte("")) // default export
		n := 10 + 124
		if noZeroes {
			n = 10
		}
		b, err := tc.readFull(n)
		if err != nil {
			t.Fatal(err)
		}
		if binary.BigEndian.Uint64(b) != testSize {
			t.Errorf("size %d", binary.BigEndian.Uint64(b))
		}
		if !bytes.Equal(tc.read(testSize-10, 10), pattern(testSize, 1)[testSize-10:]) {
			t.Error("wrong tail")
		}
	}
	// An unknown export name closes the connection.
	tc := dial(t, addr)
	tc.hello(flagCFixedNewstyle)
	tc.sendOpt(optExportName, []byte("nope"))
	tc.expectClosed()
}

func TestOptions(t *testing.T) {
	m2 := blockdev.NewMemory(8192, 512)
	srv, _ := memServer(t, false)
	srv.Exports = append(srv.Exports, &Export{Name: "second", Device: m2})
	addr, _ := startServer(t, srv)
	tc := dial(t, addr)
	tc.hello(flagCFixedNewstyle)

	tc.sendOpt(optList, nil)
	var names []string
	for {
		r, err := tc.optReply()
		if err != nil {
			t.Fatal(err)
		}
		if r.typ == repAck {
			break
		}
		if r.typ != repServer {
			t.Fatalf("LIST reply %#x", r.typ)
		}
		names = append(names, string(r.data[4:4+binary.BigEndian.Uint32(r.data)]))
	}
	if strings.Join(names, ",") != "disk,second" {
		t.Errorf("LIST: %q", names)
	}
	tc.sendOpt(optList, []byte{1})
	tc.mustOptReply(optList, repErrInvalid)

	if typ, _ := tc.info(optInfo, "nope"); typ != repErrUnknown {
		t.Errorf("INFO unknown export: %#x", typ)
	}
	if typ, _ := tc.info(optInfo, "second"); typ != repAck || tc.size != 8192 || tc.prefBS != 512 {
		t.Errorf("INFO second: %#x size %d pref %d", typ, tc.size, tc.prefBS)
	}
	tc.sendOpt(optInfo, []byte{0, 0, 0, 9, 'x'}) // name longer than the data
	tc.mustOptReply(optInfo, repErrInvalid)
	tc.sendOpt(optGo, append(infoData("disk"), 0)) // trailing byte
	tc.mustOptReply(optGo, repErrInvalid)
	tc.sendOpt(optStructuredRepl, nil)
	tc.mustOptReply(optStructuredRepl, repErrUnsup)
	tc.sendOpt(9999, []byte("whatever"))
	tc.mustOptReply(9999, repErrUnsup)
	tc.sendOpt(optStartTLS, nil) // no TLS configured
	tc.mustOptReply(optStartTLS, repErrPolicy)

	// GO with the empty name opens the first export.
	if typ, _ := tc.info(optGo, ""); typ != repAck || tc.size != testSize {
		t.Fatalf("GO default: %#x size %d", typ, tc.size)
	}
	tc.read(0, 512)

	tc2 := dial(t, addr)
	tc2.hello(flagCFixedNewstyle)
	tc2.sendOpt(optAbort, nil)
	tc2.mustOptReply(optAbort, repAck)
	tc2.expectClosed()
}

func TestUnaligned(t *testing.T) {
	// A size that is not a multiple of the block size, and a device that
	// refuses unaligned I/O: the server must align every access.
	const size = 10*4096 + 1000
	model := pattern(size, 3)
	dev := &alignedOnly{Device: blockdev.NewMemoryFrom(bytes.Clone(model), 4096)}
	addr, _ := startServer(t, &Server{Exports: []*Export{{Name: "u", Device: dev}}})
	tc := dial(t, addr)
	tc.open("u")
	rng := rand.New(rand.NewPCG(1, 2))
	check := func(off, n int) {
		t.Helper()
		if got := tc.read(uint64(off), uint32(n)); !bytes.Equal(got, model[off:off+n]) {
			t.Fatalf("read %d at %d differs", n, off)
		}
	}
	for _, w := range [][2]int{{1, 1}, {4095, 2}, {4000, 5000}, {100, 3000}, {size - 7, 7}, {size - 5000, 5000}, {0, size}, {4096, 4096}, {12288 + 10, 100}} {
		off, n := w[0], w[1]
		p := pattern(n, byte(off))
		tc.mustWrite(uint64(off), p)
		copy(model[off:], p)
		check(0, size)
		check(off, n)
	}
	for range 200 {
		off := rng.IntN(size)
		n := rng.IntN(min(size-off, 9000) + 1)
		if rng.IntN(2) == 0 {
			p := pattern(n, byte(rng.Uint32()))
			tc.mustWrite(uint64(off), p)
			copy(model[off:], p)
		} else if n > 0 {
			check(off, n)
		}
	}
	check(0, size)
	if errno, _ := tc.do(cmdWriteZeroes, 0, 5, 9000, nil); errno != 0 {
		t.Fatalf("write zeroes: %d", errno)
	}
	clear(model[5:9005])
	check(0, size)
}

func TestReadOnly(t *testing.T) {
	for _, how := range []string{"export", "device"} {
		t.Run(how, func(t *testing.T) {
			m := blockdev.NewMemoryFrom(pattern(testSize, 1), 4096)
			e := &Export{Name: "ro", Device: m}
			if how == "export" {
				e.ReadOnly = true
			} else {
				m.SetReadOnly(true)
			}
			dev := &alignedOnly{Device: m}
			e.Device = dev
			addr, _ := startServer(t, &Server{Exports: []*Export{e}})
			tc := dial(t, addr)
			tc.open("ro")
			if tc.flags&flagReadOnly == 0 || tc.flags&(flagSendTrim|flagSendWriteZeroes|flagSendFUA) != 0 {
				t.Errorf("flags %#x", tc.flags)
			}
			for _, typ := range []uint16{cmdWrite, cmdTrim, cmdWriteZeroes} {
				var payload []byte
				if typ == cmdWrite {
					payload = make([]byte, 512)
				}
				if errno, _ := tc.do(typ, 0, 0, 512, payload); errno != errPerm {
					t.Errorf("command %d on read-only export: errno %d, want EPERM", typ, errno)
				}
			}
			if errno, _ := tc.do(cmdFlush, 0, 0, 0, nil); errno != 0 {
				t.Errorf("flush: %d", errno)
			}
			if !bytes.Equal(tc.read(0, testSize), pattern(testSize, 1)) {
				t.Error("contents changed")
			}
			if dev.writes != 0 {
				t.Errorf("%d writes reached the device", dev.writes)
			}
		})
	}
}

// failing fails reads (and read-modify-writes) of one block with
// errs.ErrAuthentication, like a verity device whose block was tampered.
type failing struct {
	blockdev.Device
	bad int64
}

func (f *failing) ReadAt(p []byte, off int64) (int, error) {
	bs := int64(f.BlockSize())
	if off <= f.bad*bs+bs-1 && off+int64(len(p)) > f.bad*bs {
		return 0, fmt.Errorf("bd: block %d: %w", f.bad, errs.ErrAuthentication)
	}
	return f.Device.ReadAt(p, off)
}

func TestDeviceErrorIsEIO(t *testing.T) {
	lb := &logBuffer{}
	dev := &failing{Device: blockdev.NewMemoryFrom(pattern(testSize, 1), 4096), bad: 3}
	srv := &Server{
		Exports: []*Export{{Name: "v", Device: dev}},
		Logger:  slog.New(slog.NewTextHandler(lb, nil)),
	}
	addr, _ := startServer(t, srv)
	tc := dial(t, addr)
	tc.open("v")
	if errno, _ := tc.do(cmdRead, 0, 3*4096+100, 10, nil); errno != errIO {
		t.Fatalf("read of the bad block: errno %d, want EIO", errno)
	}
	if errno, _ := tc.do(cmdRead, 0, 0, 16*4096, nil); errno != errIO {
		t.Fatalf("read across the bad block: errno %d, want EIO", errno)
	}
	// A write needing read-modify-write of the bad block fails too.
	if errno, _ := tc.do(cmdWrite, 0, 3*4096+1, 1, []byte{7}); errno != errIO {
		t.Fatalf("RMW of the bad block: errno %d, want EIO", errno)
	}
	// Other blocks still read, on this connection and on a new one.
	model := pattern(testSize, 1)
	if !bytes.Equal(tc.read(0, 3*4096), model[:3*4096]) || !bytes.Equal(tc.read(4*4096, 4096), model[4*4096:5*4096]) {
		t.Fatal("good blocks read wrong")
	}
	tc2 := dial(t, addr)
	tc2.open("v")
	tc2.read(8*4096, 4096)
	log := lb.String()
	if !strings.Contains(log, "block=3") || !strings.Contains(log, "authentication failed") || !strings.Contains(log, "offset=12388") {
		t.Errorf("log does not name the failing block:\n%s", log)
	}
}

func TestBadClients(t *testing.T) {
	srv, _ := memServer(t, false)
	srv.HandshakeTimeout = 2 * time.Second
	addr, _ := startServer(t, srv)

	t.Run("garbage", func(t *testing.T) {
		tc := dial(t, addr)
		tc.readFull(18)
		tc.write(pattern(4096, 9))
		tc.expectClosed()
	})
	t.Run("garbage-no-read", func(t *testing.T) {
		tc := dial(t, addr)
		tc.write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		tc.expectClosed()
	})
	t.Run("unknown-client-flags", func(t *testing.T) {
		tc := dial(t, addr)
		tc.hello(0x80)
		tc.expectClosed()
	})
	t.Run("truncated-flags", func(t *testing.T) {
		tc := dial(t, addr)
		tc.readFull(18)
		tc.write([]byte{0, 0})
		tc.raw.(*net.TCPConn).CloseWrite()
		tc.expectClosed()
	})
	t.Run("truncated-option", func(t *testing.T) {
		tc := dial(t, addr)
		tc.hello(flagCFixedNewstyle)
		b := binary.BigEndian.AppendUint64(nil, optMagic)
		b = binary.BigEndian.AppendUint32(b, optGo)
		b = binary.BigEndian.AppendUint32(b, 100)
		tc.write(append(b, 1, 2, 3))
		tc.raw.(*net.TCPConn).CloseWrite()
		tc.expectClosed()
	})
	t.Run("stalled-handshake", func(t *testing.T) {
		tc := dial(t, addr)
		tc.hello(flagCFixedNewstyle)
		start := time.Now()
		tc.expectClosed() // HandshakeTimeout
		if d := time.Since(start); d > 8*time.Second {
			t.Errorf("closed after %v", d)
		}
	})
	t.Run("huge-option", func(t *testing.T) {
		tc := dial(t, addr)
		tc.hello(flagCFixedNewstyle)
		b := binary.BigEndian.AppendUint64(nil, optMagic)
		b = binary.BigEndian.AppendUint32(b, optInfo)
		b = binary.BigEndian.AppendUint32(b, 0xffffffff)
		tc.write(b)
		tc.expectClosed()
	})
	t.Run("bad-option-magic", func(t *testing.T) {
		tc := dial(t, addr)
		tc.hello(flagCFixedNewstyle)
		tc.write(make([]byte, 16))
		tc.expectClosed()
	})
	t.Run("requests", func(t *testing.T) {
		tc := dial(t, addr)
		tc.open("disk")
		cases := []struct {
			name   string
			typ    uint16
			off    uint64
			n      uint32
			payl   bool
			errno  uint32
			closed bool
		}{
			{"read past end", cmdRead, testSize - 1, 2, false, errInval, false},
			{"read at end", cmdRead, testSize, 1, false, errInval, false},
			{"read huge offset", cmdRead, 1 << 63, 1, false, errInval, false},
			{"read max offset", cmdRead, ^uint64(0), 1, false, errInval, false},
			{"read oversized", cmdRead, 0, DefaultMaxRequest + 1, false, errInval, false},
			{"read 4 GiB", cmdRead, 0, ^uint32(0), false, errInval, false},
			{"write past end", cmdWrite, testSize - 1, 2, true, errNoSpc, false},
			{"write huge offset", cmdWrite, ^uint64(0) - 1, 4, true, errNoSpc, false},
			{"write zeroes past end", cmdWriteZeroes, testSize, 1, false, errNoSpc, false},
			{"trim past end", cmdTrim, testSize, 4096, false, errInval, false},
			{"unknown command", 77, 0, 0, false, errInval, false},
			{"cache (unsupported)", 5, 0, 4096, false, errInval, false},
		}
		for _, c := range cases {
			var p []byte
			if c.payl {
				p = make([]byte, c.n)
			}
			if errno, _ := tc.do(c.typ, 0, c.off, c.n, p); errno != c.errno {
				t.Errorf("%s: errno %d, want %d", c.name, errno, c.errno)
			}
		}
		// The connection still works.
		tc.read(0, 4096)
		// An oversized write cannot be skipped: EINVAL, then the server hangs up.
		tc.sendReq(cmdWrite, 0, 0, DefaultMaxRequest+1, nil)
		_, errno, _, err := tc.readReply(func(uint64) int { return 0 })
		if err != nil || errno != errInval {
			t.Errorf("oversized write: errno %d, %v", errno, err)
		}
		tc.expectClosed()
	})
	t.Run("bad-request-magic", func(t *testing.T) {
		tc := dial(t, addr)
		tc.open("disk")
		tc.write(make([]byte, requestSize))
		tc.expectClosed()
	})
	t.Run("truncated-write", func(t *testing.T) {
		tc := dial(t, addr)
		tc.open("disk")
		tc.sendReq(cmdWrite, 0, 0, 4096, make([]byte, 100))
		tc.raw.(*net.TCPConn).CloseWrite()
		tc.expectClosed()
	})
	// After all that, a good client is served.
	tc := dial(t, addr)
	tc.open("disk")
	if !bytes.Equal(tc.read(0, 4096), pattern(testSize, 1)[:4096]) {
		t.Fatal("image changed by bad clients")
	}
}

func TestConcurrentClients(t *testing.T) {
	const clients, region = 8, testSize / 8
	srv, m := memServer(t, false)
	addr, _ := startServer(t, srv)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tc := dial(t, addr)
			tc.open("disk")
			base := uint64(i * region)
			data := pattern(region, byte(10+i))
			// Pipeline 32 writes of 4 KiB, then 32 reads, without waiting.
			for k := range region / 4096 {
				tc.sendReq(cmdWrite, 0, base+uint64(k*4096), 4096, data[k*4096:(k+1)*4096])
			}
			for range region / 4096 {
				if _, errno, _, err := tc.readReply(func(uint64) int { return 0 }); err != nil || errno != 0 {
					t.Errorf("client %d write: %d %v", i, errno, err)
					return
				}
			}
			offs := map[uint64]uint64{}
			for k := range region / 4096 {
				h := tc.sendReq(cmdRead, 0, base+uint64(k*4096), 4096, nil)
				offs[h] = uint64(k * 4096)
			}
			for range region / 4096 {
				h, errno, got, err := tc.readReply(func(uint64) int { return 4096 })
				if err != nil || errno != 0 {
					t.Errorf("client %d read: %d %v", i, errno, err)
					return
				}
				o := offs[h]
				if !bytes.Equal(got, data[o:o+4096]) {
					t.Errorf("client %d: handle %d returned wrong data", i, h)
				}
			}
			tc.sendReq(cmdDisc, 0, 0, 0, nil)
			tc.expectClosed()
		}()
	}
	wg.Wait()
	all := m.Bytes()
	for i := range clients {
		if !bytes.Equal(all[i*region:(i+1)*region], pattern(region, byte(10+i))) {
			t.Errorf("region %d wrong", i)
		}
	}
}

func TestGracefulShutdown(t *testing.T) {
	dev := &alignedOnly{Device: blockdev.NewMemory(testSize, 4096)}
	addr, stop := startServer(t, &Server{Exports: []*Export{{Name: "d", Device: dev}}})
	tc := dial(t, addr)
	tc.open("d")
	idle := dial(t, addr) // still negotiating
	idle.hello(flagCFixedNewstyle)
	// Pipeline writes, then shut down while they are in flight.
	for k := range 64 {
		tc.sendReq(cmdWrite, 0, uint64(k*4096), 4096, pattern(4096, byte(k)))
	}
	// Wait until at least one reply arrived so the requests were read.
	if _, errno, _, err := tc.readReply(func(uint64) int { return 0 }); err != nil || errno != 0 {
		t.Fatalf("first reply: %d %v", errno, err)
	}
	before := dev.syncCount()
	if err := stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	// Replies to requests the server read are delivered, then it hangs up.
	tc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	replies := 1
	for {
		if _, errno, _, err := tc.readReply(func(uint64) int { return 0 }); err != nil {
			break
		} else if errno != 0 {
			t.Errorf("errno %d", errno)
		}
		replies++
	}
	if dev.syncCount() <= before {
		t.Error("no sync on shutdown")
	}
	idle.expectClosed()
	// Whatever was acknowledged is on the device.
	got, _ := blockdev.ReadAll(dev)
	if replies == 64 && !bytes.Equal(got[:4096], pattern(4096, 0)) {
		t.Error("acknowledged write missing")
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("listener still accepting after shutdown")
	}
}

func TestServeErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Server{
		{},
		{Exports: []*Export{{Name: "a"}}},
		{Exports: []*Export{{Name: "a", Device: blockdev.NewMemory(512, 512)}, {Name: "a", Device: blockdev.NewMemory(512, 512)}}},
		{Exports: []*Export{{Name: "a", Device: blockdev.NewMemory(512, 512)}}, RequireTLS: true},
	} {
		if err := s.Serve(context.Background(), l); err == nil {
			t.Errorf("Serve(%+v) succeeded", s)
		}
	}
}

// TestFuzzHandshake throws random bytes after valid prefixes at the server;
// it must neither crash nor wedge.
func TestFuzzHandshake(t *testing.T) {
	srv, _ := memServer(t, false)
	srv.HandshakeTimeout = time.Second
	addr, _ := startServer(t, srv)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			var prefix []byte
			switch i % 3 {
			case 1:
				prefix = []byte{0, 0, 0, 1}
			case 2:
				prefix = append([]byte{0, 0, 0, 3}, binary.BigEndian.AppendUint64(nil, optMagic)...)
			}
			junk := pattern(64+i*37, byte(i))
			c.Write(append(prefix, junk...))
			io.Copy(io.Discard, c)
		}()
	}
	wg.Wait()
	tc := dial(t, addr)
	tc.open("disk")
	tc.read(0, 512)
}
