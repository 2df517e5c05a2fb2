// Package blackhole plays, on loopback and without root, a node that
// black-holes traffic: a port that neither accepts nor refuses connections.
// Only tests and benchmarks use it.
package blackhole

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// Hole is a listening socket with an accept backlog of 0 that is never
// accepted from, its one queue slot taken by its own connection. Linux drops
// a SYN that arrives while the accept queue is full, so every other connect
// to the port stays unanswered until it times out: no RST, no SYN-ACK, no
// bytes.
type Hole struct {
	fd     int
	addr   netip.AddrPort
	filler net.Conn
}

// Listen opens a hole on an IPv4 addr ("ip:port"; port 0 picks one). A port
// that was just closed may be busy a moment: binding is retried for a second.
func Listen(addr string) (*Hole, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return nil, fmt.Errorf("black hole: %q is not an IPv4 address and port", addr)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Hole, error) {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("black hole on %s: %w", addr, err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return fail(err)
	}
	sa := &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	var bindErr error
	for range 50 {
		if bindErr = syscall.Bind(fd, sa); bindErr == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if bindErr != nil {
		return fail(bindErr)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		return fail(err)
	}
	bound, err := syscall.Getsockname(fd)
	if err != nil {
		return fail(err)
	}
	h := &Hole{fd: fd, addr: netip.AddrPortFrom(ap.Addr(), uint16(bound.(*syscall.SockaddrInet4).Port))}
	// If another client's connect came first it holds the slot, and this
	// one times out: the port is a hole either way.
	h.filler, _ = net.DialTimeout("tcp", h.addr.String(), 200*time.Millisecond)
	return h, nil
}

// Addr is the hole's address.
func (h *Hole) Addr() netip.AddrPort { return h.addr }

// Holds reports whether a connect to the hole hangs (it does on Linux).
func (h *Hole) Holds() bool {
	c, err := net.DialTimeout("tcp", h.addr.String(), 200*time.Millisecond)
	if err == nil {
		c.Close()
		return false
	}
	return true
}

// Close frees the port.
func (h *Hole) Close() {
	if h.filler != nil {
		_ = h.filler.Close()
	}
	_ = syscall.Close(h.fd)
}
