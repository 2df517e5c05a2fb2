// Package model is the desired traffic configuration of one proxy fleet, in
// plain Go: no Kubernetes and no Envoy types. The manager builds a Fleet from
// admitted API objects; envoy/translate turns it into xDS resources.
//
// A Fleet is data, compared and hashed as a whole; every list has a meaning
// for its order only where a comment says so (routes are matched in order),
// otherwise the translator sorts.
package model

import (
	"encoding/json"
	"net/netip"
	"time"
)

// Duration is a time.Duration that reads and writes as "1.5s" in JSON and YAML.
type Duration time.Duration

// D is the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes the duration as a string such as "1m30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "1m30s" (or a number of nanoseconds).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err := json.Unmarshal(b, &n); err != nil {
			return err
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// Fleet is everything one Envoy fleet serves.
type Fleet struct {
	// Name of the fleet (node.cluster of its proxies).
	Name string `json:"name"`
	// L4 services, one listener per VIP:port/protocol.
	L4 []L4Service `json:"l4,omitempty"`
	// HTTP is the fleet's shared plain-text listener; nil serves no plain HTTP.
	HTTP *SharedListener `json:"http,omitempty"`
	// HTTPS is the fleet's shared TLS listener; nil serves no HTTPS.
	HTTPS *SharedListener `json:"https,omitempty"`
	// VirtualHosts served on the shared listeners.
	VirtualHosts []VirtualHost `json:"virtualHosts,omitempty"`
	// Gateways are tenant Gateways, each on its own VIP with its own listeners.
	Gateways []Gateway `json:"gateways,omitempty"`
	// Certificates offered on HTTPS (shared and Gateway listeners), chosen by SNI.
	Certificates []Certificate `json:"certificates,omitempty"`
	// Backends are the upstream groups (Envoy clusters) that L4 services and routes refer to by name.
	Backends []Backend `json:"backends,omitempty"`
}

// Protocol of an L4 service.
type Protocol string

const (
	TCP Protocol = "TCP"
	UDP Protocol = "UDP"
)

