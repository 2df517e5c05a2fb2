package main

import (
	"fmt"
	"time"

	"github.com/fleetlb/fleetlb/internal/blackhole"
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
	protocol string // "tcp", "http" or "grpc"
	addr     string // node IP:NodePort

	srv  *echo.Server
	hole *blackhole.Hole
}

func (b *backend) start() error {
	s := echo.New(b.id)
	var err error
	switch b.protocol {
	case "tcp":
		_, err = s.ServeTCP(b.addr)
	case "http":
		_, err = s.ServeHTTP(b.addr, false)
	case "grpc":
		_, err = s.ServeGRPC(b.addr)
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
		h, err := blackhole.Listen(b.addr)
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
		b.hole.Close()
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
		b.hole.Close()
	}
	if b.srv != nil {
		_ = b.srv.Close()
	}
}
