package gateway

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

const kindTLSRoute gwv1.Kind = "TLSRoute"

// tlsOps adapts TLSRoute (passthrough on a Gateway's TLS listeners).
var tlsOps = kindOps{
	kind: kindTLSRoute, source: v1.SourceTLSRoute, prefix: "tlsroute",
	newObj:  func() client.Object { return &gwv1.TLSRoute{} },
	newList: func() client.ObjectList { return &gwv1.TLSRouteList{} },
	common:  func(o client.Object) *gwv1.CommonRouteSpec { return &o.(*gwv1.TLSRoute).Spec.CommonRouteSpec },
	hosts:   func(o client.Object) []gwv1.Hostname { return o.(*gwv1.TLSRoute).Spec.Hostnames },
	status:  func(o client.Object) *gwv1.RouteStatus { return &o.(*gwv1.TLSRoute).Status.RouteStatus },
	refs: func(o client.Object) []gwv1.BackendObjectReference {
		var out []gwv1.BackendObjectReference
		for _, r := range o.(*gwv1.TLSRoute).Spec.Rules {
			for _, b := range r.BackendRefs {
				out = append(out, b.BackendObjectReference)
			}
		}
		return out
	},
	rules: func(o client.Object, res backendResolver) ([]v1.RouteRule, []problem) {
		return tlsRules(&o.(*gwv1.TLSRoute).Spec, res)
	},
}

// tlsInstalled reports whether the tenant cluster serves TLSRoute (v1).
func tlsInstalled(mgr ctrl.Manager) (bool, error) {
	_, err := mgr.GetRESTMapper().RESTMapping(gwv1.SchemeGroupVersion.WithKind("TLSRoute").GroupKind(), gwv1.SchemeGroupVersion.Version)
	if meta.IsNoMatchError(err) {
		return false, nil
	}
	return err == nil, err
}

// tlsRules maps a TLSRoute's rules: their backends receive the connection
// as it came (TCP). The fleet forwards each SNI to one backend: the first of
// the first rule that has one.
func tlsRules(spec *gwv1.TLSRouteSpec, resolve backendResolver) ([]v1.RouteRule, []problem) {
	var problems []problem
	var out []v1.RouteRule
	for ri := range spec.Rules {
		rule := &spec.Rules[ri]
		what := fmt.Sprintf("rule %d", ri)
		if rule.Name != nil {
			what = fmt.Sprintf("rule %q", *rule.Name)
		}
		var backends []v1.RouteBackend
		for _, b := range rule.BackendRefs {
			rb, p := resolve(b.BackendObjectReference, b.Weight, v1.BackendTCP)
			if p != nil {
				p.msg = what + ": " + p.msg
				problems = append(problems, *p)
			}
			if rb != nil {
				backends = append(backends, *rb)
			}
		}
		if len(backends) == 0 {
			continue
		}
		if len(backends) > maxBackends {
			backends = backends[:maxBackends]
		}
		r := v1.RouteRule{Backends: backends}
		if rule.Name != nil && len(*rule.Name) <= 63 {
			r.Name = string(*rule.Name)
		}
		out = append(out, r)
	}
	if len(out) > maxRules {
		out = out[:maxRules]
	}
	return out, problems
}
