package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/testenv"
)

// One control plane for the package: starting one costs seconds.
var env *testenv.Env

const ns = "tenant-a"

func TestMain(m *testing.M) {
	var err error
	if env, err = testenv.New(testenv.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		if err := env.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

func lb(name string, mutate func(*v1.LoadBalancer)) client.Object {
	o := &v1.LoadBalancer{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.LoadBalancerSpec{
			Source: v1.ServiceSource{Cluster: "a", Namespace: "default", Name: "web", UID: "0c5e5d2a-1"},
			Ports:  []v1.LoadBalancerPort{{Name: "http", Port: 80, Protocol: v1.ProtocolTCP, NodePort: 30080}},
		},
	}
	if mutate != nil {
		mutate(o)
	}
	return o
}

func route(name string, mutate func(*v1.Route)) client.Object {
	o := &v1.Route{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.RouteSpec{
			Source:    v1.RouteSource{Kind: v1.SourceIngress, Cluster: "a", Namespace: "default", Name: "web", UID: "u-1", Generation: 1},
			Hostnames: []v1.Hostname{"web.team-a.example.com"},
			Rules: []v1.RouteRule{{
				Matches:  []v1.RouteMatch{{Path: &v1.PathMatch{Type: v1.PathPrefix, Value: "/"}}},
				Backends: []v1.RouteBackend{{NodePort: 30080}},
			}},
		},
	}
	if mutate != nil {
		mutate(o)
	}
	return o
}

func tenant(name string, mutate func(*v1.Tenant)) client.Object {
	o := &v1.Tenant{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1.TenantSpec{Group: "team-a", AddressPool: "pool", Hostnames: []v1.Hostname{"*.team-a.example.com"}},
	}
	if mutate != nil {
		mutate(o)
	}
	return o
}

func pool(name string, addrs ...v1.AddressRange) client.Object {
	return &v1.AddressPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.AddressPoolSpec{Addresses: addrs}}
}

func nodes(name string, mutate func(*v1.TenantNodes)) client.Object {
	o := &v1.TenantNodes{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       v1.TenantNodesSpec{Nodes: []v1.TenantNode{{Name: "n1", Addresses: []v1.IPAddress{"127.0.1.1"}, Zone: "z1"}}},
	}
	if mutate != nil {
		mutate(o)
	}
	return o
}

func TestCreateValidation(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name    string
		obj     client.Object
		wantErr string // "" means the object must be accepted
	}{
		// LoadBalancer
		{"lb valid", lb("lb-valid", nil), ""},
		{"lb valid udp, ranges, affinity, http check, global", lb("lb-full", func(o *v1.LoadBalancer) {
			o.Spec.Ports = append(o.Spec.Ports, v1.LoadBalancerPort{Port: 80, Protocol: v1.ProtocolUDP, NodePort: 30081})
			o.Spec.SourceRanges = []v1.CIDR{"127.0.0.0/8", "fd00::/64"}
			o.Spec.SessionAffinity = v1.SessionAffinityClientIP
			o.Spec.HealthCheck = &v1.HealthCheck{Type: v1.HealthCheckHTTP, Path: "/healthz", NodePort: ptr.To(v1.PortNumber(32000))}
			o.Spec.ProxyProtocol = v1.ProxyProtocolV2
			o.Spec.LoadBalancerIP = "127.0.10.5"
			o.Spec.Global = &v1.GlobalOptions{Name: "web", Strategy: v1.StrategyFailover, Priority: ptr.To(int32(1))}
		}), ""},
		{"lb port 0", lb("lb-port0", func(o *v1.LoadBalancer) { o.Spec.Ports[0].Port = 0 }), "should be greater than or equal to 1"},
		{"lb port 70000", lb("lb-port-big", func(o *v1.LoadBalancer) { o.Spec.Ports[0].Port = 70000 }), "should be less than or equal to 65535"},
		{"lb nodePort 0", lb("lb-nodeport0", func(o *v1.LoadBalancer) { o.Spec.Ports[0].NodePort = 0 }), "nodePort"},
		{"lb protocol SCTP", lb("lb-sctp", func(o *v1.LoadBalancer) { o.Spec.Ports[0].Protocol = "SCTP" }), `Unsupported value: "SCTP"`},
		{"lb duplicate port+protocol", lb("lb-dup", func(o *v1.LoadBalancer) {
			o.Spec.Ports = append(o.Spec.Ports, v1.LoadBalancerPort{Port: 80, Protocol: v1.ProtocolTCP, NodePort: 30090})
		}), "Duplicate value"},
		{"lb no ports", lb("lb-noports", func(o *v1.LoadBalancer) { o.Spec.Ports = nil }), "spec.ports"},
		{"gateway lb with listeners", lb("lb-gw", func(o *v1.LoadBalancer) {
			o.Spec.Source.Kind, o.Spec.Ports = v1.SourceGateway, nil
			o.Spec.Listeners = []v1.GatewayListener{{Name: "http", Port: 80, Protocol: v1.ListenerHTTP}, {Name: "tls", Port: 443, Protocol: v1.ListenerTLS, Hostname: "*.example.com"}}
		}), ""},
		{"gateway lb with ports", lb("lb-gw-ports", func(o *v1.LoadBalancer) { o.Spec.Source.Kind = v1.SourceGateway }), "spec.ports"},
		{"gateway lb global", lb("lb-gw-global", func(o *v1.LoadBalancer) {
			o.Spec.Source.Kind, o.Spec.Ports = v1.SourceGateway, nil
			o.Spec.Global = &v1.GlobalOptions{Name: "g"}
		}), "spec.global"},
		{"gateway listener bad name", lb("lb-gw-name", func(o *v1.LoadBalancer) {
			o.Spec.Source.Kind, o.Spec.Ports = v1.SourceGateway, nil
			o.Spec.Listeners = []v1.GatewayListener{{Name: "Bad_Name", Port: 80, Protocol: v1.ListenerHTTP}}
		}), "spec.listeners[0].name"},
		{"lb bad source range", lb("lb-badcidr", func(o *v1.LoadBalancer) { o.Spec.SourceRanges = []v1.CIDR{"10.0.0.1/40"} }), "must be a CIDR"},
		{"lb bad requested ip", lb("lb-badip", func(o *v1.LoadBalancer) { o.Spec.LoadBalancerIP = "10.0.0.300" }), "must be an IPv4 or IPv6 address"},
		{"lb http check without path", lb("lb-nopath", func(o *v1.LoadBalancer) { o.Spec.HealthCheck = &v1.HealthCheck{Type: v1.HealthCheckHTTP} }), "an HTTP health check needs a path"},
		{"lb health check every second", lb("lb-hc-1s", func(o *v1.LoadBalancer) {
			o.Spec.HealthCheck = &v1.HealthCheck{Type: v1.HealthCheckTCP, Interval: &metav1.Duration{Duration: time.Second}, Timeout: &metav1.Duration{Duration: 500 * time.Millisecond}}
		}), ""},
		{"lb health check every nanosecond", lb("lb-hc-1ns", func(o *v1.LoadBalancer) {
			o.Spec.HealthCheck = &v1.HealthCheck{Type: v1.HealthCheckTCP, Interval: &metav1.Duration{Duration: 1}}
		}), "health check interval must be at least 1s"},
		{"lb health check every 999ms", lb("lb-hc-999ms", func(o *v1.LoadBalancer) {
			o.Spec.HealthCheck = &v1.HealthCheck{Type: v1.HealthCheckTCP, Interval: &metav1.Duration{Duration: 999 * time.Millisecond}}
		}), "health check interval must be at least 1s"},
		{"lb health check timeout 0", lb("lb-hc-t0", func(o *v1.LoadBalancer) {
			o.Spec.HealthCheck = &v1.HealthCheck{Type: v1.HealthCheckTCP, Timeout: &metav1.Duration{}}
		}), "health check timeout must be more than 0s"},
		{"lb proxy protocol v3", lb("lb-pp3", func(o *v1.LoadBalancer) { o.Spec.ProxyProtocol = "v3" }), `Unsupported value: "v3"`},
		{"lb weight out of range", lb("lb-weight", func(o *v1.LoadBalancer) {
			o.Spec.Global = &v1.GlobalOptions{Strategy: v1.StrategyWeighted, Weight: ptr.To(int32(5000))}
		}), "should be less than or equal to 1000"},
		{"lb unknown strategy", lb("lb-strategy", func(o *v1.LoadBalancer) { o.Spec.Global = &v1.GlobalOptions{Strategy: "random"} }), `Unsupported value: "random"`},
		{"lb bad global name", lb("lb-gname", func(o *v1.LoadBalancer) { o.Spec.Global = &v1.GlobalOptions{Name: "Web_1"} }), "global name must be a DNS label"},
		{"lb missing source uid", lb("lb-nouid", func(o *v1.LoadBalancer) { o.Spec.Source.UID = "" }), "spec.source.uid"},
		// Route
		{"route valid", route("rt-valid", nil), ""},
		{"route valid full", route("rt-full", func(o *v1.Route) {
			o.Spec.Hostnames = append(o.Spec.Hostnames, "*.team-a.example.com")
			o.Spec.TLS = []v1.RouteTLS{{Hostnames: []v1.Hostname{"web.team-a.example.com"}, SecretName: "web-tls", Issuer: &v1.IssuerRef{Name: "letsencrypt"}}}
			o.Spec.Rules = append(o.Spec.Rules, v1.RouteRule{
				Matches: []v1.RouteMatch{{
					Path:        &v1.PathMatch{Type: v1.PathRegularExpression, Value: "^/api/v[0-9]+/.*"},
					Headers:     []v1.HeaderMatch{{Name: "X-Canary", Value: "yes"}},
					QueryParams: []v1.HeaderMatch{{Type: v1.MatchRegularExpression, Name: "debug", Value: "1|true"}},
					Method:      "POST",
				}},
				Backends: []v1.RouteBackend{{NodePort: 30080, Weight: ptr.To(int32(90))}, {NodePort: 30081, Weight: ptr.To(int32(10)), Protocol: v1.BackendGRPC}},
				Filters: []v1.RouteFilter{
					{Type: v1.FilterURLRewrite, URLRewrite: &v1.URLRewrite{Path: &v1.PathModifier{Type: v1.ReplacePrefixMatch, Value: "/"}}},
					{Type: v1.FilterRequestHeaderModifier, RequestHeaderModifier: &v1.HeaderModifier{Set: []v1.HTTPHeader{{Name: "X-Env", Value: "prod"}}, Remove: []string{"X-Debug"}}},
				},
				Timeouts: &v1.RouteTimeouts{Request: &metav1.Duration{Duration: 10e9}},
			}, v1.RouteRule{
				Filters: []v1.RouteFilter{{Type: v1.FilterRequestRedirect, RequestRedirect: &v1.RequestRedirect{Scheme: "https", StatusCode: 301}}},
			})
		}), ""},
		{"route uppercase hostname", route("rt-upper", func(o *v1.Route) { o.Spec.Hostnames = []v1.Hostname{"Web.Example.com"} }), "hostname must be a lower-case DNS name or a wildcard"},
		{"route bad wildcard", route("rt-wild", func(o *v1.Route) { o.Spec.Hostnames = []v1.Hostname{"*foo.example.com"} }), "hostname must be a lower-case DNS name or a wildcard"},
		{"route wildcard in the middle", route("rt-wild2", func(o *v1.Route) { o.Spec.Hostnames = []v1.Hostname{"a.*.example.com"} }), "hostname must be a lower-case DNS name or a wildcard"},
		{"route no hostnames", route("rt-nohost", func(o *v1.Route) { o.Spec.Hostnames = nil }), "spec.hostnames"},
		{"route on gateway listeners without hostnames", route("rt-gw-nohost", func(o *v1.Route) {
			o.Spec.Hostnames, o.Spec.Parents = nil, []v1.RouteParent{{LoadBalancer: "gateway.default.gw", Listeners: []string{"http"}}}
		}), ""},
		{"route on gateway listeners with tls", route("rt-gw-tls", func(o *v1.Route) {
			o.Spec.Parents = []v1.RouteParent{{LoadBalancer: "gateway.default.gw", Listeners: []string{"http"}}}
			o.Spec.TLS = []v1.RouteTLS{{Hostnames: o.Spec.Hostnames, SecretName: "s"}}
		}), "spec.tls"},
		{"route bad path type", route("rt-pathtype", func(o *v1.Route) { o.Spec.Rules[0].Matches[0].Path.Type = "Glob" }), `Unsupported value: "Glob"`},
		{"route relative path", route("rt-relpath", func(o *v1.Route) { o.Spec.Rules[0].Matches[0].Path.Value = "api" }), "an Exact or PathPrefix path must start with /"},
		{"route redirect 305", route("rt-305", func(o *v1.Route) {
			o.Spec.Rules[0].Filters = []v1.RouteFilter{{Type: v1.FilterRequestRedirect, RequestRedirect: &v1.RequestRedirect{StatusCode: 305}}}
		}), "Unsupported value: 305"},
		{"route filter type without its field", route("rt-filter", func(o *v1.Route) {
			o.Spec.Rules[0].Filters = []v1.RouteFilter{{Type: v1.FilterURLRewrite}}
		}), "set exactly the field that matches the filter type"},
		{"route rule without backends", route("rt-nobackend", func(o *v1.Route) { o.Spec.Rules[0].Backends = nil }), "a rule needs backends unless it redirects"},
		{"gateway route rule without backends (answers 500)", route("rt-gw-nobackend", func(o *v1.Route) {
			o.Spec.Rules[0].Backends = nil
			o.Spec.Parents = []v1.RouteParent{{LoadBalancer: "gateway.default.gw", Listeners: []string{"http"}}}
		}), ""},
		{"route backend weight negative", route("rt-weight", func(o *v1.Route) { o.Spec.Rules[0].Backends[0].Weight = ptr.To(int32(-1)) }), "should be greater than or equal to 0"},
		{"route bad backend protocol", route("rt-proto", func(o *v1.Route) { o.Spec.Rules[0].Backends[0].Protocol = "HTTP3" }), `Unsupported value: "HTTP3"`},
		{"route bad header name", route("rt-header", func(o *v1.Route) {
			o.Spec.Rules[0].Matches[0].Headers = []v1.HeaderMatch{{Name: "bad header", Value: "x"}}
		}), "should match"},
		{"route retry override", route("rt-retry", func(o *v1.Route) {
			o.Spec.Rules[0].Retry = &v1.RouteRetry{Attempts: 3, PerTryTimeout: &metav1.Duration{Duration: 250 * time.Millisecond},
				RetryOn: []v1.RetryOn{v1.RetryOn5xx, v1.RetryOnRetriableStatusCodes}, StatusCodes: []v1.RetryStatusCode{502, 429}, AllMethods: true}
		}), ""},
		{"route retry disabled", route("rt-retry0", func(o *v1.Route) { o.Spec.Rules[0].Retry = &v1.RouteRetry{Attempts: 0} }), ""},
		{"route retry too many attempts", route("rt-retry6", func(o *v1.Route) { o.Spec.Rules[0].Retry = &v1.RouteRetry{Attempts: 6} }), "should be less than or equal to 5"},
		{"route retry per-try timeout too long", route("rt-retrylong", func(o *v1.Route) {
			o.Spec.Rules[0].Retry = &v1.RouteRetry{Attempts: 1, PerTryTimeout: &metav1.Duration{Duration: 2 * time.Hour}}
		}), "perTryTimeout must be between 1ms and 1h"},
		{"route retry per-try timeout too short", route("rt-retryshort", func(o *v1.Route) {
			o.Spec.Rules[0].Retry = &v1.RouteRetry{Attempts: 1, PerTryTimeout: &metav1.Duration{Duration: time.Microsecond}}
		}), "perTryTimeout must be between 1ms and 1h"},
		{"route retry unknown condition", route("rt-retryon", func(o *v1.Route) {
			o.Spec.Rules[0].Retry = &v1.RouteRetry{Attempts: 1, RetryOn: []v1.RetryOn{"4xx"}}
		}), `Unsupported value: "4xx"`},
		{"route retry status code out of range", route("rt-retrycode", func(o *v1.Route) {
			o.Spec.Rules[0].Retry = &v1.RouteRetry{Attempts: 1, StatusCodes: []v1.RetryStatusCode{200}}
		}), "should be greater than or equal to 400"},
		{"route retry status codes without their condition", route("rt-retrycodes", func(o *v1.Route) {
			o.Spec.Rules[0].Retry = &v1.RouteRetry{Attempts: 1, RetryOn: []v1.RetryOn{v1.RetryOn5xx}, StatusCodes: []v1.RetryStatusCode{502}}
		}), "statusCodes need retriable-status-codes in retryOn"},
		{"route unknown source kind", route("rt-kind", func(o *v1.Route) { o.Spec.Source.Kind = "TCPRoute" }), `Unsupported value: "TCPRoute"`},
		// Tenant
		{"tenant valid", tenant("tenant-valid", nil), ""},
		{"tenant bad hostname pattern", tenant("tenant-badhost", func(o *v1.Tenant) { o.Spec.Hostnames = []v1.Hostname{"*.*.example.com"} }), "hostname must be a lower-case DNS name or a wildcard"},
		{"tenant bad group", tenant("tenant-badgroup", func(o *v1.Tenant) { o.Spec.Group = "Team A" }), "group must be a DNS label"},
		{"tenant without pool", tenant("tenant-nopool", func(o *v1.Tenant) { o.Spec.AddressPool = "" }), "spec.addressPool"},
		{"tenant negative limit", tenant("tenant-limit", func(o *v1.Tenant) { o.Spec.Limits.MaxRoutes = ptr.To(int32(-1)) }), "should be greater than or equal to 0"},
		{"tenant node cidrs and port range", tenant("tenant-nodes", func(o *v1.Tenant) {
			o.Spec.NodeCIDRs = []v1.CIDR{"10.0.0.0/8", "fd00::/64"}
			o.Spec.NodePortRange = &v1.PortRange{Min: 8000, Max: 8000}
		}), ""},
		{"tenant bad node cidr", tenant("tenant-badnodecidr", func(o *v1.Tenant) { o.Spec.NodeCIDRs = []v1.CIDR{"10.0.0.1/40"} }), "must be a CIDR"},
		{"tenant node port range reversed", tenant("tenant-reversed", func(o *v1.Tenant) { o.Spec.NodePortRange = &v1.PortRange{Min: 32767, Max: 30000} }), "min must not be greater than max"},
		{"tenant node port range from 0", tenant("tenant-port0", func(o *v1.Tenant) { o.Spec.NodePortRange = &v1.PortRange{Min: 0, Max: 30000} }), "should be greater than or equal to 1"},
		{"tenant node port range past 65535", tenant("tenant-portbig", func(o *v1.Tenant) { o.Spec.NodePortRange = &v1.PortRange{Min: 30000, Max: 70000} }), "should be less than or equal to 65535"},
		// AddressPool
		{"pool valid cidr, address, range, v6", pool("pool-valid", "127.0.10.0/24", "127.0.11.7", "127.0.12.10-127.0.12.20", "fd00::/120"), ""},
		{"pool bad cidr", pool("pool-badcidr", "127.0.10.0/33"), "must be a CIDR (192.0.2.0/24), an address, or a range"},
		{"pool bad range", pool("pool-badrange", "127.0.10.1-127.0.10"), "must be a CIDR (192.0.2.0/24), an address, or a range"},
		{"pool mixed-family range", pool("pool-mixed", "127.0.10.1-fd00::1"), "must be a CIDR (192.0.2.0/24), an address, or a range"},
		{"pool empty", pool("pool-empty"), "spec.addresses"},
		// TenantNodes
		{"nodes valid", nodes("default", nil), ""},
		{"nodes not named default", nodes("extra", nil), "there is one TenantNodes per tenant and it must be named default"},
		// ProxyFleet
		{"fleet defaults", &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: "fleet-defaults"}}, ""},
		{"fleet bad https port", &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: "fleet-badport"}, Spec: v1.ProxyFleetSpec{HTTPS: &v1.FleetListener{Port: 0}}}, "should be greater than or equal to 1"},
		{"fleet bad exposure", &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: "fleet-exposure"}, Spec: v1.ProxyFleetSpec{Exposure: "NodePort"}}, `Unsupported value: "NodePort"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := env.Client.Create(ctx, c.obj)
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("valid object rejected: %v", err)
			case c.wantErr != "" && err == nil:
				t.Fatalf("invalid object accepted; want an error containing %q", c.wantErr)
			case c.wantErr != "" && !strings.Contains(err.Error(), c.wantErr):
				t.Fatalf("error %q does not contain %q", err, c.wantErr)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	ctx := context.Background()
	f := &v1.ProxyFleet{ObjectMeta: metav1.ObjectMeta{Name: "fleet-defaulted"}}
	if err := env.Client.Create(ctx, f); err != nil {
		t.Fatal(err)
	}
	if f.Spec.HTTP == nil || f.Spec.HTTP.Port != 80 || f.Spec.HTTPS == nil || f.Spec.HTTPS.Port != 443 || ptr.Deref(f.Spec.Replicas, 0) != 2 || f.Spec.Exposure != v1.ExposureLoadBalancerService {
		t.Fatalf("ProxyFleet defaults not applied: %+v", f.Spec)
	}
	tn := tenant("tenant-defaulted", nil).(*v1.Tenant)
	if err := env.Client.Create(ctx, tn); err != nil {
		t.Fatal(err)
	}
	if tn.Spec.Fleet != v1.DefaultFleetName {
		t.Fatalf("Tenant fleet defaulted to %q", tn.Spec.Fleet)
	}
	if r := tn.Spec.NodePortRange; r == nil || r.Min != v1.DefaultNodePortMin || r.Max != v1.DefaultNodePortMax || len(tn.Spec.NodeCIDRs) != 0 {
		t.Fatalf("Tenant node defaults: range %+v, cidrs %v", r, tn.Spec.NodeCIDRs)
	}
	// Limits are finite without a limits field, and each unset one gets its default.
	l := tn.Spec.Limits
	for name, got := range map[string][2]int32{
		"maxLoadBalancers":       {ptr.Deref(l.MaxLoadBalancers, -1), v1.DefaultMaxLoadBalancers},
		"maxRoutes":              {ptr.Deref(l.MaxRoutes, -1), v1.DefaultMaxRoutes},
		"maxAddresses":           {ptr.Deref(l.MaxAddresses, -1), v1.DefaultMaxAddresses},
		"maxHostnames":           {ptr.Deref(l.MaxHostnames, -1), v1.DefaultMaxHostnames},
		"maxNodes":               {ptr.Deref(l.MaxNodes, -1), v1.DefaultMaxNodes},
		"maxEndpointsPerBackend": {ptr.Deref(l.MaxEndpointsPerBackend, -1), v1.DefaultMaxEndpointsPerBackend},
		"maxRouteConfigBytes":    {ptr.Deref(l.MaxRouteConfigBytes, -1), v1.DefaultMaxRouteConfigBytes},
	} {
		if got[0] != got[1] {
			t.Errorf("%s defaulted to %d, want %d", name, got[0], got[1])
		}
	}
	partial := tenant("tenant-partial-limits", func(o *v1.Tenant) { o.Spec.Limits.MaxRoutes = ptr.To(int32(5)) }).(*v1.Tenant)
	if err := env.Client.Create(ctx, partial); err != nil {
		t.Fatal(err)
	}
	if ptr.Deref(partial.Spec.Limits.MaxRoutes, 0) != 5 || ptr.Deref(partial.Spec.Limits.MaxLoadBalancers, 0) != v1.DefaultMaxLoadBalancers {
		t.Fatalf("partial limits: %+v", partial.Spec.Limits)
	}
	r := route("rt-defaulted", nil).(*v1.Route)
	if err := env.Client.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	if b := r.Spec.Rules[0].Backends[0]; ptr.Deref(b.Weight, 0) != 1 || b.Protocol != v1.BackendHTTP {
		t.Fatalf("backend defaults not applied: %+v", b)
	}
}

// The ccm writes TenantNodes' spec; only the manager (status subresource) writes what it refused.
func TestTenantNodesStatusIsASubresource(t *testing.T) {
	ctx := context.Background()
	tn := &v1.TenantNodes{ObjectMeta: metav1.ObjectMeta{Name: v1.TenantNodesName, Namespace: "tenant-status"},
		Spec: v1.TenantNodesSpec{Nodes: []v1.TenantNode{{Name: "n1", Addresses: []v1.IPAddress{"127.0.0.1"}}}}}
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tn.Namespace}}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, tn); err != nil {
		t.Fatal(err)
	}
	tn.Status = v1.TenantNodesStatus{ObservedGeneration: tn.Generation, RefusedCount: 1,
		Refused:    []v1.RefusedAddress{{Node: "n1", Address: "127.0.0.1", Reason: v1.RefusedDenied, Message: "loopback"}},
		Conditions: []metav1.Condition{{Type: v1.ConditionAccepted, Status: metav1.ConditionFalse, Reason: v1.ReasonNodesRefused, Message: "m", LastTransitionTime: metav1.Now()}}}
	if err := env.Client.Status().Update(ctx, tn); err != nil {
		t.Fatal(err)
	}
	// A write of the main resource (what the ccm does) cannot clear it.
	tn.Status = v1.TenantNodesStatus{}
	tn.Spec.Cluster = "c"
	if err := env.Client.Update(ctx, tn); err != nil {
		t.Fatal(err)
	}
	if tn.Status.RefusedCount != 1 || len(tn.Status.Refused) != 1 {
		t.Fatalf("status changed through the main resource: %+v", tn.Status)
	}
}

func TestSourceIsImmutable(t *testing.T) {
	ctx := context.Background()
	o := lb("lb-immutable", nil).(*v1.LoadBalancer)
	if err := env.Client.Create(ctx, o); err != nil {
		t.Fatal(err)
	}
	o.Spec.Source.Name = "other"
	if err := env.Client.Update(ctx, o); err == nil || !strings.Contains(err.Error(), "source is immutable") {
		t.Fatalf("changing a LoadBalancer source: %v, want 'source is immutable'", err)
	}

	r := route("rt-immutable", nil).(*v1.Route)
	if err := env.Client.Create(ctx, r); err != nil {
		t.Fatal(err)
	}
	r.Spec.Source.Generation = 7 // the tenant object changed: allowed
	if err := env.Client.Update(ctx, r); err != nil {
		t.Fatalf("changing a Route source generation: %v", err)
	}
	r.Spec.Source.UID = "another"
	if err := env.Client.Update(ctx, r); err == nil || !strings.Contains(err.Error(), "source is immutable except for its generation") {
		t.Fatalf("changing a Route source uid: %v, want the immutability message", err)
	}
}

// The real kubectl shows the printer columns and the field documentation.
func TestKubectlColumnsAndExplain(t *testing.T) {
	ctx := context.Background()
	o := lb("lb-kubectl", func(o *v1.LoadBalancer) {
		o.Spec.Ports = append(o.Spec.Ports, v1.LoadBalancerPort{Port: 443, Protocol: v1.ProtocolTCP, NodePort: 30443})
	}).(*v1.LoadBalancer)
	if err := env.Client.Create(ctx, o); err != nil {
		t.Fatal(err)
	}
	o.Status = v1.LoadBalancerStatus{
		Addresses: []v1.Address{{IP: "127.0.10.9", IPMode: v1.IPModeProxy}},
		Ports:     v1.PortsSummary(o.Spec.Ports),
		Conditions: []metav1.Condition{
			{Type: v1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1.ReasonAccepted, LastTransitionTime: metav1.Now()},
			{Type: v1.ConditionProgrammed, Status: metav1.ConditionFalse, Reason: v1.ReasonPending, LastTransitionTime: metav1.Now()},
		},
	}
	if err := env.Client.Status().Update(ctx, o); err != nil {
		t.Fatal(err)
	}

	out, err := env.Kubectl(ctx, "get", "lb", "-n", ns, "lb-kubectl", "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("kubectl get lb -o wide:\n%s", out)
	}
	for _, col := range []string{"NAME", "ADDRESS", "PORTS", "SOURCE", "CLUSTER", "ACCEPTED", "PROGRAMMED", "REASON", "AGE"} {
		if !strings.Contains(lines[0], col) {
			t.Errorf("column %s missing from %q", col, lines[0])
		}
	}
	// REASON is the reason of the first condition that is not True: here Programmed's.
	for _, val := range []string{"lb-kubectl", "127.0.10.9", " 80/TCP,443/TCP ", "web", "True", "False", v1.ReasonPending} {
		if !strings.Contains(lines[1], val) {
			t.Errorf("value %s missing from %q", val, lines[1])
		}
	}

	rt := route("rt-kubectl", nil).(*v1.Route)
	if err := env.Client.Create(ctx, rt); err != nil {
		t.Fatal(err)
	}
	out, err = env.Kubectl(ctx, "get", "rt", "-n", ns, "rt-kubectl")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "HOSTNAMES") || !strings.Contains(out, "web.team-a.example.com") || !strings.Contains(out, "REASON") || !strings.Contains(out, "RESOLVEDREFS") {
		t.Errorf("kubectl get rt:\n%s", out)
	}
	// A refused Route shows why in REASON, whatever comes after Accepted.
	rt.Status.Conditions = []metav1.Condition{
		{Type: v1.ConditionAccepted, Status: metav1.ConditionFalse, Reason: v1.ReasonHostnameNotAllowed, Message: "m", LastTransitionTime: metav1.Now()},
		{Type: v1.ConditionResolvedRefs, Status: metav1.ConditionFalse, Reason: v1.ReasonSecretNotFound, Message: "m", LastTransitionTime: metav1.Now()},
		{Type: v1.ConditionProgrammed, Status: metav1.ConditionFalse, Reason: v1.ReasonPending, LastTransitionTime: metav1.Now()},
	}
	rt.Status.Ports = []v1.RoutePort{{Port: 8080, Protocol: v1.RoutePortHTTP}, {Port: 8443, Protocol: v1.RoutePortHTTPS}}
	if err := env.Client.Status().Update(ctx, rt); err != nil {
		t.Fatal(err)
	}
	out, err = env.Kubectl(ctx, "get", "rt", "-n", ns, "rt-kubectl")
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.Contains(lines[1], v1.ReasonHostnameNotAllowed) || strings.Contains(lines[1], v1.ReasonPending) {
		t.Errorf("kubectl get rt of a refused Route shows no reason, or not Accepted's:\n%s", out)
	}
	// HTTP and HTTPS: the ports the fleet serves it on; ACCEPTED, RESOLVEDREFS, PROGRAMMED: False False False.
	if !regexp.MustCompile(`rt-kubectl\s+\S+\s+8080\s+8443\s+False\s+False\s+False\s+` + v1.ReasonHostnameNotAllowed).MatchString(out) {
		t.Errorf("kubectl get rt: no RESOLVEDREFS value:\n%s", out)
	}

	// Tenant: admitted and refused counts; TenantNodes: the node count.
	tn := &v1.Tenant{ObjectMeta: metav1.ObjectMeta{Name: "kubectl-columns"}, Spec: v1.TenantSpec{AddressPool: "vips"}}
	if err := env.Client.Create(ctx, tn); err != nil {
		t.Fatal(err)
	}
	tn.Status = v1.TenantStatus{LoadBalancers: 3, Routes: 2, Admitted: 4, Refused: 1, Conditions: []metav1.Condition{
		{Type: v1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1.ReasonPoolNotFound, Message: "m", LastTransitionTime: metav1.Now()}}}
	if err := env.Client.Status().Update(ctx, tn); err != nil {
		t.Fatal(err)
	}
	out, err = env.Kubectl(ctx, "get", "tenant", "kubectl-columns")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`LBS\s+ROUTES\s+ADMITTED\s+REFUSED`).MatchString(out) || !regexp.MustCompile(`kubectl-columns\s+.*\s3\s+2\s+4\s+1\s+False\s+PoolNotFound\s`).MatchString(out) {
		t.Errorf("kubectl get tenant:\n%s", out)
	}
	nodes := &v1.TenantNodes{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: v1.TenantNodesName},
		Spec: v1.TenantNodesSpec{Cluster: "c", Nodes: []v1.TenantNode{{Name: "n1", Addresses: []v1.IPAddress{"10.0.0.1"}}, {Name: "n2", Addresses: []v1.IPAddress{"10.0.0.2"}}}}}
	if err := env.Client.Create(ctx, nodes); apierrors.IsAlreadyExists(err) {
		// Another test's TenantNodes of this namespace: take it over.
		spec := nodes.Spec
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(nodes), nodes); err != nil {
			t.Fatal(err)
		}
		nodes.Spec = spec
		if err := env.Client.Update(ctx, nodes); err != nil {
			t.Fatal(err)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	nodes.Status = v1.TenantNodesStatus{Nodes: 2, Served: 1, RefusedCount: 1}
	if err := env.Client.Status().Update(ctx, nodes); err != nil {
		t.Fatal(err)
	}
	out, err = env.Kubectl(ctx, "get", "tenantnodes", "-n", ns)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`NODES\s+SERVED\s+REFUSED`).MatchString(out) || !regexp.MustCompile(`default\s+c\s+2\s+1\s+1\s`).MatchString(out) {
		t.Errorf("kubectl get tenantnodes:\n%s", out)
	}

	out, err = env.Kubectl(ctx, "explain", "route.spec")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range []string{"RouteSpec is a tenant's L7 routing", "hostnames", "Rules in order; the first that matches a request wins"} {
		if !strings.Contains(out, doc) {
			t.Errorf("kubectl explain route.spec lacks %q:\n%s", doc, out)
		}
	}
	out, err = env.Kubectl(ctx, "explain", "loadbalancer.spec.ports.protocol")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Protocol: TCP or UDP") {
		t.Errorf("kubectl explain loadbalancer.spec.ports.protocol:\n%s", out)
	}
}

// Objects stored before the limits had defaults read back without them: the
// manager applies the same numbers.
func TestLimitsDefaultWhenAbsent(t *testing.T) {
	var l v1.TenantLimits
	if l.LoadBalancers() != v1.DefaultMaxLoadBalancers || l.Routes() != v1.DefaultMaxRoutes || l.Addresses() != v1.DefaultMaxAddresses ||
		l.Hostnames() != v1.DefaultMaxHostnames || l.Nodes() != v1.DefaultMaxNodes || l.EndpointsPerBackend() != v1.DefaultMaxEndpointsPerBackend ||
		l.RouteConfigBytes() != v1.DefaultMaxRouteConfigBytes {
		t.Fatalf("unset limits: %+v", l)
	}
	l.MaxRoutes = ptr.To(int32(0))
	if l.Routes() != 0 {
		t.Fatalf("explicit 0 routes read as %d", l.Routes())
	}
}
