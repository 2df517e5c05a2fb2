// Package scheme is the one runtime.Scheme the binaries and tests use: the
// core Kubernetes types, apiextensions, fleetlb.io and cert-manager's
// Certificate (written by the manager when cert-manager is installed).
package scheme

import (
	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	fleetv1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// New returns a scheme with the core types, apiextensions, fleetlb.io and cert-manager.io.
func New() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, fleetv1.AddToScheme, cmv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err) // static registrations: a failure is a programming error
		}
	}
	return s
}
