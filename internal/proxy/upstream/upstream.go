// Package upstream is fleetlb-proxy's cluster manager: clusters from CDS,
// endpoints from EDS, and host selection with Envoy's semantics for
// priorities (overprovisioning factor, spill-over as health drops, panic
// mode), locality weights, weighted round robin and hashing; active TCP/HTTP
// health checks; passive outlier detection; and upstream connections with
// connect timeout, TCP keepalive and the PROXY protocol.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/go-logr/logr"
)

// Errors callers turn into 503s or closed connections.
var (
	ErrNoCluster     = errors.New("no such cluster")
	ErrNoHealthyHost = errors.New("no healthy upstream")
)

const (
	defaultOverprovisioning = 140 // percent, Envoy's default
	panicThreshold          = 50  // percent, Envoy's default healthy_panic_threshold
)

// Manager holds every cluster and its hosts. It keeps no xDS resource: a
// cluster keeps what it was compiled to, a load assignment its endpoints.
type Manager struct {
	log       logr.Logger
	mu        sync.RWMutex
	cls       map[string]*cluster
	endpoints map[string]*endpoints // by cluster name, also before the cluster exists
}

// NewManager returns an empty cluster manager.
func NewManager(log logr.Logger) *Manager {
	return &Manager{log: log, cls: map[string]*cluster{}, endpoints: map[string]*endpoints{}}
}

// UpdateClusters installs the changed clusters and drops the removed ones. A
// changed cluster starts afresh (its hosts from the cluster's current load
// assignment, pending their first health check); clusters not named keep
// their hosts and health state; removed ones stop their health checks.
func (m *Manager) UpdateClusters(changed []*clusterv3.Cluster, removed []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range changed {
		nc := newCluster(c, m.log)
		if old := m.cls[c.Name]; old != nil {
			old.stop()
		}
		m.cls[c.Name] = nc
		if eps := m.endpoints[c.Name]; eps != nil {
			nc.setHosts(eps)
		}
	}
	for _, name := range removed {
		if c := m.cls[name]; c != nil {
			c.stop()
			delete(m.cls, name)
		}
	}
}

// UpdateLoadAssignments replaces the endpoints of the changed load assignments'
// clusters and empties those of the removed ones. Hosts that stay keep their
// health state.
func (m *Manager) UpdateLoadAssignments(changed []*endpointv3.ClusterLoadAssignment, removed []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, cla := range changed {
		eps := compileEndpoints(cla)
		m.endpoints[cla.ClusterName] = eps
		if c := m.cls[cla.ClusterName]; c != nil {
			c.setHosts(eps)
		}
	}
	for _, name := range removed {
		delete(m.endpoints, name)
		if c := m.cls[name]; c != nil {
			c.setHosts(&endpoints{overprov: defaultOverprovisioning})
		}
	}
}

// Close stops every health checker.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, c := range m.cls {
		c.stop()
		delete(m.cls, name)
	}
}

func (m *Manager) get(name string) (*cluster, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	c := m.cls[name]
	if c == nil {
		return nil, fmt.Errorf("%w %q", ErrNoCluster, name)
	}
	return c, nil
}

// Pick chooses a host ("ip:port") of the cluster.
func (m *Manager) Pick(cluster string, hashKey []byte) (string, error) {
	a, err := m.PickFor(cluster, hashKey, nil)
	return a.Addr, err
}

// PickFor chooses a host for an attempt of a request; sel (nil for a first
// attempt) carries the retry host predicate and retry priority.
func (m *Manager) PickFor(cluster string, hashKey []byte, sel *Selection) (Attempt, error) {
	c, err := m.get(cluster)
	if err != nil {
		return Attempt{}, err
	}
	h, err := c.pick(hashKey, sel)
	if err != nil {
		return Attempt{}, err
	}
	return Attempt{Addr: h.addr, Priority: h.priority}, nil
}

// Report feeds passive outlier detection with a local-origin result: false
// is a connect failure, reset or timeout, true a connection made with
// nothing after it to report (tcp_proxy).
func (m *Manager) Report(cluster, addr string, success bool) {
	if c, err := m.get(cluster); err == nil {
		o := LocalFailure
		if success {
			o = LocalSuccess
		}
		c.report(addr, o)
	}
}

