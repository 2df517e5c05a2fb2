package hollow

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// node is a Node that hollow Pods may be bound to: its name and InternalIP.
type node struct {
	name string
	ip   netip.Addr
}

// nodeAddresses are the Nodes with an InternalIP, by name.
func nodeAddresses(items []corev1.Node) []node {
	var nodes []node
	for _, n := range items {
		if !n.DeletionTimestamp.IsZero() {
			continue
		}
		for _, a := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil && a.Type == corev1.NodeInternalIP {
				nodes = append(nodes, node{name: n.Name, ip: ip})
				break
			}
		}
	}
	slices.SortFunc(nodes, func(a, b node) int { return cmp.Compare(a.name, b.name) })
	return nodes
}

// templateHash names a Deployment's Pod template, as pod-template-hash does.
func templateHash(t *corev1.PodTemplateSpec) string {
	b, _ := json.Marshal(t)
	f := fnv.New32a()
	_, _ = f.Write(b)
	return rand.SafeEncodeString(fmt.Sprint(f.Sum32()))
}

// hollowPod says whether p is one of ours.
func hollowPod(p *corev1.Pod) bool { return p.Labels[LabelManagedBy] == ManagedBy }

// syncDeployments keeps each Deployment's replicas as Pods of its current
// template (named <deployment>-<template hash>-<index>), bound to the nodes in
// turn, deletes the Pods of templates, replicas and Deployments that are gone,
// and writes each Deployment's status.
func (h *Cluster) syncDeployments(ctx context.Context, nodes []node, deploys []appsv1.Deployment, pods []corev1.Pod) []error {
	var errs []error
	owned := map[types.UID][]*corev1.Pod{}
	for i := range pods {
		p := &pods[i]
		if !hollowPod(p) {
			continue
		}
		if ref := metav1.GetControllerOf(p); ref != nil {
			owned[ref.UID] = append(owned[ref.UID], p)
		}
	}
	live := map[types.UID]bool{}
	for i := range deploys {
		d := &deploys[i]
		if !d.DeletionTimestamp.IsZero() {
			continue
		}
		live[d.UID] = true
		hash := templateHash(&d.Spec.Template)
		want := map[string]int{}
		for i := range int(ptrOr(d.Spec.Replicas, 1)) {
			want[fmt.Sprintf("%s-%s-%d", d.Name, hash, i)] = i
		}
		var have []*corev1.Pod
		for _, p := range owned[d.UID] {
			if _, ok := want[p.Name]; ok {
				have = append(have, p)
				delete(want, p.Name)
			} else if p.DeletionTimestamp.IsZero() {
				errs = append(errs, client.IgnoreNotFound(h.c.Delete(ctx, p)))
			}
		}
		if len(want) > 0 && len(nodes) > 0 {
			errs = append(errs, h.ensureServiceAccount(ctx, d.Namespace))
		}
		for name, i := range want {
			if len(nodes) == 0 {
				break // no node to run on: the Pods wait, as they would unscheduled
			}
			errs = append(errs, ignoreExists(h.c.Create(ctx, newPod(d, name, hash, nodes[i%len(nodes)].name))))
		}
		errs = append(errs, h.writeDeploymentStatus(ctx, d, have))
	}
	for uid, ps := range owned {
		if live[uid] {
			continue
		}
		for _, p := range ps {
			if p.DeletionTimestamp.IsZero() {
				errs = append(errs, client.IgnoreNotFound(h.c.Delete(ctx, p)))
			}
		}
	}
	return errs
}

func newPod(d *appsv1.Deployment, name, hash, nodeName string) *corev1.Pod {
	labels := map[string]string{}
	for k, v := range d.Spec.Template.Labels {
		labels[k] = v
	}
	labels[appsv1.DefaultDeploymentUniqueLabelKey] = hash
	labels[LabelManagedBy] = ManagedBy
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: d.Namespace, Name: name, Labels: labels, Annotations: d.Spec.Template.Annotations,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(d, appsv1.SchemeGroupVersion.WithKind("Deployment"))},
		},
		Spec: *d.Spec.Template.Spec.DeepCopy(),
	}
	p.Spec.NodeName = nodeName
	// No token is mounted: no container runs to read it.
	p.Spec.AutomountServiceAccountToken = new(bool)
	return p
}

// ensureServiceAccount plays the serviceaccount controller for "default",
// which the ServiceAccount admission plugin requires of every Pod.
func (h *Cluster) ensureServiceAccount(ctx context.Context, ns string) error {
	var sa corev1.ServiceAccount
	err := h.cache.Get(ctx, client.ObjectKey{Namespace: ns, Name: "default"}, &sa)
	if !apierrors.IsNotFound(err) {
		return err
	}
	return ignoreExists(h.c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}))
}

func (h *Cluster) writeDeploymentStatus(ctx context.Context, d *appsv1.Deployment, pods []*corev1.Pod) error {
	var ready int32
	for _, p := range pods {
		if podReady(p) {
			ready++
		}
	}
	n := int32(len(pods))
	st := appsv1.DeploymentStatus{
		ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: ready, AvailableReplicas: ready,
		UnavailableReplicas: max(ptrOr(d.Spec.Replicas, 1)-ready, 0),
	}
	old := d.Status
	if old.ObservedGeneration == st.ObservedGeneration && old.Replicas == st.Replicas && old.UpdatedReplicas == st.UpdatedReplicas &&
		old.ReadyReplicas == st.ReadyReplicas && old.AvailableReplicas == st.AvailableReplicas && old.UnavailableReplicas == st.UnavailableReplicas {
		return nil
	}
	d = d.DeepCopy()
	st.Conditions = d.Status.Conditions
	d.Status = st
	return ignoreConflict(h.c.Status().Update(ctx, d))
}

