package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"github.com/fleetlb/fleetlb/internal/proxy/l4"
	"github.com/fleetlb/fleetlb/internal/proxy/xdsclient"
)

// boundListener is one Listener resource with its socket. For TCP-based listeners
// the socket is owned here and connections are handed to the current Server
// through a handoff, so a changed listener on the same address takes over the
// socket without a moment of refused connections, and the old Server drains.
type boundListener struct {
	name    string
	address netip.AddrPort
	udp     bool
	// What an HTTP listener references (RDS and SDS watch the union).
	routeNames, secretNames []string

	sock  net.Listener   // TCP
	pc    net.PacketConn // UDP
	limit *connLimit     // the proxy-wide cap on downstream connections

	mu      sync.Mutex
	server  Server          // TCP/HTTP
	udpSrv  *l4.UDPListener // UDP
	current *handoff        // where sock's connections go now (nil: to server's ServeConn)
	done    chan struct{}   // the accept loop ended
	retired bool
}

func (bl *boundListener) addr() net.Addr {
	if bl.udp {
		return bl.pc.LocalAddr()
	}
	return bl.sock.Addr()
}

func (bl *boundListener) active() int64 {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	if bl.udp {
		return bl.udpSrv.ActiveConnections()
	}
	if ac, ok := bl.server.(interface{ ActiveConnections() int64 }); ok {
		return ac.ActiveConnections()
	}
	return 0
}

// connServer is a Server that takes the accept loop's connections one by one
// (l4.TCPListener): no handoff and no goroutine of its own while idle. ServeConn
// returns false, leaving the connection open, once the server is closed.
type connServer interface {
	ServeConn(c net.Conn) bool
}

