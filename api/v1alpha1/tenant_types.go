package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// TenantSpec describes one tenant cluster and what it may use.
type TenantSpec struct {
	// Group joins tenants that may serve the same hostnames and global names
	// (for example the clusters of one team in several regions). Empty means the
	// tenant is a group of its own.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="group must be a DNS label: lower-case letters, digits and '-'"
	Group string `json:"group,omitempty"`
	// Hostnames the tenant may claim for Routes: exact names or wildcards like
	// *.team-a.example.com (which allow any name under that suffix).
	// An empty list allows no L7 hostnames.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	Hostnames []Hostname `json:"hostnames,omitempty"`
	// AddressPool the tenant's LoadBalancer VIPs are allocated from.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	AddressPool string `json:"addressPool"`
	// Fleet is the ProxyFleet that serves this tenant's traffic.
	// +optional
	// +kubebuilder:default=default
	// +kubebuilder:validation:MaxLength=253
	Fleet string `json:"fleet,omitempty"`
	// Limits cap what the tenant may create; every one is finite (see TenantLimits for the defaults).
	// +optional
	// +kubebuilder:default={}
	Limits TenantLimits `json:"limits,omitempty"`
	// DefaultIssuer is the cert-manager issuer used for TLS hostnames that have
	// no Secret and name no issuer themselves.
	// +optional
	DefaultIssuer *IssuerRef `json:"defaultIssuer,omitempty"`
	// NodeCIDRs are where the tenant's nodes may be: a node address outside
	// every one of them is never sent traffic (and is reported on TenantNodes).
	// An empty list allows no node, so a tenant has no backends until an
	// admin says where its nodes are. The manager's deny-list (loopback,
	// link-local, address pools, the fleets' own addresses, ...) applies on top.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	NodeCIDRs []CIDR `json:"nodeCIDRs,omitempty"`
	// NodePortRange holds every node port the tenant's LoadBalancers and
	// Routes may send traffic to (the tenant cluster's service-node-port-range).
	// +optional
	// +kubebuilder:default={min: 30000, max: 32767}
	NodePortRange *PortRange `json:"nodePortRange,omitempty"`
}

// PortRange is an inclusive range of ports.
// +kubebuilder:validation:XValidation:rule="self.min <= self.max",message="min must not be greater than max"
type PortRange struct {
	// Min is the first port of the range.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Min int32 `json:"min"`
	// Max is the last port of the range.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Max int32 `json:"max"`
}

// The node port range of a Tenant that sets none (Kubernetes' default service-node-port-range).
const (
	DefaultNodePortMin = 30000
	DefaultNodePortMax = 32767
)

// ReasonNodePortNotAllowed: a LoadBalancer or Route backend uses a node port
// outside its Tenant's nodePortRange.
const ReasonNodePortNotAllowed = "NodePortNotAllowed"

// ConditionHostnamesValid on a Tenant is False (ReasonPublicSuffix) while
// spec.hostnames holds a pattern that is a public suffix or a wildcard
// directly under one (*.com, co.uk, *.github.io): such a pattern allows
// nothing. The Tenant stays Ready; its other patterns work.
const (
	ConditionHostnamesValid = "HostnamesValid"
	ReasonHostnamesValid    = "HostnamesValid"
	ReasonPublicSuffix      = "PublicSuffix"
)

// Default limits: what a Tenant gets when spec.limits leaves a field out
// (the CRD writes them; the manager applies the same numbers to objects
// stored before these fields existed). Each bounds one tenant's share of a
// resource every tenant of the fleet depends on.
const (
	DefaultMaxLoadBalancers       = 1000
	DefaultMaxRoutes              = 1000
	DefaultMaxAddresses           = 1000
	DefaultMaxHostnames           = 1000
	DefaultMaxNodes               = 1000
	DefaultMaxEndpointsPerBackend = 1000
	// DefaultMaxRouteConfigBytes (1 MiB) keeps a tenant's virtual hosts to a
	// quarter of the 4 MiB gRPC message a proxy accepts by default.
	DefaultMaxRouteConfigBytes = 1 << 20
)

// TenantLimits cap a tenant's use of shared resources. Every limit is
// finite: a field left out gets its default. What is over a limit is refused
// (the newest objects first) with reason LimitExceeded naming the limit.
type TenantLimits struct {
	// MaxLoadBalancers is the number of LoadBalancer objects admitted (default 1000).
	// +optional
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=0
	MaxLoadBalancers *int32 `json:"maxLoadBalancers,omitempty"`
	// MaxRoutes is the number of Route objects admitted (default 1000).
	// +optional
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=0
	MaxRoutes *int32 `json:"maxRoutes,omitempty"`
	// MaxAddresses is the number of VIPs the tenant may hold (default 1000).
	// LoadBalancers joined by a global name share one.
	// +optional
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=0
	MaxAddresses *int32 `json:"maxAddresses,omitempty"`
	// MaxHostnames is the number of distinct hostnames accepted across the
	// tenant's Routes (default 1000).
	// +optional
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=0
	MaxHostnames *int32 `json:"maxHostnames,omitempty"`
	// MaxNodes is the number of TenantNodes entries served (default 1000);
	// nodes beyond it (by name) get no traffic.
	// +optional
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=0
	MaxNodes *int32 `json:"maxNodes,omitempty"`
	// MaxEndpointsPerBackend is the number of node address × port endpoints
	// one backend of the tenant gets (default 1000); addresses beyond it (by
	// node name) get no traffic.
	// +optional
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=0
	MaxEndpointsPerBackend *int32 `json:"maxEndpointsPerBackend,omitempty"`
	// MaxRouteConfigBytes is the tenant's share of the fleet's route
	// configuration: the encoded size of the virtual hosts its Routes make
	// (default 1048576, 1 MiB). A Route that would go beyond it is refused,
	// newest first.
	// +optional
	// +kubebuilder:default=1048576
	// +kubebuilder:validation:Minimum=0
	MaxRouteConfigBytes *int32 `json:"maxRouteConfigBytes,omitempty"`
}

