// Command demo runs fleetlb on this machine: a management control plane and
// two tenant control planes, the manager, a ccm per tenant, fleetlb-proxy and
// echo "nodes" on 127.0.0.0/8. It creates example Services, waits for their
// addresses, prints what to type, and stops everything on Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/ccm/service"
	"github.com/fleetlb/fleetlb/e2e/harness"
	"github.com/fleetlb/fleetlb/internal/testenv"
	"github.com/fleetlb/fleetlb/manager/xdscerts"
)

func main() {
	dir := flag.String("dir", ".demo", "where kubeconfigs are written")
	flag.Parse()
	if os.Getenv(workerEnv) == "" {
		os.Exit(supervise())
	}
	// The demo's own clients log nothing (and controller-runtime does not
	// print a stack trace about a logger never set); the processes' output is
	// in the harness.
	ctrllog.SetLogger(logr.Discard())
	// A reader that went away (`| tee` on Ctrl-C) must not kill the demo
	// before it stopped what it started: writes fail instead.
	signal.Ignore(syscall.SIGPIPE)
	if err := run(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type example struct {
	tenant, name string
	ports        []corev1.ServicePort
	nodes        map[string]string
}

func run(dir string) error {
	root, err := testenv.ModuleRoot()
	if err != nil {
		return err
	}
	dir, _ = filepath.Abs(dir)
	binDir := filepath.Join(root, "bin")
	fmt.Println("building fleetlb-manager, fleetlb-ccm, fleetlb-proxy ...")
	if err := harness.Build(binDir); err != nil {
		return err
	}
	h, err := harness.New(binDir, dir)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("\nstopping everything ...")
		h.Close()
		fmt.Println("stopped.")
	}()
	// Ctrl-C (or SIGTERM) at any point stops everything that was started.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)

	fmt.Println("starting the management control plane and fleetlb-manager ...")
	f, err := h.StartFleet("127.0.100.1-127.0.100.50")
	if err != nil {
		return err
	}
	if _, err := f.StartProxy(true); err != nil {
		return err
	}
	fmt.Printf("fleetlb-proxy connects to xDS over mutual TLS with the client certificate the manager issued for fleet %q (Secret %s/%s, copied to %s)\n",
		v1.DefaultFleetName, harness.FleetNamespace, xdscerts.ClientSecretName(v1.DefaultFleetName), filepath.Join(h.Dir, "xds-tls-"+v1.DefaultFleetName))
	tenants := map[string]*harness.Tenant{}
	nodeIPs := map[string]map[string]string{
		"team-a": {"a-node-1": "127.0.101.1", "a-node-2": "127.0.101.2"},
		"team-b": {"b-node-1": "127.0.102.1"},
	}
	for _, name := range []string{"team-a", "team-b"} {
		fmt.Printf("starting tenant cluster %s and its fleetlb-ccm ...\n", name)
		tc, err := f.AddTenant(name)
		if err != nil {
			return err
		}
		for node, ip := range nodeIPs[name] {
			if err := tc.AddNode(node, ip, "zone-1"); err != nil {
				return err
			}
		}
		tenants[name] = tc
	}
	examples := []example{
		{"team-a", "web", []corev1.ServicePort{{Name: "tcp", Port: 8080, Protocol: corev1.ProtocolTCP}}, nodeIPs["team-a"]},
		{"team-a", "dns", []corev1.ServicePort{{Name: "udp", Port: 5353, Protocol: corev1.ProtocolUDP}}, nodeIPs["team-a"]},
		{"team-b", "web", []corev1.ServicePort{{Name: "tcp", Port: 8080, Protocol: corev1.ProtocolTCP}}, nodeIPs["team-b"]},
	}
	addrs := map[string]string{}
	for _, ex := range examples {
		tc := tenants[ex.tenant]
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: ex.name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: ptr.To(service.DefaultClass),
				Selector: map[string]string{"app": ex.name}, Ports: ex.ports},
		}
		if err := tc.Env.Client.Create(context.Background(), svc); err != nil {
			return err
		}
		ip, err := tc.Address("default", ex.name, 2*time.Minute)
		if err != nil {
			return err
		}
		if err := tc.ServeNodePorts("default", ex.name, ex.nodes); err != nil {
			return err
		}
		addrs[ex.tenant+"/"+ex.name] = ip
	}

	vip, gwVIP, err := l7Examples(dir, tenants, nodeIPs)
	if err != nil {
		return err
	}

	kubectl := filepath.Join(root, "bin", "k8s", "kubectl")
	fmt.Printf(`
fleetlb is running. Try:

  # the tenant's own view: an ordinary Service of type LoadBalancer with an address
  %[1]s --kubeconfig %[2]s/tenant-team-a.kubeconfig get svc -o wide

  # the platform team's view: every tenant's load balancers in one place
  %[1]s --kubeconfig %[2]s/management.kubeconfig get lb -A -o wide
  %[1]s --kubeconfig %[2]s/management.kubeconfig get tenants,addresspools

  # traffic through the fleet (each answer names the cluster and node that served it;
  # without nc: apt-get install netcat-openbsd, or: bash -c 'exec 3<>/dev/tcp/%[3]s/8080; head -1 <&3')
  nc -N %[3]s 8080 </dev/null     # team-a/web: answered by a-node-1 or a-node-2
  nc -N %[4]s 8080 </dev/null     # team-b/web: answered by b-node-1
  echo hi | nc -u -w1 %[5]s 5353  # team-a/dns over UDP

  # L7 on the fleet's shared VIP %[7]s: team-a's Ingress with TLS (the demo CA signed its Secret)
  curl --cacert %[2]s/ca.crt --resolve web.team-a.example.com:%[8]d:%[7]s https://web.team-a.example.com:%[8]d/
  # its plain HTTP answers 301 to https (annotation fleetlb.io/ssl-redirect: "false" turns that off)
  curl -si --resolve web.team-a.example.com:%[9]d:%[7]s http://web.team-a.example.com:%[9]d/ | head -3
  # team-b's Gateway on its own VIP %[10]s: its HTTPRoute has no hostnames, so it serves
  # every host there; a header picks v2, everything else goes to v1
  curl http://%[10]s:%[9]d/
  curl -H 'X-Version: v2' http://%[10]s:%[9]d/
  %[1]s --kubeconfig %[2]s/tenant-team-a.kubeconfig get ingress
  %[1]s --kubeconfig %[2]s/tenant-team-b.kubeconfig get gateway,httproute
  %[1]s --kubeconfig %[2]s/management.kubeconfig get routes -A

Services of type LoadBalancer with spec.loadBalancerClass %[6]s get an address;
Ingresses of class fleetlb share the fleet's VIP; each Gateway of class fleetlb gets its own.
Press Ctrl-C to stop everything.
`, kubectl, dir, addrs["team-a/web"], addrs["team-b/web"], addrs["team-a/dns"], service.DefaultClass,
		vip, harness.HTTPSPort, harness.HTTPPort, gwVIP)
	<-sig
	return nil
}