// ReportStatus feeds outlier detection with an HTTP response's status.
func (m *Manager) ReportStatus(cluster, addr string, status int) {
	if c, err := m.get(cluster); err == nil {
		c.report(addr, Outcome(status))
	}
}

// StartRetry counts a retry against the cluster's retry budget (or
// max_retries); ErrOverflow when none is left, else done, to call when the
// retry ends.
func (m *Manager) StartRetry(cluster string) (done func(), err error) {
	c, err := m.get(cluster)
	if err != nil {
		return nil, err
	}
	return c.breaker.startRetry()
}

// Transport is the cluster's HTTP connection pool (HTTP/1.1 or h2c). Requests
// through it must carry WithRequest(ctx) so that a wait for a connection slot
// ends with the request.
func (m *Manager) Transport(cluster string) (http.RoundTripper, error) {
	c, err := m.get(cluster)
	if err != nil {
		return nil, err
	}
	if t := c.httpTransport(); t != nil {
		return t, nil
	}
	return nil, fmt.Errorf("%w %q", ErrNoCluster, cluster) // removed while the request started
}

// StartRequest counts an HTTP request against the cluster's max_requests; it
// returns ErrOverflow when the breaker is full, else done, to call when the
// request ends.
func (m *Manager) StartRequest(cluster string) (done func(), err error) {
	c, err := m.get(cluster)
	if err != nil {
		return nil, err
	}
	return c.breaker.startRequest()
}

// DialTCP connects to a host of the cluster, with the cluster's connect
// timeout and TCP keepalive, and writes the PROXY protocol header first when
// the cluster asks for it. Like Envoy's tcp_proxy by default, it makes one
// attempt; a failed connect counts against the host for outlier detection.
func (m *Manager) DialTCP(ctx context.Context, cluster string, src, dst net.Addr, hashKey []byte) (net.Conn, error) {
	c, err := m.get(cluster)
	if err != nil {
		return nil, err
	}
	h, err := c.pick(hashKey, nil)
	if err != nil {
		return nil, err
	}
	c.traffic.Store(true)
	// tcp_proxy does not queue: past max_connections the connection is refused.
	release, ok := c.breaker.tryConn()
	if !ok {
		return nil, fmt.Errorf("cluster %s: %w", cluster, ErrOverflow)
	}
	d := net.Dialer{Timeout: c.connectTimeout, KeepAliveConfig: c.keepalive}
	raw, err := d.DialContext(ctx, "tcp", h.addr)
	if err != nil {
		release()
		c.report(h.addr, LocalFailure)
		return nil, fmt.Errorf("connecting to %s of cluster %s: %w", h.addr, cluster, err)
	}
	conn := net.Conn(&releasingConn{Conn: raw, release: release})
	if c.proxyProtocol != 0 {
		if _, err := conn.Write(proxyHeader(c.proxyProtocol, src, dst)); err != nil {
			conn.Close()
			return nil, fmt.Errorf("writing the PROXY header to %s: %w", h.addr, err)
		}
	}
	c.report(h.addr, LocalSuccess)
	return conn, nil
}

// StartSession counts a UDP session against the cluster's max_connections
// (Envoy's udp_proxy limits sessions by it); ErrOverflow when full.
func (m *Manager) StartSession(cluster string) (release func(), err error) {
	c, err := m.get(cluster)
	if err != nil {
		return nil, err
	}
	release, ok := c.breaker.tryConn()
	if !ok {
		return nil, fmt.Errorf("cluster %s: %w", cluster, ErrOverflow)
	}
	return release, nil
}

// HealthyHosts lists a cluster's hosts that pass health checks and are not ejected (for tests and status).
func (m *Manager) HealthyHosts(cluster string) []string {
	c, err := m.get(cluster)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweepLocked(time.Now())
	var out []string
	for _, h := range c.hosts {
		if h.available() {
			out = append(out, h.addr)
		}
	}
	return out
}

func hash64(parts ...[]byte) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write(p)
		h.Write([]byte{0})
	}
	return h.Sum64()
}
