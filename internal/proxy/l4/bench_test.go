package l4

import (
	"io"
	"net"
	"testing"

	"github.com/go-logr/logr"
)

// BenchmarkTCPProxyRoundTrip measures proxied echo round trips of 32 KiB
// (client → proxy → echo backend → proxy → client) on loopback.
func BenchmarkTCPProxyRoundTrip(b *testing.B) {
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	tl, err := NewTCPListener(tcpListener(b, "svc", 0), &roundRobin{hosts: map[string][]string{"svc": {backend.Addr().String()}}}, logr.Discard())
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go tl.Serve(ln)
	defer tl.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 32*1024)
	buf := make([]byte, len(msg))
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTCPProxyConnect measures a new proxied connection: accept, RBAC check,
// upstream dial, first byte back.
func BenchmarkTCPProxyConnect(b *testing.B) {
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			go func() { c.Write([]byte{'x'}); io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	tl, err := NewTCPListener(tcpListener(b, "svc", 0, "127.0.0.0/8"), &roundRobin{hosts: map[string][]string{"svc": {backend.Addr().String()}}}, logr.Discard())
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go tl.Serve(ln)
	defer tl.Close()
	one := make([]byte, 1)
	for b.Loop() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, one); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
