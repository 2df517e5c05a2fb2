package hollow

import (
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// selects says whether svc picks its endpoints by selector (the only kind
// the endpointslice controller and kube-proxy fill in).
func selects(svc *corev1.Service) bool {
	return svc.DeletionTimestamp.IsZero() && svc.Spec.Type != corev1.ServiceTypeExternalName && len(svc.Spec.Selector) > 0
}

// selected are the ready Pods of svc's namespace its selector matches.
func selected(svc *corev1.Service, ready []readyPod) []readyPod {
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	var out []readyPod
	for _, r := range ready {
		if r.pod.Namespace == svc.Namespace && sel.Matches(labels.Set(r.pod.Labels)) {
			out = append(out, r)
		}
	}
	return out
}

// targetPort resolves a Service port's targetPort on one Pod: a number, a
// container port's name, or (unset) the Service port itself.
func targetPort(sp *corev1.ServicePort, p *corev1.Pod) (int32, bool) {
	switch {
	case sp.TargetPort.StrVal != "":
		for _, c := range p.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == sp.TargetPort.StrVal && cp.Protocol == cmpProtocol(sp.Protocol) {
					return cp.ContainerPort, true
				}
			}
		}
		return 0, false
	case sp.TargetPort.IntVal != 0:
		return sp.TargetPort.IntVal, true
	default:
		return sp.Port, true
	}
}

func cmpProtocol(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

// syncEndpointSlices plays the endpointslice controller: per Service with a
// selector, one EndpointSlice per distinct set of resolved ports (one in
// practice), named <service>-<hash of the ports>, with the Ready Pods.
func (h *Cluster) syncEndpointSlices(ctx context.Context, services []corev1.Service, ready []readyPod, have []discoveryv1.EndpointSlice) []error {
	want := map[client.ObjectKey]*discoveryv1.EndpointSlice{}
	for i := range services {
		svc := &services[i]
		if !selects(svc) {
			continue
		}
		bySet := map[string]*discoveryv1.EndpointSlice{}
		slice := func(ports []discoveryv1.EndpointPort) *discoveryv1.EndpointSlice {
			var key string
			for _, p := range ports {
				key += fmt.Sprintf("%s/%s/%d/%s,", *p.Name, *p.Protocol, *p.Port, ptrOr(p.AppProtocol, ""))
			}
			if s := bySet[key]; s != nil {
				return s
			}
			s := &discoveryv1.EndpointSlice{
				ObjectMeta: metav1.ObjectMeta{
					Namespace: svc.Namespace, Name: sliceName(svc.Name, key),
					Labels:          map[string]string{discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: ManagedBy},
					OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(svc, corev1.SchemeGroupVersion.WithKind("Service"))},
				},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       ports,
			}
			bySet[key] = s
			want[client.ObjectKeyFromObject(s)] = s
			return s
		}
		pods := selected(svc, ready)
		if len(pods) == 0 {
			slice(nil) // the controller keeps an empty slice for a Service with no endpoints
		}
		for _, r := range pods {
			var ports []discoveryv1.EndpointPort
			for _, sp := range svc.Spec.Ports {
				tp, ok := targetPort(&sp, r.pod)
				if !ok {
					continue
				}
				ports = append(ports, discoveryv1.EndpointPort{Name: new(sp.Name), Protocol: new(cmpProtocol(sp.Protocol)), Port: new(tp), AppProtocol: sp.AppProtocol})
			}
			s := slice(ports)
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{r.pod.Status.PodIP},
				Conditions: discoveryv1.EndpointConditions{Ready: new(true), Serving: new(true), Terminating: new(false)},
				NodeName:   new(r.pod.Spec.NodeName),
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: r.pod.Namespace, Name: r.pod.Name, UID: r.pod.UID},
			})
		}
	}
	var errs []error
	for i := range have {
		s := &have[i]
		if s.Labels[discoveryv1.LabelManagedBy] != ManagedBy {
			continue
		}
		w := want[client.ObjectKeyFromObject(s)]
		switch {
		case w == nil:
			errs = append(errs, client.IgnoreNotFound(h.c.Delete(ctx, s)))
		case !equality.Semantic.DeepEqual(w.Endpoints, s.Endpoints) || !equality.Semantic.DeepEqual(w.Ports, s.Ports):
			s = s.DeepCopy()
			s.Endpoints, s.Ports = w.Endpoints, w.Ports
			errs = append(errs, ignoreConflict(h.c.Update(ctx, s)))
		}
		delete(want, client.ObjectKeyFromObject(s))
	}
	for _, s := range want {
		errs = append(errs, ignoreExists(h.c.Create(ctx, s)))
	}
	return errs
}

