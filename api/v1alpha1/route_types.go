package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// RouteSourceKind is the kind of tenant object a Route was made from.
// +kubebuilder:validation:Enum=Ingress;HTTPRoute;GRPCRoute;TLSRoute
type RouteSourceKind string

const (
	SourceIngress   RouteSourceKind = "Ingress"
	SourceHTTPRoute RouteSourceKind = "HTTPRoute"
	SourceGRPCRoute RouteSourceKind = "GRPCRoute"
	SourceTLSRoute  RouteSourceKind = "TLSRoute"
)

// RouteSource identifies the tenant object a Route was made from.
type RouteSource struct {
	// Kind of the tenant object.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="source is immutable except for its generation"
	Kind RouteSourceKind `json:"kind"`
	// Cluster is the tenant cluster's name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="source is immutable except for its generation"
	Cluster string `json:"cluster"`
	// Namespace of the tenant object.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="source is immutable except for its generation"
	Namespace string `json:"namespace"`
	// Name of the tenant object.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="source is immutable except for its generation"
	Name string `json:"name"`
	// UID of the tenant object.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=36
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="source is immutable except for its generation"
	UID string `json:"uid"`
	// Generation of the tenant object this Route reflects; status on the tenant
	// object reports it as observedGeneration.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Generation int64 `json:"generation,omitempty"`
}

// RouteTLS serves some of the Route's hostnames over HTTPS.
type RouteTLS struct {
	// Hostnames this certificate is for.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +listType=set
	Hostnames []Hostname `json:"hostnames"`
	// SecretName of a kubernetes.io/tls Secret in the tenant namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	SecretName string `json:"secretName"`
	// Issuer asks cert-manager for the certificate when the Secret does not exist.
	// +optional
	Issuer *IssuerRef `json:"issuer,omitempty"`
	// RedirectHTTP answers plain HTTP for these hostnames with a 301 to
	// https, once the certificate is served (an Ingress with TLS sets it
	// unless annotated fleetlb.io/ssl-redirect: "false").
	// +optional
	RedirectHTTP bool `json:"redirectHTTP,omitempty"`
}

// PathMatchType says how a path is compared.
// +kubebuilder:validation:Enum=Exact;PathPrefix;RegularExpression
type PathMatchType string

const (
	PathExact             PathMatchType = "Exact"
	PathPrefix            PathMatchType = "PathPrefix"
	PathRegularExpression PathMatchType = "RegularExpression"
)

// PathMatch matches the request path.
// +kubebuilder:validation:XValidation:rule="self.type == 'RegularExpression' || self.value.startsWith('/')",message="an Exact or PathPrefix path must start with /"
type PathMatch struct {
	// Type of match.
	// +kubebuilder:default=PathPrefix
	Type PathMatchType `json:"type"`
	// Value is the path, the prefix, or an RE2 regular expression matching the whole path.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Value string `json:"value"`
}

// StringMatchType says how a header or query value is compared.
// +kubebuilder:validation:Enum=Exact;RegularExpression
type StringMatchType string

const (
	MatchExact             StringMatchType = "Exact"
	MatchRegularExpression StringMatchType = "RegularExpression"
)

// HeaderMatch matches one request header (or query parameter).
type HeaderMatch struct {
	// Type of match.
	// +kubebuilder:default=Exact
	Type StringMatchType `json:"type,omitempty"`
	// Name of the header or query parameter.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9!#$%&*+.^_|~-]+$`
	Name string `json:"name"`
	// Value to compare with.
	// +kubebuilder:validation:MaxLength=4096
	Value string `json:"value"`
}

// RouteMatch is one way a request can match a rule; all its parts must match.
type RouteMatch struct {
	// Path to match; PathPrefix / when unset.
	// +optional
	Path *PathMatch `json:"path,omitempty"`
	// Headers that must all match.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	Headers []HeaderMatch `json:"headers,omitempty"`
	// QueryParams that must all match.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	QueryParams []HeaderMatch `json:"queryParams,omitempty"`
	// Method to match.
	// +optional
	// +kubebuilder:validation:Enum=GET;HEAD;POST;PUT;DELETE;CONNECT;OPTIONS;TRACE;PATCH
	Method string `json:"method,omitempty"`
}

// BackendProtocol is what the backend speaks.
// +kubebuilder:validation:Enum=HTTP;HTTP2;GRPC;TCP
type BackendProtocol string

const (
	BackendHTTP  BackendProtocol = "HTTP"
	BackendHTTP2 BackendProtocol = "HTTP2"
	BackendGRPC  BackendProtocol = "GRPC"
	// BackendTCP receives the connection's bytes as they came (TLSRoute passthrough).
	BackendTCP BackendProtocol = "TCP"
)

