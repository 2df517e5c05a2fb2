package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// AddressRange is a CIDR ("192.0.2.0/24"), a single address, or an inclusive
// range ("192.0.2.10-192.0.2.20") of one address family.
// +kubebuilder:validation:MaxLength=100
// +kubebuilder:validation:XValidation:rule="isCIDR(self) || isIP(self) || (self.matches('^[^-]+-[^-]+$') && isIP(self.split('-')[0].trim()) && isIP(self.split('-')[1].trim()) && ip(self.split('-')[0].trim()).family() == ip(self.split('-')[1].trim()).family())",message="must be a CIDR (192.0.2.0/24), an address, or a range of one family (192.0.2.10-192.0.2.20)"
type AddressRange string

// AddressPoolSpec lists the addresses VIPs are allocated from.
type AddressPoolSpec struct {
	// Addresses of the pool. Ranges must not overlap.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +listType=set
	Addresses []AddressRange `json:"addresses"`
	// AutoAssign: when false, only explicitly requested addresses are handed out.
	// +optional
	// +kubebuilder:default=true
	AutoAssign *bool `json:"autoAssign,omitempty"`
}

// AddressPoolStatus counts the pool's use.
type AddressPoolStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Allocated addresses.
	// +optional
	Allocated int64 `json:"allocated,omitempty"`
	// Available addresses (capped at 2^63-1 for large IPv6 pools).
	// +optional
	Available int64 `json:"available,omitempty"`
	// Conditions: Ready (False with a reason when the ranges are invalid or overlap).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AddressPool is a set of addresses the manager allocates VIPs from.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=pool
// +kubebuilder:printcolumn:name="Addresses",type=string,JSONPath=`.spec.addresses`
// +kubebuilder:printcolumn:name="Allocated",type=integer,JSONPath=`.status.allocated`
// +kubebuilder:printcolumn:name="Available",type=integer,JSONPath=`.status.available`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AddressPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AddressPoolSpec   `json:"spec"`
	Status AddressPoolStatus `json:"status,omitempty"`
}

// AddressPoolList is a list of AddressPools.
// +kubebuilder:object:root=true
type AddressPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AddressPool `json:"items"`
}

func init() { SchemeBuilder.Register(&AddressPool{}, &AddressPoolList{}) }
