package l4

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/go-logr/logr"
)

// maxUDPSessions bounds the session table (Envoy's max_sessions defaults to 1024…
// per worker; one table here).
const maxUDPSessions = 8192

// UDPListener serves one udp_proxy listener: every client address gets a session
// with its own upstream socket, so replies go back to the right client and every
// datagram of a session goes to the same upstream host (session affinity).
type UDPListener struct {
	name string
	cfg  *udpConfig
	up   Upstreams
	log  logr.Logger

	mu       sync.Mutex
	pc       net.PacketConn
	sessions map[netip.AddrPort]*udpSession
	closed   bool
	wg       sync.WaitGroup
}

// NewUDPListener validates l and returns a listener ready to Serve.
func NewUDPListener(l *listenerv3.Listener, up Upstreams, log logr.Logger) (*UDPListener, error) {
	cfg, err := parseUDP(l)
	if err != nil {
		return nil, err
	}
	return &UDPListener{name: l.GetName(), cfg: cfg, up: up, log: log.WithValues("listener", l.GetName()),
		sessions: map[netip.AddrPort]*udpSession{}}, nil
}

// ActiveConnections is the number of live UDP sessions.
func (u *UDPListener) ActiveConnections() int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return int64(len(u.sessions))
}

type udpSession struct {
	conn     *net.UDPConn // connected to the upstream host
	upstream string
	last     atomic.Int64
	release  func() // gives the circuit breaker's slot back
}

// Serve reads datagrams from pc until Close.
func (u *UDPListener) Serve(pc net.PacketConn) error {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return nil
	}
	u.pc = pc
	u.mu.Unlock()
	buf := make([]byte, 64*1024)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			u.mu.Lock()
			closed := u.closed
			u.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			u.log.Error(err, "read")
			continue
		}
		src, err := netip.ParseAddrPort(addr.String())
		if err != nil {
			continue
		}
		if u.cfg.allow != nil && !u.cfg.allow.Allowed(src.Addr().Unmap()) {
			continue // outside the matcher's source ranges: dropped, as by Envoy
		}
		s := u.session(pc, src, addr)
		if s == nil {
			continue
		}
		s.last.Store(time.Now().UnixNano())
		if _, err := s.conn.Write(buf[:n]); err != nil {
			u.up.Report(u.cfg.cluster, s.upstream, false)
		}
	}
}

// session finds or creates the session of src; nil when no upstream is available.
func (u *UDPListener) session(pc net.PacketConn, src netip.AddrPort, addr net.Addr) *udpSession {
	u.mu.Lock()
	defer u.mu.Unlock()
	if s, ok := u.sessions[src]; ok {
		return s
	}
	if u.closed || len(u.sessions) >= maxUDPSessions {
		return nil
	}
	host, err := u.up.Pick(u.cfg.cluster, src.Addr().Unmap().AsSlice())
	if err != nil {
		u.log.V(1).Info("no upstream", "cluster", u.cfg.cluster, "error", err.Error())
		return nil
	}
	release, err := u.up.StartSession(u.cfg.cluster)
	if err != nil {
		u.log.V(1).Info("no session", "cluster", u.cfg.cluster, "error", err.Error())
		return nil // the datagram is dropped, as by Envoy on overflow
	}
	raddr, err := net.ResolveUDPAddr("udp", host)
	if err != nil {
		release()
		return nil
	}
	conn, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		release()
		u.up.Report(u.cfg.cluster, host, false)
		return nil
	}
	s := &udpSession{conn: conn, upstream: host, release: release}
	s.last.Store(time.Now().UnixNano())
	u.sessions[src] = s
	u.wg.Add(1)
	go u.replies(pc, src, addr, s)
	return s
}

// replies forwards upstream datagrams back to the client until the session has been
// idle for idle_timeout (in both directions) or the listener closes.
func (u *UDPListener) replies(pc net.PacketConn, src netip.AddrPort, addr net.Addr, s *udpSession) {
	defer func() {
		u.mu.Lock()
		delete(u.sessions, src)
		u.mu.Unlock()
		s.conn.Close()
		s.release()
		u.wg.Done()
	}()
	buf := make([]byte, 64*1024)
	for {
		var deadline time.Time // zero: idle_timeout 0 disables it
		if u.cfg.idle > 0 {
			deadline = time.Unix(0, s.last.Load()).Add(u.cfg.idle)
		}
		s.conn.SetReadDeadline(deadline)
		n, err := s.conn.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Traffic from the client may have moved the deadline on.
				if time.Since(time.Unix(0, s.last.Load())) < u.cfg.idle {
					continue
				}
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// ICMP port unreachable surfaces as ECONNREFUSED on a connected socket.
			u.up.Report(u.cfg.cluster, s.upstream, false)
			continue
		}
		s.last.Store(time.Now().UnixNano())
		if _, err := pc.WriteTo(buf[:n], addr); err != nil && errors.Is(err, net.ErrClosed) {
			return
		}
	}
}

// Close stops serving and ends every session.
func (u *UDPListener) Close() error {
	u.mu.Lock()
	u.closed = true
	pc := u.pc
	for _, s := range u.sessions {
		s.conn.Close()
	}
	u.mu.Unlock()
	if pc != nil {
		pc.Close()
	}
	u.wg.Wait()
	return nil
}
