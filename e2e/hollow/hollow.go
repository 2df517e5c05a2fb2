// Package hollow plays the parts of a Kubernetes cluster that a tenant
// control plane of the e2e harness does not run (it is only kube-apiserver
// and etcd), so Gateway API conformance and other e2e tests get Pods that
// answer, with no container runtime:
//
//   - the deployment controller, scheduler and kubelet: every Deployment gets
//     its replicas as Pod objects, bound to the cluster's Nodes in turn,
//     Running and Ready with a Pod IP from PodCIDR, and the Deployment's status;
//   - the endpointslice controller: EndpointSlices for every Service with a
//     selector, from the Ready Pods it selects;
//   - kube-proxy: every NodePort of every Service is listened on at every
//     Node's InternalIP, and each connection goes to the next endpoint of the
//     Service port (selected Pods or, for a Service without a selector, the
//     Pods its hand-written EndpointSlices name), round-robin, where an in-process stand-in of the
//     container answers (see echo.go: gateway-api's echo-basic, HTTP and gRPC);
//   - the garbage collector, for what it made: Pods of a deleted Deployment and
//     EndpointSlices of a deleted Service.
//
// Pod IPs are bookkeeping only: nothing listens on or dials them; traffic
// reaches the Pods through the node ports, which is how the fleet reaches a
// cluster. They are not on loopback because the apiserver refuses loopback
// (and link-local) addresses in EndpointSlices; the default range is
// 198.18.0.0/16, of RFC 2544's benchmarking block, which is never routed. All
// of it follows the API by informers; one pass rebuilds everything from the
// cache when anything changed.
package hollow

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ManagedBy is the value of the managed-by labels on what hollow creates.
const ManagedBy = "hollow.fleetlb.io"

// LabelManagedBy marks the Pods hollow created (EndpointSlices carry the
// standard endpointslice.kubernetes.io/managed-by).
const LabelManagedBy = "app.kubernetes.io/managed-by"

// Options configure a Cluster.
type Options struct {
	// PodCIDR is where Pod IPs come from (default 198.18.0.0/16).
	PodCIDR netip.Prefix
	// Log gets what failed and was retried.
	Log logr.Logger
}

// Cluster plays the missing parts for one control plane until Close.
type Cluster struct {
	c     client.Client // writes, uncached
	cache cache.Cache
	opts  Options
	kick  chan struct{}

	cancel context.CancelFunc
	done   chan struct{}

	// Owned by the sync loop.
	pods      map[types.UID]*runningPod
	ips       map[netip.Addr]types.UID
	nextIP    netip.Addr
	nodePorts map[string]*nodePort // by node address:port

	mu      sync.Mutex
	lastErr error
	passes  int
}

// Start plays the missing parts for the control plane cfg points at.
func Start(ctx context.Context, cfg *rest.Config, opts Options) (*Cluster, error) {
	if !opts.PodCIDR.IsValid() {
		opts.PodCIDR = netip.MustParsePrefix("198.18.0.0/16")
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	ch, err := cache.New(cfg, cache.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	h := &Cluster{c: c, cache: ch, opts: opts, kick: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{}),
		pods: map[types.UID]*runningPod{}, ips: map[netip.Addr]types.UID{}, nextIP: opts.PodCIDR.Masked().Addr().Next(),
		nodePorts: map[string]*nodePort{}}
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { h.Kick() },
		UpdateFunc: func(any, any) { h.Kick() },
		DeleteFunc: func(any) { h.Kick() },
	}
	for _, o := range []client.Object{&appsv1.Deployment{}, &corev1.Pod{}, &corev1.Service{}, &corev1.Node{}, &discoveryv1.EndpointSlice{}} {
		inf, err := ch.GetInformer(ctx, o)
		if err != nil {
			cancel()
			return nil, err
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			cancel()
			return nil, err
		}
	}
	cacheDone := make(chan struct{})
	go func() { defer close(cacheDone); _ = ch.Start(ctx) }()
	if !ch.WaitForCacheSync(ctx) {
		cancel()
		<-cacheDone
		return nil, fmt.Errorf("hollow: informers did not sync")
	}
	go func() {
		defer close(h.done)
		h.run(ctx)
		h.stopAll()
		<-cacheDone
	}()
	h.Kick()
	return h, nil
}

// Kick asks for a pass (informer events do; tests may).
func (h *Cluster) Kick() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// Close stops every node port and Pod server and the informers.
func (h *Cluster) Close() {
	h.cancel()
	<-h.done
}

// retryAfter is how soon a pass that failed runs again.
const retryAfter = 200 * time.Millisecond

func (h *Cluster) run(ctx context.Context) {
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.kick:
		case <-retry.C:
		}
		err := h.sync(ctx)
		h.mu.Lock()
		h.lastErr, h.passes = err, h.passes+1
		h.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			h.opts.Log.V(1).Info("hollow pass failed; retrying", "error", err.Error())
			retry.Reset(retryAfter)
		}
	}
}

// sync is one pass: Pods for Deployments, their containers, EndpointSlices,
// node ports. Conflicts and races with the cache are expected (an object
// just written is not in the cache yet): the next event or the retry fixes them.
func (h *Cluster) sync(ctx context.Context) error {
	var (
		nodes    corev1.NodeList
		deploys  appsv1.DeploymentList
		podList  corev1.PodList
		services corev1.ServiceList
		slices   discoveryv1.EndpointSliceList
	)
	for _, l := range []client.ObjectList{&nodes, &deploys, &podList, &services, &slices} {
		if err := h.cache.List(ctx, l); err != nil {
			return err
		}
	}
	var errs []error
	nodeList := nodeAddresses(nodes.Items)
	errs = append(errs, h.syncDeployments(ctx, nodeList, deploys.Items, podList.Items)...)
	ready, podErrs := h.syncPods(ctx, nodeList, podList.Items)
	errs = append(errs, podErrs...)
	errs = append(errs, h.syncEndpointSlices(ctx, services.Items, ready, slices.Items)...)
	errs = append(errs, h.syncNodePorts(nodeList, services.Items, ready, slices.Items)...)
	return errors.Join(errs...)
}

func (h *Cluster) stopAll() {
	for k, np := range h.nodePorts {
		np.close()
		delete(h.nodePorts, k)
	}
	for uid, p := range h.pods {
		p.stop()
		delete(h.pods, uid)
	}
}
