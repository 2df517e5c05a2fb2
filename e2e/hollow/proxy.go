package hollow

import (
	"errors"
	"net"
	"sync"

	"github.com/go-logr/logr"
)

// app is one server of a hollow container: it serves the connections handed
// to l until the returned stop is called.
type app func(l *connListener) (stop func())

// connListener is a container port: a net.Listener whose connections are the
// ones the node-port proxy accepted and sent to this Pod.
type connListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// deliver hands c to the server on this port; false once the port is closed.
func (l *connListener) deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

// runningPod is a hollow Pod's containers: the servers on its ports.
type runningPod struct {
	name  string
	ports map[int32]*connListener
	stops []func()
}

func startPod(name string, ip net.IP, apps map[int32]app) *runningPod {
	p := &runningPod{name: name, ports: map[int32]*connListener{}}
	for port, a := range apps {
		l := newConnListener(&net.TCPAddr{IP: ip, Port: int(port)})
		p.ports[port] = l
		p.stops = append(p.stops, a(l))
	}
	return p
}

// deliver hands c to the server on port; false if nothing listens there.
func (p *runningPod) deliver(port int32, c net.Conn) bool {
	l := p.ports[port]
	return l != nil && l.deliver(c)
}

func (p *runningPod) stop() {
	for _, l := range p.ports {
		_ = l.Close()
	}
	for _, s := range p.stops {
		s()
	}
}

// endpoint is where a node port sends a connection: a Pod and its port.
type endpoint struct {
	pod  *runningPod
	port int32
}

// nodePort is kube-proxy for one node address and node port: every
// connection goes to the next endpoint of the Service port, round-robin.
// Without endpoints (or when the endpoint's port serves nothing) the
// connection is closed at once, as a rejected one would be.
type nodePort struct {
	ln      net.Listener
	service string // namespace/name:port, for logs and to notice a change of owner
	log     logr.Logger

	mu        sync.Mutex
	endpoints []endpoint
	next      int
	done      chan struct{}
}

func listenNodePort(addr, service string, log logr.Logger) (*nodePort, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	np := &nodePort{ln: ln, service: service, log: log, done: make(chan struct{})}
	go np.serve()
	return np, nil
}

func (np *nodePort) setEndpoints(eps []endpoint) {
	np.mu.Lock()
	np.endpoints = eps
	np.mu.Unlock()
}

func (np *nodePort) pick() (endpoint, bool) {
	np.mu.Lock()
	defer np.mu.Unlock()
	if len(np.endpoints) == 0 {
		return endpoint{}, false
	}
	e := np.endpoints[np.next%len(np.endpoints)]
	np.next++
	return e, true
}

func (np *nodePort) serve() {
	defer close(np.done)
	for {
		c, err := np.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				np.log.Error(err, "node port stopped accepting", "address", np.ln.Addr().String(), "service", np.service)
			}
			return
		}
		e, ok := np.pick()
		if !ok || !e.pod.deliver(e.port, c) {
			_ = c.Close()
		}
	}
}

func (np *nodePort) close() {
	_ = np.ln.Close()
	<-np.done
}
