package snapshot

import (
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

func TestNodesWithinLimits(t *testing.T) {
	nodes := &v1.TenantNodes{}
	for i := 5; i >= 1; i-- { // unsorted on purpose
		nodes.Spec.Nodes = append(nodes.Spec.Nodes, v1.TenantNode{Name: fmt.Sprintf("n%d", i),
			Addresses: []v1.IPAddress{v1.IPAddress(fmt.Sprintf("127.0.1.%d", i)), v1.IPAddress(fmt.Sprintf("127.0.2.%d", i))}})
	}
	names := func(n *v1.TenantNodes) (out []string) {
		for _, x := range n.Spec.Nodes {
			out = append(out, fmt.Sprintf("%s:%d", x.Name, len(x.Addresses)))
		}
		return out
	}
	cases := []struct {
		name             string
		limits           v1.TenantLimits
		want, refusedHas string
	}{
		{"defaults", v1.TenantLimits{}, "[n5:2 n4:2 n3:2 n2:2 n1:2]", ""},
		{"max nodes", v1.TenantLimits{MaxNodes: ptr.To(int32(3))}, "[n1:2 n2:2 n3:2]", "2 nodes over the tenant's limit maxNodes=3"},
		{"max endpoints", v1.TenantLimits{MaxEndpointsPerBackend: ptr.To(int32(3))}, "[n1:2 n2:1]", "7 node addresses over the tenant's limit maxEndpointsPerBackend=3"},
		{"both", v1.TenantLimits{MaxNodes: ptr.To(int32(2)), MaxEndpointsPerBackend: ptr.To(int32(3))}, "[n1:2 n2:1]", "maxNodes=2 and 1 addresses over maxEndpointsPerBackend=3"},
	}
	for _, c := range cases {
		kept, refused := NodesWithinLimits(&v1.Tenant{Spec: v1.TenantSpec{Limits: c.limits}}, nodes)
		if got := fmt.Sprint(names(kept)); got != c.want {
			t.Errorf("%s: kept %s, want %s", c.name, got, c.want)
		}
		if (c.refusedHas == "") != (refused == "") || !strings.Contains(refused, c.refusedHas) {
			t.Errorf("%s: refused %q, want it to contain %q", c.name, refused, c.refusedHas)
		}
	}
	if len(nodes.Spec.Nodes) != 5 || len(nodes.Spec.Nodes[0].Addresses) != 2 {
		t.Fatal("the input was changed")
	}
}

// A node-limit refusal is a Warning event on the TenantNodes once per change.
func TestNodeLimitToldOnce(t *testing.T) {
	rec := events.NewFakeRecorder(10)
	b := &Builder{Recorder: rec}
	nodes := &v1.TenantNodes{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant-a", Name: v1.TenantNodesName}}
	b.tellNodeLimit(nodes, "2 nodes over the tenant's limit maxNodes=3 get no traffic (the first by name are served)")
	b.tellNodeLimit(nodes, "2 nodes over the tenant's limit maxNodes=3 get no traffic (the first by name are served)")
	b.tellNodeLimit(nodes, "")
	b.tellNodeLimit(nodes, "1 nodes over the tenant's limit maxNodes=3 get no traffic (the first by name are served)")
	close(rec.Events)
	var got []string
	for e := range rec.Events {
		got = append(got, e)
	}
	if len(got) != 2 || !strings.Contains(got[0], "Warning LimitExceeded 2 nodes") || !strings.Contains(got[1], "1 nodes") {
		t.Fatalf("events %q, want the two refusals once each", got)
	}
}
