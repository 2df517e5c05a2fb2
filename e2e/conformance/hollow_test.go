//go:build conformance

package conformance

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	pb "sigs.k8s.io/gateway-api/conformance/echo-basic/grpcechoserver"
	gwgrpc "sigs.k8s.io/gateway-api/conformance/utils/grpc"
	gwhttp "sigs.k8s.io/gateway-api/conformance/utils/http"
	"sigs.k8s.io/gateway-api/conformance/utils/roundtripper"

	"github.com/fleetlb/fleetlb/e2e/harness"
	"github.com/fleetlb/fleetlb/e2e/hollow"
)

// TestHollowPodsBehindTheFleet checks what the conformance run relies on,
// with routes the fleet serves today (named hosts): a Gateway's HTTPRoute and
// GRPCRoute reach hollow echo-basic Pods through fleetlb-proxy and the
// tenant's node port, and the suite's own HTTP and gRPC clients accept the
// answers (namespace and Pod of the expected Deployment).
func TestHollowPodsBehindTheFleet(t *testing.T) {
	f, tc := startTenant(t)
	if _, err := tc.StartHollowPods(hollow.Options{Log: logr.Discard()}); err != nil {
		t.Fatal(err)
	}
	shared, err := sharedVIP(f)
	if err != nil {
		t.Fatal(err)
	}
	c := tc.Env.Client
	if err := gwv1.Install(c.Scheme()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ns := "hollow-e2e"
	echo := func(name string, env ...corev1.EnvVar) *appsv1.Deployment {
		labels := map[string]string{"app": name}
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: appsv1.DeploymentSpec{Replicas: new(int32(2)), Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: name, Image: "registry.k8s.io/gateway-api/echo-basic:v1.5.1",
					Env: append([]corev1.EnvVar{
						{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
						{Name: "NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
					}, env...),
				}}}}},
		}
	}
	service := func(name string, appProtocol *string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Port: 8080, TargetPort: intstr.FromInt32(3000), AppProtocol: appProtocol}},
		}}
	}
	parent := []gwv1.ParentReference{{Name: "gw"}}
	backend := func(name string) gwv1.BackendObjectReference {
		return gwv1.BackendObjectReference{Name: gwv1.ObjectName(name), Port: new(gwv1.PortNumber(8080))}
	}
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		echo("web"), service("web", nil),
		echo("grpc", corev1.EnvVar{Name: "GRPC_ECHO_SERVER", Value: "1"}), service("grpc", new("kubernetes.io/h2c")),
		&gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"}, Spec: gwv1.GatewaySpec{
			GatewayClassName: gatewayClass, Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}}}},
		&gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}, Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: parent}, Hostnames: []gwv1.Hostname{"web.example.com"},
			Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: backend("web")}}}}}}},
		&gwv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "grpc"}, Spec: gwv1.GRPCRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: parent}, Hostnames: []gwv1.Hostname{"grpc.example.com"},
			Rules: []gwv1.GRPCRouteRule{{BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: backend("grpc")}}}}}}},
	} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	var gwAddr string
	if err := harness.Eventually(60*time.Second, func() error {
		var gw gwv1.Gateway
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "gw"}, &gw); err != nil {
			return err
		}
		if len(gw.Status.Addresses) == 0 {
			return fmt.Errorf("gateway has no address: %+v", gw.Status.Conditions)
		}
		gwAddr = net.JoinHostPort(gw.Status.Addresses[0].Value, "80")
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	tcfg := timeouts()
	tcfg.MaxTimeToConsistency = 60 * time.Second
	gwhttp.MakeRequestAndExpectEventuallyConsistentResponse(t, &roundtripper.DefaultRoundTripper{TimeoutConfig: tcfg, CustomDialContext: dialer(shared)},
		tcfg, gwAddr, gwhttp.ExpectedResponse{
			Request: gwhttp.Request{Host: "web.example.com", Path: "/hollow?x=1"}, Response: gwhttp.Response{StatusCode: 200},
			Backend: "web", Namespace: ns,
		})
	gwgrpc.MakeRequestAndExpectEventuallyConsistentResponse(t, grpcRemap{shared: shared}, tcfg, gwAddr, gwgrpc.ExpectedResponse{
		EchoRequest: &pb.EchoRequest{}, RequestMetadata: &gwgrpc.RequestMetadata{Authority: "grpc.example.com"},
		Backend: "grpc", Namespace: ns,
	})
}
