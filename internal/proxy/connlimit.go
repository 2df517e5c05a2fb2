package proxy

import (
	"net"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var downstreamRejected = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "fleetlb_proxy_downstream_connections_rejected_total",
	Help: "Downstream connections closed at accept because the proxy-wide connection cap (--max-connections) was reached.",
})

func init() { metrics.Registry.MustRegister(downstreamRejected) }

// connLimit counts open downstream connections against a proxy-wide cap.
type connLimit struct {
	max  int64 // 0: no cap
	open atomic.Int64
}

// admit counts c in, or reports false when the cap is reached (the caller
// closes c). The returned connection gives its slot back when closed.
func (l *connLimit) admit(c net.Conn) (net.Conn, bool) {
	if l == nil {
		return c, true
	}
	if n := l.open.Add(1); l.max > 0 && n > l.max {
		l.open.Add(-1)
		downstreamRejected.Inc()
		return c, false
	}
	return &countedConn{Conn: c, l: l}, true
}

// countedConn is an admitted downstream connection.
type countedConn struct {
	net.Conn
	l    *connLimit
	once sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}

// CloseWrite keeps TCP half-close working through the wrapper (tcp_proxy).
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}
