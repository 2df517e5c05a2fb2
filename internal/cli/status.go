package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// reasonProxyRejected is manager/snapshot.ReasonProxyRejected (a NACK traced
// to the object), spelled here so the plugin does not link the manager.
const reasonProxyRejected = "ProxyRejected"

// Status prints the fleet at a glance from the management cluster.
type Status struct {
	Management genericclioptions.RESTClientGetter
	Out        io.Writer
}

// Run reads the fleet's objects and prints them.
func (o *Status) Run(ctx context.Context) error {
	c, _, err := clients(o.Management)
	if err != nil {
		return fmt.Errorf("management cluster: %w", err)
	}
	f, err := ReadFleet(ctx, c)
	if err != nil {
		return err
	}
	return f.Print(o.Out)
}

// Fleet is what status shows.
type Fleet struct {
	Fleets  []v1.ProxyFleet
	Pools   []v1.AddressPool
	Tenants []v1.Tenant
	// NotProgrammed are LoadBalancers and Routes not served, with why.
	NotProgrammed []Problem
	// Total counts the LoadBalancers and Routes.
	Total int
}

// Problem is an object that is not served and the condition saying why.
type Problem struct {
	Kind, Namespace, Name string
	Condition             metav1.Condition
}

// ReadFleet lists the fleet's objects.
func ReadFleet(ctx context.Context, c client.Client) (*Fleet, error) {
	var (
		fleets  v1.ProxyFleetList
		pools   v1.AddressPoolList
		tenants v1.TenantList
		lbs     v1.LoadBalancerList
		routes  v1.RouteList
	)
	for _, l := range []client.ObjectList{&fleets, &pools, &tenants, &lbs, &routes} {
		if err := c.List(ctx, l); err != nil {
			return nil, err
		}
	}
	f := &Fleet{Fleets: fleets.Items, Pools: pools.Items, Tenants: tenants.Items, Total: len(lbs.Items) + len(routes.Items)}
	for i := range lbs.Items {
		lb := &lbs.Items[i]
		if p, bad := notServed("LoadBalancer", &lb.ObjectMeta, lb.Status.Conditions); bad {
			f.NotProgrammed = append(f.NotProgrammed, p)
		}
	}
	for i := range routes.Items {
		r := &routes.Items[i]
		if p, bad := notServed("Route", &r.ObjectMeta, r.Status.Conditions); bad {
			f.NotProgrammed = append(f.NotProgrammed, p)
		}
	}
	slices.SortFunc(f.NotProgrammed, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Name, b.Name))
	})
	return f, nil
}

// notServed reports an object whose Programmed condition is not True, with
// the first condition that is not True (Accepted before Programmed: a
// refusal says more than "not programmed").
func notServed(kind string, om *metav1.ObjectMeta, conds []metav1.Condition) (Problem, bool) {
	p := Problem{Kind: kind, Namespace: om.Namespace, Name: om.Name}
	if meta.IsStatusConditionTrue(conds, v1.ConditionProgrammed) {
		return p, false
	}
	for _, typ := range []string{v1.ConditionAccepted, v1.ConditionResolvedRefs, v1.ConditionProgrammed} {
		if c := meta.FindStatusCondition(conds, typ); c != nil && c.Status != metav1.ConditionTrue {
			p.Condition = *c
			return p, true
		}
	}
	p.Condition = metav1.Condition{Type: v1.ConditionProgrammed, Status: metav1.ConditionUnknown, Reason: "NoStatus", Message: "the manager has not written a status yet"}
	return p, true
}

// NACKs are the objects the proxies refused.
func (f *Fleet) NACKs() []Problem {
	var out []Problem
	for _, p := range f.NotProgrammed {
		if p.Condition.Reason == reasonProxyRejected {
			out = append(out, p)
		}
	}
	return out
}

// Print writes the fleet as tables.
func (f *Fleet) Print(out io.Writer) error {
	w := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "PROXY FLEETS")
	fmt.Fprintln(w, "NAME\tVIP\tCONNECTED\tVERSION\tPROGRAMMED\tMESSAGE")
	for i := range f.Fleets {
		pf := &f.Fleets[i]
		vip := "-"
		if len(pf.Status.Addresses) > 0 {
			vip = string(pf.Status.Addresses[0].IP)
		}
		status, msg := condition(pf.Status.Conditions, v1.ConditionProgrammed)
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\n", pf.Name, vip, pf.Status.ConnectedProxies, cmp.Or(pf.Status.ConfigVersion, "-"), status, msg)
	}
	nacks := f.NACKs()
	fmt.Fprintf(w, "\nNACKS: %d objects refused by the proxies\n", len(nacks))
	if len(nacks) > 0 {
		problems(w, nacks)
	}
	fmt.Fprintf(w, "\nNOT PROGRAMMED: %d of %d LoadBalancers and Routes\n", len(f.NotProgrammed), f.Total)
	if len(f.NotProgrammed) > 0 {
		problems(w, f.NotProgrammed)
	}
	fmt.Fprintln(w, "\nADDRESS POOLS")
	fmt.Fprintln(w, "NAME\tALLOCATED\tAVAILABLE\tUSED\tREADY\tMESSAGE")
	for i := range f.Pools {
		p := &f.Pools[i]
		used := "-"
		if total := p.Status.Allocated + p.Status.Available; total > 0 {
			used = fmt.Sprintf("%d%%", p.Status.Allocated*100/total)
		}
		status, msg := condition(p.Status.Conditions, v1.ConditionReady)
		fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%s\t%s\n", p.Name, p.Status.Allocated, p.Status.Available, used, status, msg)
	}
	fmt.Fprintln(w, "\nTENANTS")
	fmt.Fprintln(w, "NAME\tPOOL\tLBS\tROUTES\tADMITTED\tREFUSED\tADDRESSES\tREADY\tMESSAGE")
	for i := range f.Tenants {
		t := &f.Tenants[i]
		status, msg := condition(t.Status.Conditions, v1.ConditionReady)
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", t.Name, t.Spec.AddressPool, t.Status.LoadBalancers, t.Status.Routes,
			t.Status.Admitted, t.Status.Refused, t.Status.Addresses, status, msg)
	}
	return w.Flush()
}

func problems(w io.Writer, ps []Problem) {
	fmt.Fprintln(w, "KIND\tNAMESPACE\tNAME\tCONDITION\tREASON\tMESSAGE")
	for _, p := range ps {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s=%s\t%s\t%s\n", p.Kind, p.Namespace, p.Name, p.Condition.Type, p.Condition.Status, p.Condition.Reason, oneLine(p.Condition.Message))
	}
}

// condition is a condition's status and message for a table ("Unknown" when absent).
func condition(conds []metav1.Condition, typ string) (string, string) {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return string(metav1.ConditionUnknown), "-"
	}
	return string(c.Status), oneLine(c.Message)
}

// oneLine keeps a message to one table cell.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "-"
	}
	return s
}
