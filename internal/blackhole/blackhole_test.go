package blackhole

import (
	"net"
	"testing"
	"time"
)

// TestConnectsTimeOut: a connect to the hole neither succeeds nor is
// refused; it times out. Closed, the port refuses.
func TestConnectsTimeOut(t *testing.T) {
	h, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := h.Addr().String()
	c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
	if err == nil {
		c.Close()
		h.Close()
		t.Fatal("connect to the black hole succeeded")
	}
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		h.Close()
		t.Fatalf("connect: %v, want a timeout", err)
	}
	h.Close()
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
		c.Close()
		t.Fatal("connect to the closed hole succeeded, want refused")
	}
}
