package proxy

import (
	"bufio"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMaxConnectionsCapsAllListeners: the proxy-wide cap counts connections of
// every listener; past it a new connection is closed at once, and a slot
// frees when a connection ends.
func TestMaxConnectionsCapsAllListeners(t *testing.T) {
	snapCache, xdsAddr, _ := startXDS(t)
	a1, b1 := startEcho(t, "a1", false), startEcho(t, "b1", false)
	f := &fleet{
		listeners: map[string]*listenerv3.Listener{
			"vip-a": tcpListener(t, "vip-a", "svc-a", time.Hour),
			"vip-b": tcpListener(t, "vip-b", "svc-b", time.Hour),
		},
		clusters: map[string]*clusterv3.Cluster{
			"svc-a": edsCluster("svc-a", clusterv3.Cluster_ROUND_ROBIN),
			"svc-b": edsCluster("svc-b", clusterv3.Cluster_ROUND_ROBIN),
		},
		endpoints: map[string]*endpointv3.ClusterLoadAssignment{"svc-a": cla("svc-a", a1), "svc-b": cla("svc-b", b1)},
	}
	f.publish(t, snapCache)
	cm := &clusterStandIn{}
	p, err := New(dialGRPC(t, xdsAddr), Options{
		Node: &corev3.Node{Id: nodeID, Cluster: "default"}, Clusters: cm, ValidateCluster: validateCluster,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, MaxConnections: 2,
	}, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	runProxy(t, p)
	waitFor(t, "endpoints", func() bool { return cm.has("svc-a") && cm.has("svc-b") })

	rejectedBefore := testutil.ToFloat64(downstreamRejected)
	first := dialThrough(t, p, "vip-a")
	dialThrough(t, p, "vip-b")
	third, err := net.Dial("tcp", p.ListenerAddr("vip-b").String())
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	third.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(third).ReadString('\n')
	var ne net.Error
	if line != "" || err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("third connection over a cap of 2: got %q, %v; want it closed", line, err)
	}

	if got := testutil.ToFloat64(downstreamRejected) - rejectedBefore; got != 1 {
		t.Errorf("fleetlb_proxy_downstream_connections_rejected_total rose by %v, want 1", got)
	}

	first.c.Close()
	waitFor(t, "a slot after a connection ended", func() bool {
		c, err := net.Dial("tcp", p.ListenerAddr("vip-a").String())
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return strings.HasPrefix(line, "cluster=")
	})
}
