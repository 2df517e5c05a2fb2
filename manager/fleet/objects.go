package fleet

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/envoy/bootstrap"
	"github.com/fleetlb/fleetlb/manager/xdscerts"
)

const (
	// namePrefix + fleet name names the fleet's ServiceAccount, ConfigMap, Deployment and Service.
	namePrefix = "envoy-"
	// BootstrapKey is the ConfigMap key (and file name) of the Envoy bootstrap.
	BootstrapKey = bootstrap.BootstrapFile
	// AnnotationBootstrapHash on the pod template rolls the pods when the bootstrap changes.
	AnnotationBootstrapHash = "fleetlb.io/bootstrap-hash"
	// HealthPort serves /ready from Envoy's worker threads (the bootstrap's health listener).
	HealthPort = 19001
	// AdminSocket is Envoy's admin interface: a Unix socket in an emptyDir
	// of the pod, out of reach of any network client.
	AdminSocket = adminDir + "/admin.sock"

	// DefaultImage is the Envoy of a ProxyFleet without spec.image: the one
	// place its version is pinned. The CRD's default (api/v1alpha1) and the
	// charts must agree; deploy's TestEnvoyImagePinnedOnce checks they do.
	DefaultImage = "envoyproxy/envoy:v1.36.2"

	defaultReplicas = int32(2)
	envoyUID        = int64(101) // the envoy user of the official image
	configDir       = "/etc/envoy"
	adminDir        = "/var/run/envoy"
	// xdsTLSDir is where the fleet's xDS client Secret is mounted.
	xdsTLSDir = "/etc/envoy/xds-tls"
)

// ObjectName is the name of a fleet's ServiceAccount, ConfigMap, Deployment and Service.
func ObjectName(fleet string) string { return namePrefix + fleet }

// checkName says why a fleet's name cannot name its objects (Service names
// are DNS-1035 labels; the fleet label value is at most 63 characters).
func checkName(fleet string) error {
	if errs := validation.IsDNS1035Label(ObjectName(fleet)); len(errs) > 0 {
		return fmt.Errorf("fleet name %q cannot name its objects: %q %v", fleet, ObjectName(fleet), errs)
	}
	return nil
}

// Labels are on every object of a fleet; they also select its pods.
func Labels(fleet string) map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":       "envoy",
		"app.kubernetes.io/managed-by": "fleetlb-manager",
		v1.LabelFleet:                  fleet,
	}
}

func exposure(f *v1.ProxyFleet) v1.Exposure {
	return cmp.Or(f.Spec.Exposure, v1.ExposureLoadBalancerService)
}

func listenerPorts(f *v1.ProxyFleet) (http, https int32) {
	http, https = 80, 443
	if f.Spec.HTTP != nil {
		http = int32(f.Spec.HTTP.Port)
	}
	if f.Spec.HTTPS != nil {
		https = int32(f.Spec.HTTPS.Port)
	}
	return http, https
}

func objectMeta(f *v1.ProxyFleet, namespace string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: ObjectName(f.Name), Namespace: namespace, Labels: Labels(f.Name),
		OwnerReferences: []metav1.OwnerReference{{
			APIVersion: v1.GroupVersion.String(), Kind: "ProxyFleet", Name: f.Name, UID: f.UID,
			Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
		}},
	}
}

// bootstrapFiles are the fleet's Envoy bootstrap and, with mTLS, the SDS
// files that read its client certificate. node.id is replaced per pod by
// --service-node (the pod name); node.cluster is the fleet.
func bootstrapFiles(f *v1.ProxyFleet, o Options, secure bool) (map[string][]byte, error) {
	opts := bootstrap.Options{
		Fleet: f.Name, NodeID: "$(POD_NAME)", XDSAddress: o.XDSAddress, Delta: o.Delta,
		AdminSocket: AdminSocket, HealthPort: HealthPort, ConfigDir: configDir,
	}
	if secure {
		opts.TLSDir = xdsTLSDir
	}
	return bootstrap.Files(opts)
}

// clientSecret holds the fleet's xDS client certificate, key and CA.
func clientSecret(f *v1.ProxyFleet, namespace string, data map[string][]byte) *corev1.Secret {
	meta := objectMeta(f, namespace)
	meta.Name = xdscerts.ClientSecretName(f.Name)
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: meta, Type: corev1.SecretTypeTLS, Data: data,
	}
}

func serviceAccount(f *v1.ProxyFleet, namespace string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: objectMeta(f, namespace),
		// Envoy needs nothing from the Kubernetes API.
		AutomountServiceAccountToken: ptr.To(false),
	}
}

func configMap(f *v1.ProxyFleet, namespace string, files map[string][]byte) *corev1.ConfigMap {
	data := map[string]string{}
	for k, v := range files {
		data[k] = string(v)
	}
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: objectMeta(f, namespace),
		Data:       data,
	}
}

// filesHash covers every file of the ConfigMap, so any change rolls the pods.
func filesHash(files map[string][]byte) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(h, "%s\x00%d\x00", k, len(files[k]))
		h.Write(files[k])
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

