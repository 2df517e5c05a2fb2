// Package cli is the kubectl-fleetlb plugin: `tenant add` onboards a tenant
// cluster in one command (the Tenant in the management cluster, the ccm's
// kubeconfig and the ccm itself in the tenant cluster), and `status` shows the
// fleet at a glance. cmd/kubectl-fleetlb only wires its flags.
package cli

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/dynamic"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
)

// TenantAdd onboards one tenant cluster. Every step is idempotent: running
// it again with the same flags changes nothing and succeeds.
type TenantAdd struct {
	// Name of the Tenant (and, by default, of the tenant cluster).
	Name string
	// Spec fields of the Tenant. They are applied as the whole of what the
	// plugin manages: a flag left out on a later run removes its field.
	Hostnames, NodeCIDRs []string
	Pool, Group          string
	// ClusterName is the ccm's --cluster-name; Name when empty.
	ClusterName string
	// Manifest is the ccm's install manifest; the compiled-in one when empty.
	Manifest string
	// Image replaces the ccm's image in the manifest when set.
	Image string
	// Timeout bounds each wait (the Tenant Ready, the ccm reporting).
	Timeout time.Duration
	// Management is the management cluster (kubectl's current context and
	// flags); Tenant is the tenant cluster (--tenant-kubeconfig).
	Management, Tenant genericclioptions.RESTClientGetter
	Out                io.Writer
}

// StepError names the step of `tenant add` that failed.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return fmt.Sprintf("step %q failed: %v", e.Step, e.Err) }
func (e *StepError) Unwrap() error { return e.Err }

// The steps of tenant add, in order.
const (
	stepTenant     = "apply the Tenant"
	stepReady      = "wait for the Tenant to be Ready"
	stepKubeconfig = "copy the ccm kubeconfig into the tenant cluster"
	stepInstall    = "install the ccm"
	stepReport     = "wait for the ccm to report its nodes"
)

var steps = []string{stepTenant, stepReady, stepKubeconfig, stepInstall, stepReport}

func (o *TenantAdd) printStep(step, format string, args ...any) {
	n := 0
	for i, s := range steps {
		if s == step {
			n = i + 1
		}
	}
	fmt.Fprintf(o.Out, "[%d/%d] %s: %s\n", n, len(steps), step, fmt.Sprintf(format, args...))
}

