package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultFleetName is the ProxyFleet the manager creates at start and tenants use by default.
const DefaultFleetName = "default"

// Exposure says how the fleet's VIPs reach the Envoy pods.
// +kubebuilder:validation:Enum=LoadBalancerService;HostNetwork;None
type Exposure string

const (
	// ExposureLoadBalancerService puts the VIPs on a Service of type LoadBalancer (MetalLB, a cloud, ...).
	ExposureLoadBalancerService Exposure = "LoadBalancerService"
	// ExposureHostNetwork runs Envoy in the host network; the VIPs are routed to the hosts.
	ExposureHostNetwork Exposure = "HostNetwork"
	// ExposureNone creates no Deployment: proxies are run elsewhere (fleetlb-proxy in tests and the demo).
	ExposureNone Exposure = "None"
)

// FleetListener is the fleet's shared HTTP or HTTPS listener.
type FleetListener struct {
	// Port the listener binds on the VIP.
	Port PortNumber `json:"port"`
}

// ProxyFleetSpec describes one Envoy fleet.
type ProxyFleetSpec struct {
	// Replicas of Envoy.
	// +optional
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Replicas *int32 `json:"replicas,omitempty"`
	// Image of Envoy.
	// +optional
	// +kubebuilder:default="envoyproxy/envoy:v1.36.2"
	// +kubebuilder:validation:MaxLength=512
	Image string `json:"image,omitempty"`
	// Resources of the Envoy container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	// HTTP is the shared plain-text listener for Routes.
	// +optional
	// +kubebuilder:default={port: 80}
	HTTP *FleetListener `json:"http,omitempty"`
	// HTTPS is the shared TLS listener for Routes (one filter chain per certificate, chosen by SNI).
	// +optional
	// +kubebuilder:default={port: 443}
	HTTPS *FleetListener `json:"https,omitempty"`
	// VIP requested for the shared HTTP/HTTPS listeners; allocated from AddressPool when empty.
	// +optional
	VIP IPAddress `json:"vip,omitempty"`
	// AddressPool the shared VIP is allocated from.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	AddressPool string `json:"addressPool,omitempty"`
	// Exposure says how VIPs reach the Envoy pods.
	// +optional
	// +kubebuilder:default=LoadBalancerService
	Exposure Exposure `json:"exposure,omitempty"`
}

// ProxyFleetStatus reports the fleet's state.
type ProxyFleetStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// ReadyReplicas of the Envoy Deployment.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
	// ConnectedProxies currently streaming xDS from this manager.
	// +optional
	ConnectedProxies int32 `json:"connectedProxies,omitempty"`
	// ConfigVersion is the newest configuration version every connected proxy acknowledged.
	// +optional
	ConfigVersion string `json:"configVersion,omitempty"`
	// Addresses of the shared HTTP/HTTPS listeners.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Addresses []Address `json:"addresses,omitempty"`
	// Conditions: Ready, Programmed.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ProxyFleet is one Envoy fleet that serves tenants' traffic.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=fleet
// +kubebuilder:printcolumn:name="VIP",type=string,JSONPath=`.status.addresses[0].ip`
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.spec.replicas`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Connected",type=integer,JSONPath=`.status.connectedProxies`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.configVersion`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ProxyFleet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ProxyFleetSpec   `json:"spec,omitempty"`
	Status ProxyFleetStatus `json:"status,omitempty"`
}

// ProxyFleetList is a list of ProxyFleets.
// +kubebuilder:object:root=true
type ProxyFleetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ProxyFleet `json:"items"`
}

func init() { SchemeBuilder.Register(&ProxyFleet{}, &ProxyFleetList{}) }
