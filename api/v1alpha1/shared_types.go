package v1alpha1

// Annotations and labels read on tenant objects and written on management objects.
const (
	// AnnotationGlobalName joins LoadBalancers of one tenant group into one global VIP.
	AnnotationGlobalName = "fleetlb.io/global-name"
	// AnnotationStrategy picks how a global name or shared hostname spreads over clusters.
	AnnotationStrategy = "fleetlb.io/strategy"
	// AnnotationWeight is this cluster's weight under the weighted strategy.
	AnnotationWeight = "fleetlb.io/weight"
	// AnnotationPriority is this cluster's priority under the failover strategy (lower first).
	AnnotationPriority = "fleetlb.io/priority"
	// AnnotationProxyProtocol asks for a PROXY protocol header ("v1" or "v2") towards the backends.
	AnnotationProxyProtocol = "fleetlb.io/proxy-protocol"
	// AnnotationLoadBalancerIP requests a specific VIP (spec.loadBalancerIP is deprecated upstream).
	AnnotationLoadBalancerIP = "fleetlb.io/load-balancer-ip"

	// LabelTenant names the Tenant that owns a management-cluster object.
	LabelTenant = "fleetlb.io/tenant"
	// LabelFleet names the ProxyFleet an object is served by.
	LabelFleet = "fleetlb.io/fleet"

	// FinalizerAddressRelease holds a LoadBalancer until the manager has put
	// its address back in the pool. The ccm sets it when it creates the
	// LoadBalancer (admission then writes only status); admission adds it to
	// one created without it. A tenant may not remove it.
	FinalizerAddressRelease = "fleetlb.io/address-release"
)

// Condition types.
const (
	// ConditionAccepted: the object passed admission (validation, ownership, limits, IPAM).
	ConditionAccepted = "Accepted"
	// ConditionProgrammed: the fleet has acknowledged a configuration that contains the object.
	ConditionProgrammed = "Programmed"
	// ConditionResolvedRefs: every Secret and backend the object references was found and usable.
	ConditionResolvedRefs = "ResolvedRefs"
	// ConditionReady: a Tenant, AddressPool or ProxyFleet is fully set up.
	ConditionReady = "Ready"
	// ConditionServing: on a LoadBalancer or Route of a global name or shared
	// hostname, whether this tenant cluster takes its traffic (as the
	// proxies' load reports say); absent until traffic was reported.
	ConditionServing = "Serving"
)

// Condition reasons.
const (
	ReasonAccepted            = "Accepted"
	ReasonProgrammed          = "Programmed"
	ReasonPending             = "Pending"
	ReasonResolvedRefs        = "ResolvedRefs"
	ReasonReady               = "Ready"
	ReasonInvalidSpec         = "InvalidSpec"
	ReasonHostnameNotAllowed  = "HostnameNotAllowed"
	ReasonHostnameConflict    = "HostnameConflict"
	ReasonInvalidBackend      = "InvalidBackend"
	ReasonSecretNotFound      = "SecretNotFound"
	ReasonSecretNotTLS        = "SecretNotTLS"
	ReasonAddressNotAvailable = "AddressNotAvailable"
	ReasonAddressInUse        = "AddressInUse"
	ReasonPoolExhausted       = "PoolExhausted"
	ReasonPoolNotFound        = "PoolNotFound"
	ReasonLimitExceeded       = "LimitExceeded"
	ReasonPortConflict        = "PortConflict"
	ReasonFleetNotFound       = "FleetNotFound"
	ReasonNoProxies           = "NoProxiesConnected"
	ReasonTenantNotFound      = "TenantNotFound"
	ReasonServing             = "Serving"
	ReasonFailedOver          = "FailedOver" // a failover cluster of higher priority number serves instead
	ReasonStandby             = "Standby"    // a cluster of lower priority number serves; this one waits
	ReasonNotServing          = "NotServing" // other clusters serve (roundRobin/weighted: weight 0 or backends down)
)

// Hostname is a DNS name, or a wildcard of the form *.example.com that
// matches exactly one more label.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=253
// +kubebuilder:validation:XValidation:rule="self.matches('^([*][.])?[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="hostname must be a lower-case DNS name or a wildcard like *.example.com"
type Hostname string

// PortNumber is a TCP or UDP port.
// +kubebuilder:validation:Minimum=1
// +kubebuilder:validation:Maximum=65535
type PortNumber int32

// IPAddress is an IPv4 or IPv6 address.
// +kubebuilder:validation:MaxLength=45
// +kubebuilder:validation:XValidation:rule="isIP(self)",message="must be an IPv4 or IPv6 address"
type IPAddress string

// CIDR is an IP prefix such as 10.0.0.0/8 or fd00::/64.
// +kubebuilder:validation:MaxLength=49
// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="must be a CIDR such as 192.0.2.0/24"
type CIDR string

// Strategy spreads one global name or shared hostname over the tenant clusters that serve it.
// +kubebuilder:validation:Enum=roundRobin;weighted;failover
type Strategy string

const (
	// StrategyRoundRobin gives every healthy cluster an equal share.
	StrategyRoundRobin Strategy = "roundRobin"
	// StrategyWeighted shares by each cluster's weight.
	StrategyWeighted Strategy = "weighted"
	// StrategyFailover sends everything to the lowest priority that is healthy.
	StrategyFailover Strategy = "failover"
)

// GlobalOptions make one object part of a multi-cluster load balancer shared by
// the clusters of one tenant group.
type GlobalOptions struct {
	// Name joins LoadBalancers of the same tenant group into one VIP
	// (from the annotation fleetlb.io/global-name). Routes are joined by hostname and leave it empty.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="global name must be a DNS label: lower-case letters, digits and '-'"
	Name string `json:"name,omitempty"`
	// Strategy across clusters. Defaults to roundRobin.
	// +optional
	// +kubebuilder:default=roundRobin
	Strategy Strategy `json:"strategy,omitempty"`
	// Weight of this cluster under the weighted strategy.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	Weight *int32 `json:"weight,omitempty"`
	// Priority of this cluster under the failover strategy; 0 is tried first.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=127
	Priority *int32 `json:"priority,omitempty"`
}

// IPMode says how traffic to an address reaches the backends (as core/v1 LoadBalancerIngress.ipMode).
// +kubebuilder:validation:Enum=VIP;Proxy
type IPMode string

const (
	IPModeVIP   IPMode = "VIP"
	IPModeProxy IPMode = "Proxy"
)

// Address is an address the fleet serves an object on.
type Address struct {
	// IP is the virtual IP.
	IP IPAddress `json:"ip"`
	// IPMode is Proxy: traffic is proxied, not delivered with the VIP as destination.
	// +optional
	IPMode IPMode `json:"ipMode,omitempty"`
}

// IssuerRef names a cert-manager issuer.
type IssuerRef struct {
	// Kind is Issuer (in the tenant namespace) or ClusterIssuer.
	// +kubebuilder:validation:Enum=Issuer;ClusterIssuer
	// +kubebuilder:default=ClusterIssuer
	Kind string `json:"kind,omitempty"`
	// Name of the issuer.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// The ccm's management kubeconfig: the manager writes it into the tenant
// namespace and renews it; the ccm follows it (contract between the two).
const (
	// KubeconfigSecretName is the Secret with the ccm's kubeconfig.
	KubeconfigSecretName = "fleetlb-ccm-kubeconfig"
	// KubeconfigKey is the key of the kubeconfig in that Secret.
	KubeconfigKey = "kubeconfig"
	// AnnotationTokenExpires on that Secret says when its token expires (RFC 3339).
	AnnotationTokenExpires = "fleetlb.io/token-expires"
)