// handoff is a net.Listener fed by the socket's accept loop.
type handoff struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newHandoff(addr net.Addr) *handoff {
	return &handoff{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (h *handoff) Accept() (net.Conn, error) {
	select {
	case c := <-h.conns:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

func (h *handoff) Close() error   { h.once.Do(func() { close(h.done) }); return nil }
func (h *handoff) Addr() net.Addr { return h.addr }

// acceptLoop hands every accepted connection to the current handoff.
func (bl *boundListener) acceptLoop() {
	defer close(bl.done)
	for {
		c, err := bl.sock.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // transient (e.g. ECONNABORTED); the socket stays bound
		}
		c, ok := bl.limit.admit(c)
		if !ok {
			c.Close()
			continue
		}
		// Bounded: each retry follows a swap, and swaps happen once per update.
		for {
			bl.mu.Lock()
			h, srv := bl.current, bl.server
			bl.mu.Unlock()
			if h == nil {
				if srv.(connServer).ServeConn(c) {
					break
				}
				bl.mu.Lock()
				swapped := bl.server != srv
				bl.mu.Unlock()
				if swapped {
					continue
				}
				c.Close() // unbinding
				break
			}
			select {
			case h.conns <- c:
			case <-h.done:
				bl.mu.Lock()
				swapped := bl.current != h
				bl.mu.Unlock()
				if swapped {
					continue
				}
				c.Close() // unbinding
			}
			break
		}
	}
}

// start serves srv on the socket (replacing what served it before) and returns the
// previous server, which the caller drains.
func (bl *boundListener) start(srv Server) Server {
	var h *handoff
	if _, direct := srv.(connServer); !direct {
		h = newHandoff(bl.sock.Addr())
	}
	bl.mu.Lock()
	old, oldH := bl.server, bl.current
	bl.server, bl.current = srv, h
	bl.mu.Unlock()
	if h != nil {
		go srv.Serve(h)
	}
	if oldH != nil {
		oldH.Close()
	}
	return old
}

// unbind closes the socket; servers are drained by the caller.
func (bl *boundListener) unbind() {
	if bl.udp {
		return // the UDP socket belongs to its UDPListener; Close releases it
	}
	bl.sock.Close()
	<-bl.done
	bl.mu.Lock()
	if bl.current != nil {
		bl.current.Close()
	}
	bl.mu.Unlock()
}

// drainAsync lets srv's connections finish (bounded by DrainTimeout) in the background.
func (p *Proxy) drainAsync(bl *boundListener) {
	bl.mu.Lock()
	srv, udp := bl.server, bl.udpSrv
	bl.mu.Unlock()
	if udp != nil {
		udp.Close()
		return
	}
	p.drainServer(srv)
}

func (p *Proxy) drainServer(srv Server) {
	if srv == nil {
		return
	}
	p.drains.Add(1)
	go func() {
		defer p.drains.Done()
		if s, ok := srv.(interface{ Shutdown(context.Context) error }); ok {
			ctx, cancel := context.WithTimeout(context.Background(), p.opts.DrainTimeout)
			defer cancel()
			s.Shutdown(ctx)
			return
		}
		srv.Close() // l7's Close is itself graceful and bounded
	}()
}

// listenerPlan is one validated listener of an LDS update.
type listenerPlan struct {
	name                    string
	address                 netip.AddrPort
	udp                     bool
	routeNames, secretNames []string
	build                   func() (Server, *l4.UDPListener, error)
}

// addressKey is what two listeners may not share (port 0 excepted: each binds its own).
func addressKey(udp bool, a netip.AddrPort) string {
	if a.Port() == 0 {
		return ""
	}
	return fmt.Sprintf("%v/%s", udp, a)
}

func (p *Proxy) planListener(l *listenerv3.Listener) (*listenerPlan, error) {
	addr, err := l4.Address(l)
	if err != nil {
		return nil, err
	}
	pl := &listenerPlan{name: l.GetName(), address: addr, udp: l4.IsUDPListener(l)}
	log := p.log.WithName("listener").WithValues("listener", l.GetName())
	switch {
	case pl.udp:
		if err := l4.ValidateListener(l); err != nil {
			return nil, err
		}
		pl.build = func() (Server, *l4.UDPListener, error) {
			u, err := l4.NewUDPListener(l, p.opts.Clusters, log)
			return nil, u, err
		}
	case p.opts.HTTP != nil && p.opts.HTTP.IsHTTPListener(l):
		// NewListener validates; build it now so an invalid one is NACKed before
		// anything changes.
		srv, err := p.opts.HTTP.NewListener(l, log)
		if err != nil {
			return nil, err
		}
		pl.routeNames, pl.secretNames = p.opts.HTTP.RouteConfigNames(l), p.opts.HTTP.SecretNames(l)
		pl.build = func() (Server, *l4.UDPListener, error) { return srv, nil, nil }
	default:
		if err := l4.ValidateListener(l); err != nil {
			return nil, err
		}
		pl.build = func() (Server, *l4.UDPListener, error) {
			t, err := l4.NewTCPListener(l, p.opts.Clusters, log)
			return t, nil, err
		}
	}
	return pl, nil
}

// applyListeners validates the changed listeners, then binds new sockets before
// touching running listeners, so a NACK (or a failed bind) leaves everything as it
// was. Listeners not named are not touched; a changed one keeps its socket when
// the address is unchanged; connections of other listeners are never affected.
func (p *Proxy) applyListeners(names []string, res map[string]proto.Message, removed []string) error {
	plans := map[string]*listenerPlan{}
	for _, n := range names {
		l, ok := res[n].(*listenerv3.Listener)
		if !ok {
			return fmt.Errorf("resource %q is not a Listener", n)
		}
		pl, err := p.planListener(l)
		if err != nil {
			return err
		}
		plans[n] = pl
	}
	// No two listeners of the resulting set on one address: a changed one may
	// not take an address another keeps (the index of bound addresses, not a
	// walk over every listener) nor one another changed listener takes.
	gone := map[string]bool{}
	for _, n := range removed {
		gone[n] = true
	}
	seen := map[string]string{}
	for _, n := range names {
		k := addressKey(plans[n].udp, plans[n].address)
		if k == "" {
			continue
		}
		if other, dup := seen[k]; dup {
			return fmt.Errorf("listener %q: address is already used by listener %q", n, other)
		}
		seen[k] = n
		p.mu.Lock()
		holder, bound := p.byAddress[k]
		p.mu.Unlock()
		if bound && holder != n && plans[holder] == nil && !gone[holder] {
			return fmt.Errorf("listener %q: address is already used by listener %q", n, holder)
		}
	}

	// Build servers and bind the sockets that do not exist yet.
	type change struct {
		pl   *listenerPlan
		srv  Server
		udp  *l4.UDPListener
		bl   *boundListener // new socket, or nil when an existing one is reused
		reus *boundListener
	}
	var changes []*change
	rollback := func() {
		for _, c := range changes {
			if c.bl != nil {
				if c.bl.sock != nil {
					c.bl.sock.Close()
				}
				if c.bl.pc != nil {
					c.bl.pc.Close()
				}
			}
			if c.srv != nil {
				c.srv.Close()
			}
		}
	}
	for _, n := range names {
		pl := plans[n]
		srv, udp, err := pl.build()
		if err != nil {
			rollback()
			return err
		}
		c := &change{pl: pl, srv: srv, udp: udp}
		changes = append(changes, c)
		p.mu.Lock()
		old := p.listeners[n]
		p.mu.Unlock()
		if old != nil && !old.udp && !pl.udp && old.address == pl.address {
			c.reus = old
			continue
		}
		bl := &boundListener{name: n, address: pl.address, udp: pl.udp, routeNames: pl.routeNames, secretNames: pl.secretNames,
			done: make(chan struct{}), limit: &p.downstream}
		if old != nil && old.address == pl.address {
			// Same address, different protocol family of socket: the old one must go first.
			p.retire(old)
		}
		if k := addressKey(pl.udp, pl.address); k != "" {
			// A listener this update removes gives its address to this one
			// (an address released and handed out again): it goes first.
			p.mu.Lock()
			var giver *boundListener
			if holder, bound := p.byAddress[k]; bound && holder != n && gone[holder] {
				giver = p.listeners[holder]
			}
			p.mu.Unlock()
			if giver != nil {
				p.retire(giver)
			}
		}
		var lerr error
		if pl.udp {
			bl.pc, lerr = net.ListenPacket("udp", pl.address.String())
		} else {
			bl.sock, lerr = net.Listen("tcp", pl.address.String())
		}
		if lerr != nil {
			rollback()
			return fmt.Errorf("listener %q: bind %s: %v", n, pl.address, lerr)
		}
		c.bl = bl
	}

	// Commit: start new and changed listeners, then retire removed ones. RDS
	// and SDS follow the references of the listeners that changed.
	var routesAdded, routesDropped, secretsAdded, secretsDropped []string
	reference := func(bl *boundListener) {
		routesAdded = append(routesAdded, bl.routeNames...)
		secretsAdded = append(secretsAdded, bl.secretNames...)
	}
	unreference := func(bl *boundListener) {
		routesDropped = append(routesDropped, bl.routeNames...)
		secretsDropped = append(secretsDropped, bl.secretNames...)
	}
	for _, c := range changes {
		n := c.pl.name
		p.mu.Lock()
		old := p.listeners[n]
		p.mu.Unlock()
		if c.reus != nil {
			prev := c.reus.start(c.srv)
			p.mu.Lock()
			unreference(c.reus)
			c.reus.routeNames, c.reus.secretNames = c.pl.routeNames, c.pl.secretNames
			reference(c.reus)
			p.mu.Unlock()
			p.drainServer(prev)
			continue
		}
		bl := c.bl
		if bl.udp {
			bl.udpSrv = c.udp
			go c.udp.Serve(bl.pc)
		} else {
			// The server must be in place before the first Accept: a client
			// that connects at once would otherwise find no handoff.
			bl.start(c.srv)
			go bl.acceptLoop()
		}
		p.mu.Lock()
		p.listeners[n] = bl
		if old != nil {
			unreference(old)
			if k := addressKey(old.udp, old.address); k != "" && p.byAddress[k] == n {
				delete(p.byAddress, k)
			}
		}
		reference(bl)
		if k := addressKey(bl.udp, bl.address); k != "" {
			p.byAddress[k] = n
		}
		p.mu.Unlock()
		if old != nil && old != bl {
			p.retire(old)
		}
		p.log.Info("listener serving", "listener", n, "address", bl.addr().String())
	}
	p.mu.Lock()
	var retired []*boundListener
	for _, n := range removed {
		if bl := p.listeners[n]; bl != nil {
			retired = append(retired, bl)
			delete(p.listeners, n)
			unreference(bl)
			if k := addressKey(bl.udp, bl.address); k != "" && p.byAddress[k] == n {
				delete(p.byAddress, k)
			}
		}
	}
	p.mu.Unlock()
	for _, bl := range retired {
		p.log.Info("listener removed", "listener", bl.name)
		p.retire(bl)
	}
	if p.opts.HTTP != nil {
		p.client.WatchChanges(xdsclient.RouteType, routesAdded, routesDropped)
		p.client.WatchChanges(xdsclient.SecretType, secretsAdded, secretsDropped)
	}
	return nil
}

// retire unbinds a listener and drains its server; idempotent per listener.
func (p *Proxy) retire(bl *boundListener) {
	bl.mu.Lock()
	retired := bl.retired
	bl.retired = true
	bl.mu.Unlock()
	if retired {
		return
	}
	bl.unbind()
	p.drainAsync(bl)
}
