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
	// Limits cap what the tenant may create.
	// +optional
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

// TenantLimits cap a tenant's use of shared resources. Unset means no limit.
type TenantLimits struct {
	// MaxLoadBalancers is the number of LoadBalancer objects admitted.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxLoadBalancers *int32 `json:"maxLoadBalancers,omitempty"`
	// MaxRoutes is the number of Route objects admitted.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxRoutes *int32 `json:"maxRoutes,omitempty"`
	// MaxAddresses is the number of VIPs the tenant may hold.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxAddresses *int32 `json:"maxAddresses,omitempty"`
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
	// Addresses held.
	// +optional
	Addresses int32 `json:"addresses,omitempty"`
	// Conditions: Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
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
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
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