// Run onboards the tenant, printing each step.
func (o *TenantAdd) Run(ctx context.Context) error {
	if o.Name == "" || o.Pool == "" || o.Management == nil || o.Tenant == nil {
		return errors.New("a tenant name, --pool and --tenant-kubeconfig are required")
	}
	if o.ClusterName == "" {
		o.ClusterName = o.Name
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	// Read the manifest first: a bad --manifest fails before anything is written.
	manifest, err := loadCCMManifest(o.Manifest, o.ClusterName, o.Image)
	if err != nil {
		return &StepError{stepInstall, fmt.Errorf("reading the ccm manifest: %w", err)}
	}
	mgmt, mgmtApply, err := clients(o.Management)
	if err != nil {
		return fmt.Errorf("management cluster: %w", err)
	}
	_, tenantApply, err := clients(o.Tenant)
	if err != nil {
		return fmt.Errorf("tenant cluster (--tenant-kubeconfig): %w", err)
	}

	res, err := mgmtApply.apply(ctx, o.tenantObject())
	if err != nil {
		return &StepError{stepTenant, err}
	}
	o.printStep(stepTenant, "tenant %s %s", o.Name, res)

	ns, err := o.waitReady(ctx, mgmt)
	if err != nil {
		return &StepError{stepReady, err}
	}
	o.printStep(stepReady, "tenant %s is Ready (namespace %s)", o.Name, ns)

	if err := o.copyKubeconfig(ctx, mgmt, tenantApply, manifest, ns); err != nil {
		return &StepError{stepKubeconfig, err}
	}

	changed := 0
	for _, u := range manifest.objects {
		if u.GetKind() == "Namespace" && u.GetName() == manifest.secret.Namespace {
			continue // applied with the Secret
		}
		res, err := tenantApply.apply(ctx, u)
		if err != nil {
			return &StepError{stepInstall, err}
		}
		if res != unchanged {
			changed++
			o.printStep(stepInstall, "%s %s %s", u.GetKind(), objectName(u), res)
		}
	}
	o.printStep(stepInstall, "%d objects applied, %d changed (cluster name %s)", len(manifest.objects), changed, o.ClusterName)

	nodes, err := o.waitReport(ctx, mgmt, ns, manifest.deployment)
	if err != nil {
		return &StepError{stepReport, err}
	}
	o.printStep(stepReport, "the ccm of cluster %s reported %d nodes (%d served, %d refused)",
		o.ClusterName, len(nodes.Spec.Nodes), nodes.Status.Served, nodes.Status.RefusedCount)
	if nodes.Status.RefusedCount > 0 {
		fmt.Fprintf(o.Out, "warning: %d node addresses are refused (outside --node-cidrs or denied): kubectl get tenantnodes -n %s -o yaml\n",
			nodes.Status.RefusedCount, ns)
	}
	fmt.Fprintf(o.Out, "tenant %s is onboarded\n", o.Name)
	return nil
}

// clients connects to a cluster: a typed client that can watch (fleetlb.io
// and core types) and a server-side applier for any kind.
func clients(g genericclioptions.RESTClientGetter) (client.WithWatch, *applier, error) {
	cfg, err := g.ToRESTConfig()
	if err != nil {
		return nil, nil, err
	}
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, nil, err
	}
	if err := v1.AddToScheme(s); err != nil {
		return nil, nil, err
	}
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: s})
	if err != nil {
		return nil, nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	mapper, err := g.ToRESTMapper()
	if err != nil {
		return nil, nil, err
	}
	return c, &applier{dyn: dyn, mapper: mapper}, nil
}

