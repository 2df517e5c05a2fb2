package snapshot

import (
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// lbFor is an admitted LoadBalancer of a tenant, created age seconds after epoch.
func lbFor(t *testing.T, tenantName, name, vip string, port int32, age int, src v1.ServiceSource) admittedLB {
	t.Helper()
	lb := &v1.LoadBalancer{
		ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-" + tenantName, Name: name, CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(age) * time.Second))},
		Spec:       v1.LoadBalancerSpec{Source: src, Ports: []v1.LoadBalancerPort{{Port: v1.PortNumber(port), Protocol: v1.ProtocolTCP, NodePort: 30080}}},
		Status:     v1.LoadBalancerStatus{Addresses: []v1.Address{{IP: v1.IPAddress(vip), IPMode: v1.IPModeProxy}}},
	}
	nodes := &v1.TenantNodes{Spec: v1.TenantNodesSpec{Cluster: tenantName, Nodes: []v1.TenantNode{{Name: "n1", Addresses: []v1.IPAddress{"127.0.1.1"}}}}}
	a, err := fromLoadBalancer(tenantName, lb, nodes)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Two LoadBalancers that claim the same spec.source (in one tenant or in two)
// used to give two Envoy clusters one name, so the fleet's translation failed
// and no tenant's change was served. Names now come from the management
// objects, which are unique.
func TestSameSourceDoesNotCollide(t *testing.T) {
	src := v1.ServiceSource{Cluster: "c", Namespace: "default", Name: "web", UID: "u"}
	lbs := []admittedLB{
		lbFor(t, "a", "one", "127.0.40.1", 80, 0, src),
		lbFor(t, "a", "two", "127.0.40.2", 80, 1, src),
		lbFor(t, "b", "one", "127.0.40.3", 80, 2, src),
	}
	f, err := assemble("default", nil, nil, nil, lbs)
	if err != nil {
		t.Fatalf("fleet does not translate: %v", err)
	}
	var names []string
	for _, b := range f.Backends {
		names = append(names, b.Name)
	}
	if want := []string{"a/one/tcp/80", "a/two/tcp/80", "b/one/tcp/80"}; !slices.Equal(names, want) {
		t.Fatalf("backends %v, want %v", names, want)
	}
}

// A conflict between objects that are each valid (two LoadBalancers on one
// VIP and port, which IPAM should never allow) leaves out the younger one;
// the older one and everyone else are still served.
func TestConflictExcludesTheYoungerObject(t *testing.T) {
	src := func(n string) v1.ServiceSource {
		return v1.ServiceSource{Cluster: "c", Namespace: "default", Name: n, UID: n}
	}
	older := lbFor(t, "a", "web", "127.0.40.1", 80, 0, src("web"))
	other := lbFor(t, "c", "db", "127.0.40.9", 5432, 1, src("db"))
	younger := lbFor(t, "b", "squat", "127.0.40.1", 80, 2, src("squat"))
	also := lbFor(t, "b", "late", "127.0.40.5", 443, 3, src("late")) // after the culprit: still served
	lbs := []admittedLB{younger, also, older, other}

	if _, err := assemble("default", nil, nil, nil, lbs); err == nil {
		t.Fatal("two services on one VIP and port translated: the test does not test a conflict")
	}
	f, excluded := resolveConflicts("default", nil, nil, nil, lbs)
	if len(excluded) != 1 || excluded[0] != client.Object(younger.lb) {
		t.Fatalf("excluded %v, want only the younger load balancer", excluded)
	}
	var got []string
	for _, s := range f.L4 {
		got = append(got, s.Ref.Namespace+"/"+s.Ref.Name)
	}
	slices.Sort(got)
	if want := []string{"tenant-a/web", "tenant-b/late", "tenant-c/db"}; !slices.Equal(got, want) {
		t.Fatalf("served %v, want %v", got, want)
	}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	if msg := conflictMessage(younger.lb, "default"); slices.ContainsFunc([]string{"tenant-a", "web", "a/"}, func(s string) bool { return strings.Contains(msg, s) }) {
		t.Fatalf("message %q names the other tenant's object", msg)
	}
}