func limitOr(v *int32, def int) int {
	if v == nil {
		return def
	}
	return int(*v)
}

// LoadBalancers is MaxLoadBalancers, or its default when unset.
func (l *TenantLimits) LoadBalancers() int {
	return limitOr(l.MaxLoadBalancers, DefaultMaxLoadBalancers)
}

// Routes is MaxRoutes, or its default when unset.
func (l *TenantLimits) Routes() int { return limitOr(l.MaxRoutes, DefaultMaxRoutes) }

// Addresses is MaxAddresses, or its default when unset.
func (l *TenantLimits) Addresses() int { return limitOr(l.MaxAddresses, DefaultMaxAddresses) }

// Hostnames is MaxHostnames, or its default when unset.
func (l *TenantLimits) Hostnames() int { return limitOr(l.MaxHostnames, DefaultMaxHostnames) }

// Nodes is MaxNodes, or its default when unset.
func (l *TenantLimits) Nodes() int { return limitOr(l.MaxNodes, DefaultMaxNodes) }

// EndpointsPerBackend is MaxEndpointsPerBackend, or its default when unset.
func (l *TenantLimits) EndpointsPerBackend() int {
	return limitOr(l.MaxEndpointsPerBackend, DefaultMaxEndpointsPerBackend)
}

// RouteConfigBytes is MaxRouteConfigBytes, or its default when unset.
func (l *TenantLimits) RouteConfigBytes() int {
	return limitOr(l.MaxRouteConfigBytes, DefaultMaxRouteConfigBytes)
}

// TenantStatus is what the manager set up for the tenant.
type TenantStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Namespace in the management cluster that holds the tenant's objects (tenant-<name>).
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// KubeconfigSecret is the Secret in Namespace with the kubeconfig for the tenant's ccm.
	// +optional
	KubeconfigSecret string `json:"kubeconfigSecret,omitempty"`
	// LoadBalancers admitted.
	// +optional
	LoadBalancers int32 `json:"loadBalancers,omitempty"`
	// Routes admitted.
	// +optional
	Routes int32 `json:"routes,omitempty"`
	// Admitted LoadBalancers and Routes (Accepted=True).
	// +optional
	Admitted int32 `json:"admitted,omitempty"`
	// Refused LoadBalancers and Routes (Accepted=False); each says why in its own conditions.
	// +optional
	Refused int32 `json:"refused,omitempty"`
	// Addresses held.
	// +optional
	Addresses int32 `json:"addresses,omitempty"`
	// Conditions: Ready; HostnamesValid (False with PublicSuffix names the
	// patterns of spec.hostnames that allow nothing).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// HostnameClaims record since when the tenant claims each hostname its
	// Routes may serve. Written by the manager (the tenant cannot), they give
	// a claim its age across a delete and re-create of its Route: between
	// tenants of different groups the oldest claim wins.
	// +optional
	// +listType=map
	// +listMapKey=hostname
	HostnameClaims []HostnameClaim `json:"hostnameClaims,omitempty"`
}

// HostnameClaim is one hostname a tenant claims (or claimed until recently).
type HostnameClaim struct {
	// Hostname claimed: an exact name or a wildcard.
	// +kubebuilder:validation:MaxLength=253
	Hostname string `json:"hostname"`
	// Since is when the manager first saw a Route of the tenant claim it.
	Since metav1.Time `json:"since"`
	// Released is when the last Route claiming it went away. The claim
	// still holds (and keeps its age) for a grace period after it.
	// +optional
	Released *metav1.Time `json:"released,omitempty"`
}

// Tenant is a tenant cluster admitted to the fleet.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=tn
// +kubebuilder:printcolumn:name="Group",type=string,JSONPath=`.spec.group`
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.status.namespace`
// +kubebuilder:printcolumn:name="Pool",type=string,JSONPath=`.spec.addressPool`
// +kubebuilder:printcolumn:name="LBs",type=integer,JSONPath=`.status.loadBalancers`
// +kubebuilder:printcolumn:name="Routes",type=integer,JSONPath=`.status.routes`
// +kubebuilder:printcolumn:name="Admitted",type=integer,JSONPath=`.status.admitted`,description="LoadBalancers and Routes admitted (Accepted=True)"
// +kubebuilder:printcolumn:name="Refused",type=integer,JSONPath=`.status.refused`,description="LoadBalancers and Routes refused (Accepted=False): kubectl get lb,routes -n <namespace> shows why"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.status!="True")].reason`,description="Why the Tenant is not Ready (PoolNotFound, SetupFailed), or PublicSuffix when a hostname pattern allows nothing (HostnamesValid=False): empty when all is well"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Tenant struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   TenantSpec   `json:"spec"`
	Status TenantStatus `json:"status,omitempty"`
}

// TenantList is a list of Tenants.
// +kubebuilder:object:root=true
type TenantList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Tenant `json:"items"`
}

func init() { SchemeBuilder.Register(&Tenant{}, &TenantList{}) }