// readyPod is a Pod whose containers run here and whose status says Ready.
type readyPod struct {
	pod *corev1.Pod
	run *runningPod
}

// syncPods plays the kubelet for our Pods: a Pod IP, its containers started
// in process, status Running and Ready. Containers of Pods that are gone or
// terminating are stopped. It returns the Pods that are Ready in the cache.
func (h *Cluster) syncPods(ctx context.Context, nodes []node, pods []corev1.Pod) ([]readyPod, []error) {
	nodeIP := map[string]netip.Addr{}
	for _, n := range nodes {
		nodeIP[n.name] = n.ip
	}
	var (
		errs  []error
		ready []readyPod
	)
	alive := map[types.UID]bool{}
	for i := range pods {
		p := &pods[i]
		if ip, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			h.ips[ip] = p.UID // taken, also by Pods an earlier run started
		}
		if !hollowPod(p) || p.Spec.NodeName == "" {
			continue
		}
		if !p.DeletionTimestamp.IsZero() {
			// A bound Pod's deletion waits for its kubelet: the containers
			// stop (below, as it is not alive) and the object goes at once.
			errs = append(errs, client.IgnoreNotFound(h.c.Delete(ctx, p, client.GracePeriodSeconds(0), client.Preconditions{UID: &p.UID})))
			continue
		}
		hostIP, ok := nodeIP[p.Spec.NodeName]
		if !ok {
			continue // its node is gone: the Pod is left as it was
		}
		alive[p.UID] = true
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil {
			if ip, err = h.allocateIP(p.UID); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		run := h.pods[p.UID]
		if run == nil {
			run = startPod(p.Name, net.IP(ip.AsSlice()), podApps(p, ip, hostIP))
			h.pods[p.UID] = run
		}
		if podReady(p) && p.Status.PodIP == ip.String() {
			ready = append(ready, readyPod{pod: p, run: run})
			continue
		}
		errs = append(errs, ignoreConflict(h.c.Status().Update(ctx, runningStatus(p, ip, hostIP))))
	}
	for uid, run := range h.pods {
		if !alive[uid] {
			run.stop()
			delete(h.pods, uid)
		}
	}
	exists := map[types.UID]bool{}
	for _, p := range pods {
		exists[p.UID] = true
	}
	for ip, uid := range h.ips {
		if !exists[uid] {
			delete(h.ips, ip)
		}
	}
	slices.SortFunc(ready, func(a, b readyPod) int {
		return cmp.Or(cmp.Compare(a.pod.Namespace, b.pod.Namespace), cmp.Compare(a.pod.Name, b.pod.Name))
	})
	return ready, errs
}

func runningStatus(p *corev1.Pod, ip, hostIP netip.Addr) *corev1.Pod {
	p = p.DeepCopy()
	now := metav1.Now()
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIP, p.Status.PodIPs = ip.String(), []corev1.PodIP{{IP: ip.String()}}
	p.Status.HostIP, p.Status.HostIPs = hostIP.String(), []corev1.HostIP{{IP: hostIP.String()}}
	p.Status.StartTime = &now
	p.Status.Conditions = nil
	for _, t := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	p.Status.ContainerStatuses = nil
	for _, c := range p.Spec.Containers {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, Ready: true, Started: new(bool(true)),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	return p
}

// allocateIP hands out the next free address of PodCIDR, or the one uid got
// before (its status write may have lost a race).
func (h *Cluster) allocateIP(uid types.UID) (netip.Addr, error) {
	for a, owner := range h.ips {
		if owner == uid {
			return a, nil
		}
	}
	prefix := h.opts.PodCIDR.Masked()
	size := 1 << min(prefix.Addr().BitLen()-prefix.Bits(), 20)
	a := h.nextIP
	for range size {
		if !prefix.Contains(a) || a == prefix.Addr() {
			a = prefix.Addr().Next()
		}
		if _, taken := h.ips[a]; !taken {
			h.ips[a] = uid
			h.nextIP = a.Next()
			return a, nil
		}
		a = a.Next()
	}
	return netip.Addr{}, fmt.Errorf("hollow: no free Pod IP in %s", prefix)
}

// podApps are the in-process stand-ins of p's containers, by container port.
func podApps(p *corev1.Pod, ip, hostIP netip.Addr) map[int32]app {
	apps := map[int32]app{}
	for _, c := range p.Spec.Containers {
		if !echoBasicImage(c.Image) {
			continue
		}
		env := containerEnv(p, &c, ip, hostIP)
		for port, a := range echoApps(env, PodContext{Namespace: env["NAMESPACE"], Ingress: env["INGRESS_NAME"], Service: env["SERVICE_NAME"], Pod: env["POD_NAME"]}) {
			apps[port] = a
		}
	}
	return apps
}

// containerEnv resolves what the kubelet would: values and the downward
// API's field references (Secret and ConfigMap references are not read).
func containerEnv(p *corev1.Pod, c *corev1.Container, ip, hostIP netip.Addr) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil:
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				env[e.Name] = p.Name
			case "metadata.namespace":
				env[e.Name] = p.Namespace
			case "metadata.uid":
				env[e.Name] = string(p.UID)
			case "spec.nodeName":
				env[e.Name] = p.Spec.NodeName
			case "spec.serviceAccountName":
				env[e.Name] = p.Spec.ServiceAccountName
			case "status.podIP":
				env[e.Name] = ip.String()
			case "status.hostIP":
				env[e.Name] = hostIP.String()
			}
		}
	}
	return env
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func ignoreConflict(err error) error {
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