func sliceName(svc, ports string) string {
	f := fnv.New32a()
	_, _ = f.Write([]byte(ports))
	suffix := "-" + strconv.FormatUint(uint64(f.Sum32()), 36)
	if len(svc)+len(suffix) > 63 {
		svc = svc[:63-len(suffix)]
	}
	return svc + suffix
}

// sliceEndpoints are the ready endpoints of a Service port in the
// EndpointSlices someone else wrote for a Service without a selector (as
// kube-proxy serves them): an address is one of our ready Pods by its IP,
// the port is the slice's port of the Service port's name.
func sliceEndpoints(svc *corev1.Service, sp *corev1.ServicePort, slices []discoveryv1.EndpointSlice, ready []readyPod) []endpoint {
	byIP := map[string]*runningPod{}
	for _, r := range ready {
		if r.pod.Namespace == svc.Namespace {
			byIP[r.pod.Status.PodIP] = r.run
		}
	}
	var eps []endpoint
	for i := range slices {
		s := &slices[i]
		if s.Namespace != svc.Namespace || s.Labels[discoveryv1.LabelServiceName] != svc.Name {
			continue
		}
		port := int32(0)
		for _, p := range s.Ports {
			if ptrOr(p.Name, "") == sp.Name && cmpProtocol(ptrOr(p.Protocol, "")) == cmpProtocol(sp.Protocol) && p.Port != nil {
				port = *p.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, a := range e.Addresses {
				if run := byIP[a]; run != nil {
					eps = append(eps, endpoint{pod: run, port: port})
				}
			}
		}
	}
	return eps
}

// syncNodePorts plays kube-proxy: every TCP node port of every Service is
// listened on at every node address and sent round-robin to the Service
// port's ready endpoints (externalTrafficPolicy is not looked at): the Pods
// its selector picks or, without a selector, its EndpointSlices.
func (h *Cluster) syncNodePorts(nodes []node, services []corev1.Service, ready []readyPod, slices []discoveryv1.EndpointSlice) []error {
	type wanted struct {
		service   string
		endpoints []endpoint
	}
	want := map[string]wanted{}
	for i := range services {
		svc := &services[i]
		if !svc.DeletionTimestamp.IsZero() || svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		var pods []readyPod
		if selects(svc) {
			pods = selected(svc, ready)
		}
		for _, sp := range svc.Spec.Ports {
			if sp.NodePort == 0 || cmpProtocol(sp.Protocol) != corev1.ProtocolTCP {
				continue
			}
			var eps []endpoint
			if selects(svc) {
				for _, r := range pods {
					if tp, ok := targetPort(&sp, r.pod); ok {
						eps = append(eps, endpoint{pod: r.run, port: tp})
					}
				}
			} else {
				eps = sliceEndpoints(svc, &sp, slices, ready)
			}
			for _, n := range nodes {
				addr := net.JoinHostPort(n.ip.String(), strconv.Itoa(int(sp.NodePort)))
				want[addr] = wanted{service: fmt.Sprintf("%s/%s:%d", svc.Namespace, svc.Name, sp.Port), endpoints: eps}
			}
		}
	}
	var errs []error
	for addr, np := range h.nodePorts {
		if w, ok := want[addr]; !ok || w.service != np.service {
			np.close()
			delete(h.nodePorts, addr)
		}
	}
	for addr, w := range want {
		np := h.nodePorts[addr]
		if np == nil {
			var err error
			if np, err = listenNodePort(addr, w.service, h.opts.Log); err != nil {
				errs = append(errs, fmt.Errorf("node port of %s: %w", w.service, err))
				continue
			}
			h.nodePorts[addr] = np
		}
		np.setEndpoints(w.endpoints)
	}
	return errs
}