// RouteBackend is a NodePort of the tenant cluster that serves the rule.
type RouteBackend struct {
	// ServiceName is the tenant Service behind the NodePort (for messages and names).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	ServiceName string `json:"serviceName,omitempty"`
	// ServicePort is the Service port the tenant object referred to.
	// +optional
	ServicePort *PortNumber `json:"servicePort,omitempty"`
	// NodePort on the tenant nodes.
	NodePort PortNumber `json:"nodePort"`
	// Weight among the rule's backends.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	Weight *int32 `json:"weight,omitempty"`
	// Protocol the backend speaks.
	// +optional
	// +kubebuilder:default=HTTP
	Protocol BackendProtocol `json:"protocol,omitempty"`
}

// FilterType is what a filter does.
// +kubebuilder:validation:Enum=RequestRedirect;URLRewrite;RequestHeaderModifier;ResponseHeaderModifier
type FilterType string

const (
	FilterRequestRedirect        FilterType = "RequestRedirect"
	FilterURLRewrite             FilterType = "URLRewrite"
	FilterRequestHeaderModifier  FilterType = "RequestHeaderModifier"
	FilterResponseHeaderModifier FilterType = "ResponseHeaderModifier"
)

// PathModifierType says how a redirect or rewrite changes the path.
// +kubebuilder:validation:Enum=ReplaceFullPath;ReplacePrefixMatch
type PathModifierType string

const (
	ReplaceFullPath    PathModifierType = "ReplaceFullPath"
	ReplacePrefixMatch PathModifierType = "ReplacePrefixMatch"
)

// PathModifier changes the request path.
type PathModifier struct {
	// Type of change.
	Type PathModifierType `json:"type"`
	// Value replaces the whole path or the matched prefix.
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/')",message="path must start with /"
	Value string `json:"value"`
}

// RequestRedirect answers with a redirect instead of forwarding.
type RequestRedirect struct {
	// Scheme of the new location.
	// +optional
	// +kubebuilder:validation:Enum=http;https
	Scheme string `json:"scheme,omitempty"`
	// Hostname of the new location.
	// +optional
	Hostname Hostname `json:"hostname,omitempty"`
	// Path of the new location.
	// +optional
	Path *PathModifier `json:"path,omitempty"`
	// Port of the new location.
	// +optional
	Port *PortNumber `json:"port,omitempty"`
	// StatusCode of the redirect.
	// +optional
	// +kubebuilder:default=302
	// +kubebuilder:validation:Enum=301;302;303;307;308
	StatusCode int32 `json:"statusCode,omitempty"`
}

// URLRewrite changes the request before it is forwarded.
type URLRewrite struct {
	// Hostname replaces the Host header.
	// +optional
	Hostname Hostname `json:"hostname,omitempty"`
	// Path replaces the path or the matched prefix.
	// +optional
	Path *PathModifier `json:"path,omitempty"`
}

// HTTPHeader is a header name and value.
type HTTPHeader struct {
	// Name of the header.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9!#$%&*+.^_|~-]+$`
	Name string `json:"name"`
	// Value of the header.
	// +kubebuilder:validation:MaxLength=4096
	Value string `json:"value"`
}

// HeaderModifier sets, adds and removes headers.
type HeaderModifier struct {
	// Set replaces headers.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=map
	// +listMapKey=name
	Set []HTTPHeader `json:"set,omitempty"`
	// Add appends headers.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=map
	// +listMapKey=name
	Add []HTTPHeader `json:"add,omitempty"`
	// Remove deletes headers by name.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=set
	Remove []string `json:"remove,omitempty"`
}

// RouteFilter changes a request or its response; exactly the field named by Type is set.
// +kubebuilder:validation:XValidation:rule="(self.type == 'RequestRedirect') == has(self.requestRedirect) && (self.type == 'URLRewrite') == has(self.urlRewrite) && (self.type == 'RequestHeaderModifier') == has(self.requestHeaderModifier) && (self.type == 'ResponseHeaderModifier') == has(self.responseHeaderModifier)",message="set exactly the field that matches the filter type"
type RouteFilter struct {
	// Type of the filter.
	Type FilterType `json:"type"`
	// +optional
	RequestRedirect *RequestRedirect `json:"requestRedirect,omitempty"`
	// +optional
	URLRewrite *URLRewrite `json:"urlRewrite,omitempty"`
	// +optional
	RequestHeaderModifier *HeaderModifier `json:"requestHeaderModifier,omitempty"`
	// +optional
	ResponseHeaderModifier *HeaderModifier `json:"responseHeaderModifier,omitempty"`
}

