package v1alpha1

import (
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SourceKind is the kind of tenant object a LoadBalancer was made from.
// +kubebuilder:validation:Enum=Service;Gateway
type SourceKind string

const (
	// SourceService: a Service of type LoadBalancer (L4 ports).
	SourceService SourceKind = "Service"
	// SourceGateway: a Gateway API Gateway (L7 listeners on its own VIP).
	SourceGateway SourceKind = "Gateway"
)

// ServiceSource identifies the tenant object a management object was made from.
type ServiceSource struct {
	// Kind of the tenant object: a Service (ports) or a Gateway (listeners).
	// +optional
	// +kubebuilder:default=Service
	Kind SourceKind `json:"kind,omitempty"`
	// Cluster is the tenant cluster's name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Cluster string `json:"cluster"`
	// Namespace of the object in the tenant cluster.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`
	// Name of the object in the tenant cluster.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// UID of the object in the tenant cluster.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=36
	UID string `json:"uid"`
}

// Protocol of an L4 port.
// +kubebuilder:validation:Enum=TCP;UDP
type Protocol string

const (
	ProtocolTCP Protocol = "TCP"
	ProtocolUDP Protocol = "UDP"
)

// LoadBalancerPort is one port of the VIP and the NodePort behind it.
type LoadBalancerPort struct {
	// Name of the Service port.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name,omitempty"`
	// Port on the VIP.
	Port PortNumber `json:"port"`
	// Protocol: TCP or UDP.
	// +kubebuilder:default=TCP
	Protocol Protocol `json:"protocol"`
	// NodePort on the tenant nodes that serves this port.
	NodePort PortNumber `json:"nodePort"`
}

// SessionAffinity keeps a client on one backend.
// +kubebuilder:validation:Enum=None;ClientIP
type SessionAffinity string

const (
	SessionAffinityNone     SessionAffinity = "None"
	SessionAffinityClientIP SessionAffinity = "ClientIP"
)

// HealthCheckType is how backends are probed.
// +kubebuilder:validation:Enum=TCP;HTTP
type HealthCheckType string

const (
	HealthCheckTCP  HealthCheckType = "TCP"
	HealthCheckHTTP HealthCheckType = "HTTP"
)

// HealthCheck probes every node:nodePort of the backend.
type HealthCheck struct {
	// Type: TCP connects; HTTP expects a 2xx (or ExpectedStatuses) on Path.
	// +kubebuilder:default=TCP
	Type HealthCheckType `json:"type"`
	// NodePort to probe instead of the traffic port (externalTrafficPolicy: Local uses the healthCheckNodePort).
	// +optional
	NodePort *PortNumber `json:"nodePort,omitempty"`
	// Path of an HTTP check.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/')",message="health check path must start with /"
	Path string `json:"path,omitempty"`
	// ExpectedStatuses of an HTTP check; default 200-299.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +listType=set
	ExpectedStatuses []int32 `json:"expectedStatuses,omitempty"`
	// Interval between checks; at least 1s (the fleet probes every node of
	// every backend at this rate).
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="health check interval must be at least 1s"
	Interval *metav1.Duration `json:"interval,omitempty"`
	// Timeout of one check; more than 0.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="health check timeout must be more than 0s"
	Timeout *metav1.Duration `json:"timeout,omitempty"`
	// UnhealthyThreshold consecutive failures mark a node unhealthy.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	UnhealthyThreshold *int32 `json:"unhealthyThreshold,omitempty"`
	// HealthyThreshold consecutive successes mark it healthy again.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	HealthyThreshold *int32 `json:"healthyThreshold,omitempty"`
}

// ProxyProtocol version sent to the backends.
// +kubebuilder:validation:Enum=v1;v2
type ProxyProtocol string

const (
	ProxyProtocolV1 ProxyProtocol = "v1"
	ProxyProtocolV2 ProxyProtocol = "v2"
)

// ListenerProtocol is what a Gateway listener serves.
// +kubebuilder:validation:Enum=HTTP;HTTPS;TLS
type ListenerProtocol string

const (
	ListenerHTTP  ListenerProtocol = "HTTP"
	ListenerHTTPS ListenerProtocol = "HTTPS"
	// ListenerTLS passes TLS through by SNI (TLSRoute).
	ListenerTLS ListenerProtocol = "TLS"
)

// GatewayListener is one listener of a tenant Gateway on the Gateway's own VIP.
type GatewayListener struct {
	// Name of the Gateway listener (what a route's sectionName names).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
	// Port on the VIP.
	Port PortNumber `json:"port"`
	// Protocol: HTTP, HTTPS (TLS terminated with the certificates) or TLS (passed through by SNI).
	Protocol ListenerProtocol `json:"protocol"`
	// Hostname the listener serves; every hostname when unset.
	// +optional
	Hostname Hostname `json:"hostname,omitempty"`
	// CertificateSecrets are kubernetes.io/tls Secrets in this namespace
	// offered on an HTTPS listener (the first usable one is served).
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	CertificateSecrets []string `json:"certificateSecrets,omitempty"`
}

// LoadBalancerSpec is a tenant's load balancer: a VIP whose ports forward to
// NodePorts (source kind Service), or a Gateway's VIP with its L7 listeners
// (source kind Gateway), to which Routes attach.
// +kubebuilder:validation:XValidation:rule="!has(self.healthCheck) || self.healthCheck.type != 'HTTP' || has(self.healthCheck.path)",message="an HTTP health check needs a path"
// +kubebuilder:validation:XValidation:rule="(has(self.source.kind) && self.source.kind == 'Gateway') ? (!has(self.ports) || size(self.ports) == 0) : (has(self.ports) && size(self.ports) > 0 && (!has(self.listeners) || size(self.listeners) == 0))",message="a Service's load balancer has ports and no listeners; a Gateway's has listeners and no ports",fieldPath=".ports"
// +kubebuilder:validation:XValidation:rule="!has(self.source.kind) || self.source.kind != 'Gateway' || !has(self.global)",message="a Gateway's load balancer has its own address: no global options",fieldPath=".global"
type LoadBalancerSpec struct {
	// Source is the tenant Service this was made from. It cannot change.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="source is immutable"
	Source ServiceSource `json:"source"`
	// Ports of the VIP; port and protocol are unique together. At least one
	// for a Service; none for a Gateway.
	// +optional
	// +kubebuilder:validation:MaxItems=100
	// +listType=map
	// +listMapKey=port
	// +listMapKey=protocol
	Ports []LoadBalancerPort `json:"ports,omitempty"`
	// Listeners of a Gateway on the VIP; Routes attach to them by name.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +listType=map
	// +listMapKey=name
	Listeners []GatewayListener `json:"listeners,omitempty"`
	// LoadBalancerIP requests a specific VIP from the tenant's pool.
	// +optional
	LoadBalancerIP IPAddress `json:"loadBalancerIP,omitempty"`
	// SourceRanges allowed to connect; empty allows everyone.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +listType=set
	SourceRanges []CIDR `json:"sourceRanges,omitempty"`
	// SessionAffinity ClientIP keeps a client on one node.
	// +optional
	// +kubebuilder:default=None
	SessionAffinity SessionAffinity `json:"sessionAffinity,omitempty"`
	// SessionAffinityTimeoutSeconds bounds how long an idle client stays pinned.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=86400
	SessionAffinityTimeoutSeconds *int32 `json:"sessionAffinityTimeoutSeconds,omitempty"`
	// HealthCheck of the backends; TCP on the traffic port when unset.
	// +optional
	HealthCheck *HealthCheck `json:"healthCheck,omitempty"`
	// ProxyProtocol sends a PROXY header of this version to the backends.
	// +optional
	ProxyProtocol ProxyProtocol `json:"proxyProtocol,omitempty"`
	// Global joins this LoadBalancer with others of the tenant group under one VIP.
	// +optional
	Global *GlobalOptions `json:"global,omitempty"`
}

// LoadBalancerStatus reports what the fleet serves.
type LoadBalancerStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Addresses the LoadBalancer is served on.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Addresses []Address `json:"addresses,omitempty"`
	// Ports is spec.ports for kubectl ("80/TCP,53/UDP"; a printer column
	// cannot join a list), written by the manager with the rest of status.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	Ports string `json:"ports,omitempty"`
	// Conditions: Accepted, Programmed.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// LoadBalancer is a tenant Service of type LoadBalancer as the management cluster serves it.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=lb
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.status.addresses[0].ip`
// +kubebuilder:printcolumn:name="Ports",type=string,JSONPath=`.status.ports`,description="port/protocol of every port"
// +kubebuilder:printcolumn:name="Source",type=string,JSONPath=`.spec.source.name`,priority=1
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.source.cluster`,priority=1
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].status`
// +kubebuilder:printcolumn:name="Serving",type=string,JSONPath=`.status.conditions[?(@.type=="Serving")].reason`,priority=1,description="Global names and shared hostnames: Serving, FailedOver, Standby or NotServing, from the proxies' load reports"
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.status!="True")].reason`,description="The reason of the first condition that is not True (Accepted before Programmed): empty when the object is served"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type LoadBalancer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   LoadBalancerSpec   `json:"spec"`
	Status LoadBalancerStatus `json:"status,omitempty"`
}

// LoadBalancerList is a list of LoadBalancers.
// +kubebuilder:object:root=true
type LoadBalancerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []LoadBalancer `json:"items"`
}

func init() { SchemeBuilder.Register(&LoadBalancer{}, &LoadBalancerList{}) }

// PortsSummary is ports as kubectl shows them: "80/TCP,53/UDP".
func PortsSummary(ports []LoadBalancerPort) string {
	parts := make([]string, len(ports))
	for i, p := range ports {
		parts[i] = strconv.Itoa(int(p.Port)) + "/" + string(p.Protocol)
	}
	return strings.Join(parts, ",")
}
