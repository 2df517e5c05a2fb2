package main

import (
	"net"
	"testing"
	"time"
)

// TestBlackholeDropsConnects: after the black hole is up, a connect neither
// succeeds nor is refused; it times out.
func TestBlackholeDropsConnects(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	h, err := listenBlackhole(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer h.close()
	c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
	if err == nil {
		c.Close()
		t.Fatal("connect to the black hole succeeded")
	}
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("connect: %v, want a timeout", err)
	}
}
