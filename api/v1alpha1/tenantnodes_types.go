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

// TenantNodes is the node set of one tenant cluster, written by its ccm. All
// LoadBalancers and Routes of the tenant refer to it, so a node change rewrites one object.
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=tnodes
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.cluster`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'default'",message="there is one TenantNodes per tenant and it must be named default"
type TenantNodes struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec TenantNodesSpec `json:"spec,omitempty"`
}

// TenantNodesList is a list of TenantNodes.
// +kubebuilder:object:root=true
type TenantNodesList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TenantNodes `json:"items"`
}

func init() { SchemeBuilder.Register(&TenantNodes{}, &TenantNodesList{}) }