func deployment(f *v1.ProxyFleet, namespace string, files map[string][]byte, secure bool) *appsv1.Deployment {
	labels := Labels(f.Name)
	http, https := listenerPorts(f)
	hostNet := exposure(f) == v1.ExposureHostNetwork

	// Listeners bind ports below 1024 (80, 443, L4 VIP ports). In the pod's own
	// network namespace Envoy runs as its unprivileged user and the namespaced
	// sysctl lets it bind them; in the host network that sysctl is not the
	// pod's to set, so Envoy keeps root with only NET_BIND_SERVICE.
	podSec := &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
	sec := &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
	if hostNet {
		sec.Capabilities.Add = []corev1.Capability{"NET_BIND_SERVICE"}
	} else {
		podSec.RunAsNonRoot = ptr.To(true)
		podSec.RunAsUser, podSec.RunAsGroup = ptr.To(envoyUID), ptr.To(envoyUID)
		podSec.Sysctls = []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}}
	}

	pod := corev1.PodSpec{
		ServiceAccountName:            ObjectName(f.Name),
		AutomountServiceAccountToken:  ptr.To(false),
		TerminationGracePeriodSeconds: ptr.To(int64(60)),
		SecurityContext:               podSec,
		// Spread replicas over nodes when the scheduler can.
		Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
			PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
				Weight: 100,
				PodAffinityTerm: corev1.PodAffinityTerm{
					TopologyKey:   corev1.LabelHostname,
					LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{v1.LabelFleet: f.Name}},
				},
			}},
		}},
		Containers: []corev1.Container{{
			Name:    "envoy",
			Image:   cmp.Or(f.Spec.Image, DefaultImage),
			Command: []string{"envoy"},
			Args: []string{
				"--config-path", configDir + "/" + BootstrapKey,
				"--service-node", "$(POD_NAME)",
				"--service-cluster", f.Name,
				"--disable-hot-restart",
				"--log-level", "info",
			},
			Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
				FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}}},
			Ports: []corev1.ContainerPort{
				{Name: "http", ContainerPort: http, Protocol: corev1.ProtocolTCP},
				{Name: "https", ContainerPort: https, Protocol: corev1.ProtocolTCP},
				{Name: "ready", ContainerPort: HealthPort, Protocol: corev1.ProtocolTCP},
			},
			Resources: *f.Spec.Resources.DeepCopy(),
			ReadinessProbe: &corev1.Probe{
				ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
					Path: "/ready", Port: intstr.FromInt32(HealthPort), Scheme: corev1.URISchemeHTTP}},
				PeriodSeconds: 5, FailureThreshold: 2,
			},
			LivenessProbe: &corev1.Probe{
				ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
					Path: "/ready", Port: intstr.FromInt32(HealthPort), Scheme: corev1.URISchemeHTTP}},
				InitialDelaySeconds: 10, PeriodSeconds: 10, FailureThreshold: 6,
			},
			SecurityContext: sec,
			VolumeMounts: []corev1.VolumeMount{
				{Name: "config", MountPath: configDir, ReadOnly: true},
				{Name: "tmp", MountPath: "/tmp"},
				{Name: "admin", MountPath: adminDir},
			},
		}},
		Volumes: []corev1.Volume{
			{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: ObjectName(f.Name)}}}},
			{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "admin", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		},
	}
	if secure {
		// Mounted as a directory (no subPath), so Kubernetes swaps in a renewed
		// Secret and Envoy's SDS watch on the directory picks it up.
		c := &pod.Containers[0]
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "xds-tls", MountPath: xdsTLSDir, ReadOnly: true})
		pod.Volumes = append(pod.Volumes, corev1.Volume{Name: "xds-tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: xdscerts.ClientSecretName(f.Name)}}})
	}
	if hostNet {
		pod.HostNetwork = true
		pod.DNSPolicy = corev1.DNSClusterFirstWithHostNet
	}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: objectMeta(f, namespace),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(ptr.Deref(f.Spec.Replicas, defaultReplicas)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				// Never fewer ready proxies than asked for during a roll.
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(0)), MaxSurge: ptr.To(intstr.FromInt32(1)),
				},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{AnnotationBootstrapHash: filesHash(files)}},
				Spec:       pod,
			},
		},
	}
}

// service exposes the fleet's shared HTTP and HTTPS listeners: a Service of
// type LoadBalancer (on the fleet's VIP when it has one) or, in the host
// network, a ClusterIP Service for in-cluster clients.
func service(f *v1.ProxyFleet, namespace string) *corev1.Service {
	http, https := listenerPorts(f)
	svc := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: objectMeta(f, namespace),
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: Labels(f.Name),
			Ports: []corev1.ServicePort{
				{Name: "http", Port: http, TargetPort: intstr.FromInt32(http), Protocol: corev1.ProtocolTCP},
				{Name: "https", Port: https, TargetPort: intstr.FromInt32(https), Protocol: corev1.ProtocolTCP},
			},
		},
	}
	if exposure(f) == v1.ExposureLoadBalancerService {
		svc.Spec.Type = corev1.ServiceTypeLoadBalancer
		// Clients' addresses reach Envoy (source ranges, logs).
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		svc.Spec.LoadBalancerIP = string(f.Spec.VIP)
	}
	return svc
}