// Ref names a tenant object; names of Envoy resources are derived from it.
type Ref struct {
	Tenant    string `json:"tenant"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// L4Service forwards one VIP port to a backend.
type L4Service struct {
	Ref      Ref        `json:"ref"`
	VIP      netip.Addr `json:"vip"`
	Port     uint16     `json:"port"`
	Protocol Protocol   `json:"protocol"`
	// Backend is the name of a Backend of the fleet.
	Backend string `json:"backend"`
	// SourceRanges allowed to connect; empty allows all.
	SourceRanges []netip.Prefix `json:"sourceRanges,omitempty"`
	// IdleTimeout closes idle TCP connections / UDP sessions; 0 uses the default (1h TCP, 1m UDP).
	IdleTimeout Duration `json:"idleTimeout,omitempty"`
}

// SharedListener is the fleet's HTTP or HTTPS listener.
type SharedListener struct {
	VIP  netip.Addr `json:"vip"`
	Port uint16     `json:"port"`
}

// VirtualHost serves some hostnames.
type VirtualHost struct {
	// Name is stable and unique in the fleet (for example the first hostname).
	Name string `json:"name"`
	// Hostnames: exact names or "*.suffix" wildcards.
	Hostnames []string `json:"hostnames"`
	// Certificate names the Certificate that serves these hostnames on HTTPS;
	// empty serves them on HTTP only.
	Certificate string `json:"certificate,omitempty"`
	// RedirectToHTTPS answers plain HTTP with a 301 to https (only with a Certificate).
	RedirectToHTTPS bool `json:"redirectToHTTPS,omitempty"`
	// Routes in match order: the first that matches wins.
	Routes []Route `json:"routes"`
}

// Route is a match and what to do with a matching request.
type Route struct {
	// Name is unique within the virtual host.
	Name  string `json:"name"`
	Match Match  `json:"match"`
	// Exactly one of Redirect, Forward and Respond is set.
	Redirect *Redirect `json:"redirect,omitempty"`
	Forward  *Forward  `json:"forward,omitempty"`
	// Respond answers with a status and no body (a Gateway API rule with
	// no usable backend answers 500).
	Respond *Respond `json:"respond,omitempty"`
}

// Respond answers directly.
type Respond struct {
	// Status is 200-599.
	Status int `json:"status"`
}

// PathMatchType says how a path is compared.
type PathMatchType string

const (
	PathExact  PathMatchType = "Exact"
	PathPrefix PathMatchType = "Prefix"
	PathRegex  PathMatchType = "Regex"
)

// StringMatchType says how a header or query value is compared.
type StringMatchType string

const (
	StringExact StringMatchType = "Exact"
	StringRegex StringMatchType = "Regex"
)

// Match selects requests; all set parts must match.
type Match struct {
	PathType PathMatchType `json:"pathType,omitempty"`
	Path     string        `json:"path,omitempty"`
	Headers  []StringMatch `json:"headers,omitempty"`
	Query    []StringMatch `json:"query,omitempty"`
	Method   string        `json:"method,omitempty"`
}

// StringMatch compares one named value.
type StringMatch struct {
	Name  string          `json:"name"`
	Type  StringMatchType `json:"type,omitempty"`
	Value string          `json:"value"`
}

// Redirect answers with a redirect.
type Redirect struct {
	Scheme string `json:"scheme,omitempty"`
	Host   string `json:"host,omitempty"`
	Port   uint16 `json:"port,omitempty"`
	// FullPath replaces the path; PrefixPath replaces the matched prefix. At most one is set.
	FullPath   string `json:"fullPath,omitempty"`
	PrefixPath string `json:"prefixPath,omitempty"`
	// StatusCode is 301, 302, 303, 307 or 308; 0 means 302.
	StatusCode int `json:"statusCode,omitempty"`
}

// Forward sends the request to weighted backends.
type Forward struct {
	Backends []WeightedBackend `json:"backends"`
	// Rewrite of host and path; empty fields change nothing. At most one of the paths is set.
	RewriteHost       string        `json:"rewriteHost,omitempty"`
	RewriteFullPath   string        `json:"rewriteFullPath,omitempty"`
	RewritePrefixPath string        `json:"rewritePrefixPath,omitempty"`
	RequestHeaders    HeaderChanges `json:"requestHeaders,omitempty"`
	ResponseHeaders   HeaderChanges `json:"responseHeaders,omitempty"`
	// Timeout of the whole request; 0 disables it (Envoy's default of 15s is not applied).
	Timeout Duration `json:"timeout,omitempty"`
	// BackendTimeout bounds one attempt (per-try timeout); 0 means none.
	BackendTimeout Duration `json:"backendTimeout,omitempty"`
	// HashSourceIP pins a client to one endpoint (session affinity).
	HashSourceIP bool `json:"hashSourceIP,omitempty"`
	// Retry replaces the virtual host's default retry policy; nil keeps it.
	Retry *Retry `json:"retry,omitempty"`
}

// Retry is a route's own retry policy. Retries still go to another host
// and priority, and the backends' retry budget still bounds them.
type Retry struct {
	// Attempts is the number of retries after the first try, 0-5; 0 disables retries.
	Attempts uint32 `json:"attempts"`
	// PerTryTimeout bounds each try; 0 takes the route's BackendTimeout.
	PerTryTimeout Duration `json:"perTryTimeout,omitempty"`
	// RetryOn are Envoy retry_on conditions (RetryOnConditions); empty means
	// connect-failure, refused-stream, reset and retriable-status-codes.
	// (Not "on": YAML 1.1 reads that key as true.)
	RetryOn []string `json:"retryOn,omitempty"`
	// StatusCodes for retriable-status-codes, 400-599; empty means 503.
	StatusCodes []uint32 `json:"statusCodes,omitempty"`
	// AllMethods retries non-idempotent methods too.
	AllMethods bool `json:"allMethods,omitempty"`
}

// RetryOnConditions are the retry_on conditions a Retry may name.
var RetryOnConditions = []string{"connect-failure", "refused-stream", "reset", "reset-before-request", "5xx", "gateway-error", "retriable-status-codes"}

// MaxRetryAttempts bounds Retry.Attempts.
const MaxRetryAttempts = 5

// WeightedBackend is a backend and its share.
type WeightedBackend struct {
	Backend string `json:"backend"`
	Weight  uint32 `json:"weight"`
}

// HeaderChanges set, add and remove headers.
type HeaderChanges struct {
	Set    []Header `json:"set,omitempty"`
	Add    []Header `json:"add,omitempty"`
	Remove []string `json:"remove,omitempty"`
}

// Header is a name and value.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Certificate is a TLS certificate chain and key.
type Certificate struct {
	// Name is stable and unique in the fleet ("tenant/namespace/secret").
	Name    string `json:"name"`
	CertPEM string `json:"certPEM"`
	KeyPEM  string `json:"keyPEM"`
}

// BackendProtocol is what a backend speaks.
type BackendProtocol string

const (
	BackendTCP   BackendProtocol = "TCP"
	BackendUDP   BackendProtocol = "UDP"
	BackendHTTP1 BackendProtocol = "HTTP1"
	BackendHTTP2 BackendProtocol = "HTTP2"
	BackendGRPC  BackendProtocol = "GRPC"
)

// Backend is a group of endpoints (one Envoy cluster).
type Backend struct {
	// Name is stable and unique in the fleet, derived from tenant/namespace/name/port.
	Name     string          `json:"name"`
	Protocol BackendProtocol `json:"protocol"`
	// Groups of endpoints, one per tenant cluster and zone.
	Groups []EndpointGroup `json:"groups"`
	// LocalityWeighted spreads load by group weight before endpoints (global weighted strategy).
	LocalityWeighted bool         `json:"localityWeighted,omitempty"`
	HealthCheck      *HealthCheck `json:"healthCheck,omitempty"`
	Outlier          *Outlier     `json:"outlier,omitempty"`
	ConnectTimeout   Duration     `json:"connectTimeout,omitempty"`
	// ProxyProtocol is 0 (none), 1 or 2.
	ProxyProtocol int `json:"proxyProtocol,omitempty"`
	// SessionAffinity pins a client source IP to one endpoint (ring hash).
	SessionAffinity bool `json:"sessionAffinity,omitempty"`
}

// EndpointGroup is the endpoints of one tenant cluster in one zone.
type EndpointGroup struct {
	// Cluster is the tenant cluster's name (the locality region).
	Cluster string `json:"cluster"`
	Zone    string `json:"zone,omitempty"`
	// Priority: 0 is used first; higher ones take over as health drops (failover).
	Priority uint32 `json:"priority,omitempty"`
	// Weight of the group when the backend is LocalityWeighted.
	Weight    uint32     `json:"weight,omitempty"`
	Endpoints []Endpoint `json:"endpoints"`
}

// Endpoint is a node address and NodePort.
type Endpoint struct {
	Address netip.Addr `json:"address"`
	Port    uint16     `json:"port"`
}

// HealthCheckType is how endpoints are probed.
type HealthCheckType string

const (
	HealthTCP  HealthCheckType = "TCP"
	HealthHTTP HealthCheckType = "HTTP"
)

// HealthCheck is an active health check. Zero fields take fleetlb's
// defaults for failover in about a second (envoy/translate, README.md):
// interval 1s, timeout 500ms, thresholds 2 and 2, with jitter, edge,
// unhealthy and no-traffic intervals derived from the interval.
type HealthCheck struct {
	Type HealthCheckType `json:"type"`
	// Port overrides the endpoint port (a healthCheckNodePort).
	Port uint16 `json:"port,omitempty"`
	// Path and ExpectedStatuses of an HTTP check (default 200-299).
	Path               string   `json:"path,omitempty"`
	ExpectedStatuses   []int    `json:"expectedStatuses,omitempty"`
	Interval           Duration `json:"interval,omitempty"`
	Timeout            Duration `json:"timeout,omitempty"`
	UnhealthyThreshold uint32   `json:"unhealthyThreshold,omitempty"`
	HealthyThreshold   uint32   `json:"healthyThreshold,omitempty"`
}

// Outlier tunes passive outlier detection, which every TCP and HTTP backend
// has: local-origin failures (connect, reset, timeout) are counted apart from
// 5xx and one ejects. Zero fields take the defaults: 5 consecutive 5xx,
// interval 1s, base ejection 5s, at most 100% of hosts ejected.
type Outlier struct {
	Consecutive5xx     uint32   `json:"consecutive5xx,omitempty"`
	Interval           Duration `json:"interval,omitempty"`
	BaseEjectionTime   Duration `json:"baseEjectionTime,omitempty"`
	MaxEjectionPercent uint32   `json:"maxEjectionPercent,omitempty"`
}