// tenantObject is the Tenant as the flags describe it, for server-side apply:
// only the fields the plugin manages.
func (o *TenantAdd) tenantObject() *unstructured.Unstructured {
	spec := map[string]any{"addressPool": o.Pool}
	if len(o.Hostnames) > 0 {
		spec["hostnames"] = toAny(o.Hostnames)
	}
	if len(o.NodeCIDRs) > 0 {
		spec["nodeCIDRs"] = toAny(o.NodeCIDRs)
	}
	if o.Group != "" {
		spec["group"] = o.Group
	}
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetGroupVersionKind(v1.GroupVersion.WithKind("Tenant"))
	u.SetName(o.Name)
	return u
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// waitReady watches the Tenant until the manager says Ready for its current
// generation, and returns its namespace.
func (o *TenantAdd) waitReady(ctx context.Context, c client.WithWatch) (string, error) {
	ns := ""
	err := watchUntil(ctx, o.Timeout, c, &v1.TenantList{}, "", o.Name, func(obj runtime.Object) (bool, string) {
		t := obj.(*v1.Tenant)
		ns = t.Status.Namespace
		cond := meta.FindStatusCondition(t.Status.Conditions, v1.ConditionReady)
		switch {
		case cond == nil:
			return false, "no Ready condition yet"
		case cond.ObservedGeneration != t.Generation:
			return false, fmt.Sprintf("Ready=%s %s describes generation %d, not %d", cond.Status, cond.Reason, cond.ObservedGeneration, t.Generation)
		case cond.Status != metav1.ConditionTrue:
			return false, fmt.Sprintf("Ready=%s %s: %s", cond.Status, cond.Reason, cond.Message)
		}
		return ns != "", "no namespace in status yet"
	})
	return ns, err
}

// copyKubeconfig copies the kubeconfig the manager issued for the tenant's ccm
// into the Secret the ccm's Deployment mounts, creating its namespace first.
func (o *TenantAdd) copyKubeconfig(ctx context.Context, mgmt client.Client, tenant *applier, m *ccmManifest, ns string) error {
	var src corev1.Secret
	key := client.ObjectKey{Namespace: ns, Name: v1.KubeconfigSecretName}
	if err := mgmt.Get(ctx, key, &src); err != nil {
		return fmt.Errorf("reading %s in the management cluster: %w", key, err)
	}
	kc := src.Data[v1.KubeconfigKey]
	if len(kc) == 0 {
		return fmt.Errorf("%s holds no %q yet", key, v1.KubeconfigKey)
	}
	for _, u := range m.objects {
		if u.GetKind() == "Namespace" && u.GetName() == m.secret.Namespace {
			res, err := tenant.apply(ctx, u)
			if err != nil {
				return err
			}
			if res != unchanged {
				o.printStep(stepKubeconfig, "Namespace %s %s", u.GetName(), res)
			}
		}
	}
	sec := &unstructured.Unstructured{Object: map[string]any{
		"type": string(corev1.SecretTypeOpaque),
		// Unstructured data is base64, as the API serves it.
		"data": map[string]any{v1.KubeconfigKey: base64.StdEncoding.EncodeToString(kc)},
	}}
	sec.SetAPIVersion("v1")
	sec.SetKind("Secret")
	sec.SetNamespace(m.secret.Namespace)
	sec.SetName(m.secret.Name)
	sec.SetLabels(map[string]string{"app.kubernetes.io/part-of": "fleetlb"})
	res, err := tenant.apply(ctx, sec)
	if err != nil {
		return err
	}
	o.printStep(stepKubeconfig, "Secret %s %s (from %s in the management cluster)", m.secret, res, key)
	return nil
}

// waitReport watches the tenant's TenantNodes until the ccm of this cluster
// has written it and the manager has checked the node addresses.
func (o *TenantAdd) waitReport(ctx context.Context, c client.WithWatch, ns string, ccm types.NamespacedName) (*v1.TenantNodes, error) {
	var nodes *v1.TenantNodes
	err := watchUntil(ctx, o.Timeout, c, &v1.TenantNodesList{}, ns, v1.TenantNodesName, func(obj runtime.Object) (bool, string) {
		tn := obj.(*v1.TenantNodes)
		if tn.Spec.Cluster != o.ClusterName {
			return false, fmt.Sprintf("TenantNodes names cluster %q, not %q", tn.Spec.Cluster, o.ClusterName)
		}
		nodes = tn
		// The manager's verdict on the nodes (served, refused) says whether
		// traffic can reach them: wait for it too.
		if tn.Status.ObservedGeneration != tn.Generation {
			return false, "the ccm reported its nodes; the manager has not checked them yet"
		}
		return true, ""
	})
	if err != nil && nodes == nil {
		err = fmt.Errorf("%w (is the ccm running? see Deployment %s in the tenant cluster)", err, ccm)
	}
	return nodes, err
}

// watchUntil watches one object until done says so, bounded by timeout; the
// error on timeout says what the object looked like last.
func watchUntil(ctx context.Context, timeout time.Duration, c client.WithWatch, list client.ObjectList, ns, name string,
	done func(runtime.Object) (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	state := "not found"
	// Each watch starts with the object's current state (an ADDED event);
	// the loop only re-opens a watch the server closed, until the deadline.
	for ctx.Err() == nil {
		w, err := c.Watch(ctx, list, client.InNamespace(ns), client.MatchingFields{"metadata.name": name})
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return err
		}
		for ev := range w.ResultChan() {
			switch ev.Type {
			case watch.Added, watch.Modified:
				ok, s := done(ev.Object)
				if ok {
					w.Stop()
					return nil
				}
				state = s
			case watch.Deleted:
				state = "deleted"
			case watch.Error:
				if st, ok := ev.Object.(*metav1.Status); ok {
					err := apierrors.FromObject(st)
					w.Stop()
					if !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
						return err
					}
				}
			}
		}
		w.Stop()
	}
	return fmt.Errorf("not done after %s: %s", timeout, state)
}
