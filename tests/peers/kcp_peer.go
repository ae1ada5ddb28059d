// kcp_peer: a KCP peer nobody here wrote (kcp-go, plain KCP on the wire:
// no encryption, no FEC), for the interop tests of evlua's KCP engine.
//
//	kcp_peer echo-server -addr 127.0.0.1:0 [options]
//	    prints its port as the first line, echoes every session
//	kcp_peer client -addr HOST:PORT -test messages -n N -sizes 1,100,1376
//	    sends N messages (sizes cycling), checks each echo whole
//	kcp_peer client -addr HOST:PORT -test bulk -bytes B [-stream]
//	    sends B bytes, checks the echo's length and CRC-32
//	kcp_peer client -addr HOST:PORT -test pingpong -seconds D -size 64
//	    round trips for D seconds, prints "pingpong N round trips/s"
//	kcp_peer relay -addr 127.0.0.1:0 -target HOST:PORT -drop 10 -dup 2
//	    -reorder 10 -seed 1: a lossy UDP relay; prints its port
//
// Options: -nodelay -interval -resend -nc -sndwnd -rcvwnd -mtu -stream
// (kcp-go's defaults: 0 100 0 0 32 32 1400, message mode) and -sockbuf
// (UDP socket buffer sizes, as kcptun's -sockbuf; evlua asks for 4 MiB).
//
// Build (offline, Debian's packages):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o build/peers/kcp_peer tests/peers/kcp_peer.go
package main

import (
	"bytes"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	kcp "github.com/xtaci/kcp-go"
)

var (
	addr     = flag.String("addr", "127.0.0.1:0", "listen (server, relay) or dial (client) address")
	target   = flag.String("target", "", "relay: the server to relay to")
	test     = flag.String("test", "messages", "client: messages, bulk or pingpong")
	count    = flag.Int("n", 100, "messages: how many")
	sizesArg = flag.String("sizes", "1,100,1000,1376", "messages: sizes, cycling")
	total    = flag.Int("bytes", 10<<20, "bulk: bytes to send")
	seconds  = flag.Float64("seconds", 3, "pingpong: duration")
	size     = flag.Int("size", 64, "pingpong: message size")
	nodelay  = flag.Int("nodelay", 0, "KCP nodelay")
	interval = flag.Int("interval", 100, "KCP interval, ms")
	resend   = flag.Int("resend", 0, "KCP fast resend")
	nc       = flag.Int("nc", 0, "KCP nc: 1 turns congestion control off")
	sndwnd   = flag.Int("sndwnd", 32, "KCP send window")
	rcvwnd   = flag.Int("rcvwnd", 32, "KCP receive window")
	mtu      = flag.Int("mtu", 1400, "KCP mtu")
	stream   = flag.Bool("stream", false, "KCP stream mode")
	sockbuf  = flag.Int("sockbuf", 0, "UDP socket buffers, bytes (0: the kernel's default)")
	drop     = flag.Int("drop", 10, "relay: drop percent")
	dup      = flag.Int("dup", 2, "relay: duplicate percent")
	reorder  = flag.Int("reorder", 10, "relay: percent held back behind the next datagram")
	seed     = flag.Int64("seed", 1, "relay: PRNG seed")
	timeout  = flag.Float64("timeout", 60, "client: give up after this many seconds")
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "kcp_peer: "+format+"\n", args...)
	os.Exit(1)
}

func configure(s *kcp.UDPSession) {
	s.SetNoDelay(*nodelay, *interval, *resend, *nc)
	s.SetWindowSize(*sndwnd, *rcvwnd)
	if !s.SetMtu(*mtu) {
		fail("mtu %d refused", *mtu)
	}
	s.SetStreamMode(*stream)
}

// Echo servers ==========================================================

func echoServer() {
	l, err := kcp.ListenWithOptions(*addr, nil, 0, 0)
	if err != nil {
		fail("listen: %v", err)
	}
	if *sockbuf > 0 {
		l.SetReadBuffer(*sockbuf)
		l.SetWriteBuffer(*sockbuf)
	}
	fmt.Println(l.Addr().(*net.UDPAddr).Port)
	for {
		s, err := l.AcceptKCP()
		if err != nil {
			fail("accept: %v", err)
		}
		configure(s)
		go echo(s)
	}
}

func echo(s *kcp.UDPSession) {
	defer s.Close()
	buf := make([]byte, 1<<20)
	for {
		n, err := s.Read(buf)
		if err != nil {
			return
		}
		if _, err := s.Write(buf[:n]); err != nil {
			return
		}
	}
}

// Clients ===============================================================

func dial() *kcp.UDPSession {
	s, err := kcp.DialWithOptions(*addr, nil, 0, 0)
	if err != nil {
		fail("dial: %v", err)
	}
	configure(s)
	if *sockbuf > 0 {
		s.SetReadBuffer(*sockbuf)
		s.SetWriteBuffer(*sockbuf)
	}
	s.SetDeadline(time.Now().Add(time.Duration(*timeout * float64(time.Second))))
	return s
}

// The bytes of message i: its index, then a pattern.
func message(i, n int) []byte {
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(i*31 + j*7)
	}
	return b
}