// RouteTimeouts bound a request.
type RouteTimeouts struct {
	// Request is the whole request's deadline, retries included.
	// +optional
	Request *metav1.Duration `json:"request,omitempty"`
	// BackendRequest is one attempt's deadline.
	// +optional
	BackendRequest *metav1.Duration `json:"backendRequest,omitempty"`
}

// RouteRule is matches plus what happens to a matching request.
type RouteRule struct {
	// Name of the rule, for status and names.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name,omitempty"`
	// Matches: the rule applies when any of them matches; every request when empty.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	Matches []RouteMatch `json:"matches,omitempty"`
	// Backends the request is forwarded to, by weight.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	Backends []RouteBackend `json:"backends,omitempty"`
	// Filters applied in order.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	Filters []RouteFilter `json:"filters,omitempty"`
	// Timeouts of the request.
	// +optional
	Timeouts *RouteTimeouts `json:"timeouts,omitempty"`
	// Retry replaces the virtual host's default retry policy for this rule.
	// +optional
	Retry *RouteRetry `json:"retry,omitempty"`
}

// RetryOn is a condition that makes a request be retried (Envoy's retry_on).
// +kubebuilder:validation:Enum=connect-failure;refused-stream;reset;reset-before-request;5xx;gateway-error;retriable-status-codes
type RetryOn string

const (
	RetryOnConnectFailure       RetryOn = "connect-failure"
	RetryOnRefusedStream        RetryOn = "refused-stream"
	RetryOnReset                RetryOn = "reset"
	RetryOnResetBeforeRequest   RetryOn = "reset-before-request"
	RetryOn5xx                  RetryOn = "5xx"
	RetryOnGatewayError         RetryOn = "gateway-error"
	RetryOnRetriableStatusCodes RetryOn = "retriable-status-codes"
)

// RouteRetry is a rule's retry policy. Retries keep going to another host
// and, after the first retry, to another priority (the failover cluster);
// the backends' retry budget still bounds them.
// +kubebuilder:validation:XValidation:rule="!has(self.statusCodes) || size(self.statusCodes) == 0 || !has(self.retryOn) || size(self.retryOn) == 0 || self.retryOn.exists(o, o == 'retriable-status-codes')",message="statusCodes need retriable-status-codes in retryOn",fieldPath=".statusCodes"
type RouteRetry struct {
	// Attempts is how many times a request is retried after its first try;
	// 0 disables retries for this rule.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=5
	Attempts int32 `json:"attempts"`
	// PerTryTimeout bounds each try (timeouts.backendRequest when unset).
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1ms') && duration(self) <= duration('1h')",message="perTryTimeout must be between 1ms and 1h"
	PerTryTimeout *metav1.Duration `json:"perTryTimeout,omitempty"`
	// RetryOn: what is retried. Unset: connect-failure, refused-stream,
	// reset and retriable-status-codes. (Not "on": YAML 1.1 reads that key as true.)
	// +optional
	// +kubebuilder:validation:MaxItems=7
	// +listType=set
	RetryOn []RetryOn `json:"retryOn,omitempty"`
	// StatusCodes retried with retriable-status-codes; unset: 503.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=set
	StatusCodes []RetryStatusCode `json:"statusCodes,omitempty"`
	// AllMethods retries every method; otherwise only idempotent ones (GET,
	// HEAD, OPTIONS, PUT, DELETE, TRACE) are, so a POST is never sent twice.
	// +optional
	AllMethods bool `json:"allMethods,omitempty"`
}

// RetryStatusCode is an HTTP status that may be retried.
// +kubebuilder:validation:Minimum=400
// +kubebuilder:validation:Maximum=599
type RetryStatusCode int32

// RouteParent is the listeners of one tenant Gateway a Route attaches to.
type RouteParent struct {
	// LoadBalancer made from the Gateway, in the Route's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	LoadBalancer string `json:"loadBalancer"`
	// Listeners of the Gateway, by name.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +listType=set
	Listeners []string `json:"listeners"`
}

