package main

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/fleetlb/fleetlb/internal/echo"
)

// Kill modes: how the priority-0 cluster's backend fails.
const (
	modeRefuse    = "refuse"    // the node port is closed: connects are refused (RST)
	mode503       = "503"       // the backend answers every HTTP request, health checks included, with 503
	modeBlackhole = "blackhole" // the node port accepts nothing and answers nothing (SYNs are dropped)
)

// backend is one node port of one tenant cluster, played by the benchmark
// itself (instead of harness.Tenant.ServeNodePorts) so it can fail in every mode.
type backend struct {
	id       echo.Identity
	protocol string // "tcp" or "http"
	addr     string // node IP:NodePort

	srv  *echo.Server
	hole *blackhole
}

func (b *backend) start() error {
	s := echo.New(b.id)
	var err error
	switch b.protocol {
	case "tcp":
		_, err = s.ServeTCP(b.addr)
	case "http":
		_, err = s.ServeHTTP(b.addr, false)
	default:
		err = fmt.Errorf("unknown protocol %q", b.protocol)
	}
	if err != nil {
		_ = s.Close()
		return err
	}
	b.srv = s
	return nil
}

func (b *backend) kill(mode string) error {
	switch mode {
	case modeRefuse:
		return b.srv.Close()
	case mode503:
		b.srv.SetHTTPStatus(503)
		return nil
	case modeBlackhole:
		if err := b.srv.Close(); err != nil {
			return err
		}
		h, err := listenBlackhole(b.addr)
		if err != nil {
			return err
		}
		b.hole = h
		return nil
	}
	return fmt.Errorf("unknown kill mode %q", mode)
}

func (b *backend) restore(mode string) error {
	switch mode {
	case mode503:
		b.srv.SetHTTPStatus(0)
		return nil
	case modeBlackhole:
		b.hole.close()
		b.hole = nil
	}
	// A closed listener's port may take a moment to be free again (bounded).
	var err error
	for range 50 {
		if err = b.start(); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

func (b *backend) close() {
	if b.hole != nil {
		b.hole.close()
	}
	if b.srv != nil {
		_ = b.srv.Close()
	}
}

// blackhole is a listening socket with an accept backlog of 0 that is never
// accepted from, its one queue slot taken by the benchmark's own connection.
// Linux drops a SYN that arrives while the accept queue is full, so every other
// connect to the port stays unanswered until it times out: on loopback and
// without root this is what a node that black-holes traffic looks like to the
// proxy (no RST, no SYN-ACK, no bytes).
type blackhole struct {
	fd     int
	filler net.Conn
}

func listenBlackhole(addr string) (*blackhole, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*blackhole, error) {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("black hole on %s: %w", addr, err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return fail(err)
	}
	sa := &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	var bindErr error
	for range 50 { // the echo listener just closed; its port may be busy a moment
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
	// If the proxy's connect came first it holds the slot, and this one times out.
	filler, _ := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	return &blackhole{fd: fd, filler: filler}, nil
}

func (h *blackhole) close() {
	if h.filler != nil {
		_ = h.filler.Close()
	}
	_ = syscall.Close(h.fd)
}