func clientMessages(s *kcp.UDPSession) {
	var sizes []int
	for _, f := range strings.Split(*sizesArg, ",") {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			fail("bad size %q", f)
		}
		sizes = append(sizes, n)
	}
	go func() {
		for i := 0; i < *count; i++ {
			if _, err := s.Write(message(i, sizes[i%len(sizes)])); err != nil {
				fail("write: %v", err)
			}
		}
	}()
	buf := make([]byte, 1<<20)
	for i := 0; i < *count; i++ {
		n, err := s.Read(buf)
		if err != nil {
			fail("read message %d: %v", i, err)
		}
		want := message(i, sizes[i%len(sizes)])
		if !bytes.Equal(buf[:n], want) {
			fail("message %d: got %d bytes, want %d (boundary or content differs)", i, n, len(want))
		}
	}
	fmt.Printf("ok messages %d\n", *count)
}

func clientBulk(s *kcp.UDPSession) {
	rng := rand.New(rand.NewSource(7))
	data := make([]byte, *total)
	rng.Read(data)
	want := crc32.ChecksumIEEE(data)
	go func() {
		for off := 0; off < len(data); off += 64 << 10 {
			end := off + 64<<10
			if end > len(data) {
				end = len(data)
			}
			if _, err := s.Write(data[off:end]); err != nil {
				fail("write: %v", err)
			}
		}
	}()
	start := time.Now()
	got := make([]byte, 0, len(data))
	buf := make([]byte, 1<<20)
	for len(got) < len(data) {
		n, err := s.Read(buf)
		if err != nil && err != io.EOF {
			fail("read after %d bytes: %v", len(got), err)
		}
		got = append(got, buf[:n]...)
	}
	if len(got) != len(data) || crc32.ChecksumIEEE(got) != want {
		fail("bulk: %d bytes back, crc %08x, want %d bytes crc %08x", len(got), crc32.ChecksumIEEE(got), len(data), want)
	}
	secs := time.Since(start).Seconds()
	fmt.Printf("ok bulk %d bytes crc %08x %.1f MB/s\n", len(data), want, float64(len(data))/secs/1e6)
}

func clientPingPong(s *kcp.UDPSession) {
	msg := message(0, *size)
	buf := make([]byte, 1<<16)
	end := time.Now().Add(time.Duration(*seconds * float64(time.Second)))
	start := time.Now()
	n := 0
	for time.Now().Before(end) {
		if _, err := s.Write(msg); err != nil {
			fail("write: %v", err)
		}
		for got := 0; got < len(msg); {
			m, err := s.Read(buf)
			if err != nil {
				fail("read: %v", err)
			}
			got += m
		}
		n++
	}
	fmt.Printf("pingpong %.0f round trips/s\n", float64(n)/time.Since(start).Seconds())
}

// The lossy relay =======================================================

// One UDP socket faces the client (learned from its first datagram), one
// the server; each direction drops, duplicates and holds datagrams back.
func relay() {
	if *target == "" {
		fail("relay needs -target")
	}
	front, err := net.ListenPacket("udp", *addr)
	if err != nil {
		fail("relay listen: %v", err)
	}
	raddr, err := net.ResolveUDPAddr("udp", *target)
	if err != nil {
		fail("relay target: %v", err)
	}
	back, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		fail("relay dial: %v", err)
	}
	fmt.Println(front.LocalAddr().(*net.UDPAddr).Port)
	var mu sync.Mutex
	rng := rand.New(rand.NewSource(*seed))
	var client net.Addr
	lossy := func(send func([]byte)) func([]byte) {
		var held []byte
		return func(b []byte) {
			mu.Lock()
			defer mu.Unlock()
			if rng.Intn(100) < *drop {
				return
			}
			copies := 1
			if rng.Intn(100) < *dup {
				copies = 2
			}
			if held == nil && rng.Intn(100) < *reorder {
				held = append([]byte(nil), b...)
				return
			}
			for i := 0; i < copies; i++ {
				send(b)
			}
			if held != nil {
				send(held)
				held = nil
			}
		}
	}
	toServer := lossy(func(b []byte) { back.Write(b) })
	toClient := lossy(func(b []byte) {
		if client != nil {
			front.WriteTo(b, client)
		}
	})
	go func() {
		buf := make([]byte, 2048)
		for {
			n, err := back.Read(buf)
			if err != nil {
				fail("relay read: %v", err)
			}
			toClient(buf[:n])
		}
	}()
	buf := make([]byte, 2048)
	for {
		n, from, err := front.ReadFrom(buf)
		if err != nil {
			fail("relay read: %v", err)
		}
		mu.Lock()
		client = from
		mu.Unlock()
		toServer(buf[:n])
	}
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: kcp_peer echo-server|client|relay [flags]")
	}
	mode := os.Args[1]
	flag.CommandLine.Parse(os.Args[2:])
	switch mode {
	case "echo-server":
		echoServer()
	case "relay":
		relay()
	case "client":
		s := dial()
		defer s.Close()
		switch *test {
		case "messages":
			clientMessages(s)
		case "bulk":
			clientBulk(s)
		case "pingpong":
			clientPingPong(s)
		default:
			fail("unknown test %q", *test)
		}
	default:
		fail("unknown mode %q", mode)
	}
}