// RouteSpec is a tenant's L7 routing for some hostnames.
// +kubebuilder:validation:XValidation:rule="(has(self.hostnames) && size(self.hostnames) > 0) || (has(self.parents) && size(self.parents) > 0)",message="a route on the shared VIP needs hostnames",fieldPath=".hostnames"
// +kubebuilder:validation:XValidation:rule="(has(self.parents) && size(self.parents) > 0) || self.rules.all(r, (has(r.backends) && size(r.backends) > 0) || (has(r.filters) && r.filters.exists(f, f.type == 'RequestRedirect')))",message="a rule needs backends unless it redirects (on Gateway listeners a rule without backends answers 500)",fieldPath=".rules"
// +kubebuilder:validation:XValidation:rule="!has(self.parents) || size(self.parents) == 0 || !has(self.tls) || size(self.tls) == 0",message="a route on Gateway listeners takes its certificates from the listeners, not tls",fieldPath=".tls"
type RouteSpec struct {
	// Source is the tenant object this was made from.
	Source RouteSource `json:"source"`
	// Hostnames the rules serve; exact names or wildcards like *.example.com.
	// Required on the fleet's shared VIP, where hostname ownership decides who
	// serves a name. On Gateway listeners (parents) they filter requests as
	// the Gateway API defines it; none matches every host of the listeners.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +listType=set
	Hostnames []Hostname `json:"hostnames,omitempty"`
	// Parents attach the Route to listeners of Gateways of this tenant (their
	// LoadBalancers in this namespace) instead of the fleet's shared VIP.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +listType=map
	// +listMapKey=loadBalancer
	Parents []RouteParent `json:"parents,omitempty"`
	// TLS certificates for some or all of the hostnames.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	TLS []RouteTLS `json:"tls,omitempty"`
	// Rules in order; the first that matches a request wins.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	Rules []RouteRule `json:"rules"`
	// Global options for hostnames shared by several clusters of the tenant group.
	// +optional
	Global *GlobalOptions `json:"global,omitempty"`
}

// RoutePort is a port of the fleet's shared listeners that serves a Route.
type RoutePort struct {
	// Port on the Route's addresses.
	Port PortNumber `json:"port"`
	// Protocol is HTTP or HTTPS.
	// +kubebuilder:validation:Enum=HTTP;HTTPS
	Protocol string `json:"protocol"`
}

// The protocols of a RoutePort.
const (
	RoutePortHTTP  = "HTTP"
	RoutePortHTTPS = "HTTPS"
)

// RouteStatus reports what the fleet serves of a Route.
type RouteStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Addresses the Route is served on (the fleet's shared VIP).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Addresses []Address `json:"addresses,omitempty"`
	// Ports the fleet serves the Route on at those addresses: its shared
	// HTTP listener's, and its HTTPS listener's when the Route has TLS.
	// Empty on Gateway listeners (the Gateway's own ports).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=2
	Ports []RoutePort `json:"ports,omitempty"`
	// AcceptedHostnames are the hostnames the tenant owns and the fleet serves.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	AcceptedHostnames []Hostname `json:"acceptedHostnames,omitempty"`
	// Conditions: Accepted, ResolvedRefs, Programmed, with reasons such as
	// HostnameNotAllowed, HostnameConflict, InvalidBackend, SecretNotFound, SecretNotTLS.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Route is a tenant Ingress, HTTPRoute or GRPCRoute as the management cluster serves it.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=rt
// +kubebuilder:printcolumn:name="Hostnames",type=string,JSONPath=`.spec.hostnames`
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.status.addresses[0].ip`
// +kubebuilder:printcolumn:name="HTTP",type=integer,JSONPath=`.status.ports[?(@.protocol=="HTTP")].port`,description="Port of the fleet's shared HTTP listener that serves the Route"
// +kubebuilder:printcolumn:name="HTTPS",type=integer,JSONPath=`.status.ports[?(@.protocol=="HTTPS")].port`,description="Port of the fleet's shared HTTPS listener that serves the Route (with TLS)"
// +kubebuilder:printcolumn:name="Kind",type=string,JSONPath=`.spec.source.kind`,priority=1
// +kubebuilder:printcolumn:name="Source",type=string,JSONPath=`.spec.source.name`,priority=1
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="ResolvedRefs",type=string,JSONPath=`.status.conditions[?(@.type=="ResolvedRefs")].status`,description="False when a rule's Secret or backend is missing or invalid (that rule is not served)"
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].status`
// +kubebuilder:printcolumn:name="Serving",type=string,JSONPath=`.status.conditions[?(@.type=="Serving")].reason`,priority=1,description="Global names and shared hostnames: Serving, FailedOver, Standby or NotServing, from the proxies' load reports"
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.status!="True")].reason`,description="The reason of the first condition that is not True (Accepted before Programmed): empty when the object is served"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Route struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   RouteSpec   `json:"spec"`
	Status RouteStatus `json:"status,omitempty"`
}

// RouteList is a list of Routes.
// +kubebuilder:object:root=true
type RouteList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Route `json:"items"`
}

func init() { SchemeBuilder.Register(&Route{}, &RouteList{}) }
