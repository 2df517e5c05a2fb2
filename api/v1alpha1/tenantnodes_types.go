package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// TenantNodesName is the only name a TenantNodes object may have: there is one per tenant.
const TenantNodesName = "default"

// TenantNode is one node of the tenant cluster that serves NodePorts.
type TenantNode struct {
	// Name of the Node in the tenant cluster.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Addresses traffic is sent to (the node address type is chosen by a ccm flag).
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +listType=set
	Addresses []IPAddress `json:"addresses"`
	// Zone is the node's topology.kubernetes.io/zone label; traffic prefers the local zone.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Zone string `json:"zone,omitempty"`
}

// TenantNodesSpec lists the nodes of a tenant cluster.
type TenantNodesSpec struct {
	// Cluster is the tenant cluster's name as the ccm knows it.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Cluster string `json:"cluster,omitempty"`
	// Nodes that serve NodePorts (nodes labelled
	// node.kubernetes.io/exclude-from-external-load-balancers are left out by the ccm).
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=5000
	Nodes []TenantNode `json:"nodes,omitempty"`
}

// Why a node address is not served (RefusedAddress.Reason).
const (
	// RefusedOutsideNodeCIDRs: the address is in none of the Tenant's nodeCIDRs.
	RefusedOutsideNodeCIDRs = "OutsideNodeCIDRs"
	// RefusedDenied: the address is in the manager's deny-list (loopback,
	// link-local, unspecified, multicast, or what the admin added).
	RefusedDenied = "Denied"
	// RefusedAddressPool: the address belongs to an AddressPool; VIPs are never backends.
	RefusedAddressPool = "AddressPool"
	// RefusedFleetAddress: the address is one of a proxy fleet's own addresses.
	RefusedFleetAddress = "FleetAddress"
	// RefusedInvalid: the address cannot be used at all (for example it has an IPv6 zone).
	RefusedInvalid = "Invalid"
)

// ReasonNodesRefused: some node addresses of a TenantNodes are not served
// (condition Accepted=False; status.refused says which and why).
const ReasonNodesRefused = "NodesRefused"

// MaxRefusedListed caps status.refused; RefusedCount holds the full number.
const MaxRefusedListed = 100

// RefusedAddress is a node address the fleet does not send traffic to.
type RefusedAddress struct {
	// Node the address belongs to.
	Node string `json:"node"`
	// Address as the TenantNodes spec lists it.
	Address string `json:"address"`
	// Reason: OutsideNodeCIDRs, Denied, AddressPool, FleetAddress or Invalid.
	Reason string `json:"reason"`
	// Message explains the reason in words.
	// +optional
	Message string `json:"message,omitempty"`
}

// TenantNodesStatus says which node addresses the fleet serves.
type TenantNodesStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Nodes is the number of nodes the ccm reported.
	// +optional
	Nodes int32 `json:"nodes"`
	// Served is the number of node addresses traffic may be sent to.
	// +optional
	Served int32 `json:"served"`
	// RefusedCount is the number of node addresses that are not served.
	// +optional
	RefusedCount int32 `json:"refusedCount,omitempty"`
	// Refused lists (up to 100 of) the node addresses that are not served, and why.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	Refused []RefusedAddress `json:"refused,omitempty"`
	// Conditions: Accepted (False with reason NodesRefused while any address is refused).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// TenantNodes is the node set of one tenant cluster, written by its ccm. All
// LoadBalancers and Routes of the tenant refer to it, so a node change rewrites one object.
// The manager reports in status which addresses it refuses to send traffic to.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=tnodes
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.cluster`
// +kubebuilder:printcolumn:name="Nodes",type=integer,JSONPath=`.status.nodes`
// +kubebuilder:printcolumn:name="Served",type=integer,JSONPath=`.status.served`,description="Node addresses traffic may be sent to"
// +kubebuilder:printcolumn:name="Refused",type=integer,JSONPath=`.status.refusedCount`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'default'",message="there is one TenantNodes per tenant and it must be named default"
type TenantNodes struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   TenantNodesSpec   `json:"spec,omitempty"`
	Status TenantNodesStatus `json:"status,omitempty"`
}

// TenantNodesList is a list of TenantNodes.
// +kubebuilder:object:root=true
type TenantNodesList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TenantNodes `json:"items"`
}

func init() { SchemeBuilder.Register(&TenantNodes{}, &TenantNodesList{}) }
