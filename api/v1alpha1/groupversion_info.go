// Package v1alpha1 is the fleetlb.io/v1alpha1 API: what tenant clusters ask for
// (LoadBalancer, Route, TenantNodes) and what the platform admin configures
// (Tenant, AddressPool, ProxyFleet).
//
// +kubebuilder:object:generate=true
// +groupName=fleetlb.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of these types.
	GroupVersion = schema.GroupVersion{Group: "fleetlb.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
