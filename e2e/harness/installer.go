package harness

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/fleetlb/fleetlb/internal/testenv"
)

// StartTenantCluster starts a tenant control plane (with the Gateway API
// CRDs) and no ccm: an installer such as `kubectl fleetlb tenant add`
// onboards it, and StartCCM plays the ccm's Deployment. Its kubeconfig is
// Env.Kubeconfig (also copied to Dir/tenant-<name>.kubeconfig).
func (f *Fleet) StartTenantCluster(name string) (*Tenant, error) {
	crds, err := gatewayCRDs()
	if err != nil {
		return nil, err
	}
	env, err := newTenantEnv(crds)
	if err != nil {
		return nil, err
	}
	f.h.onClose(func() { _ = env.Stop() })
	if err := copyFile(env.Kubeconfig, filepath.Join(f.h.Dir, "tenant-"+name+".kubeconfig")); err != nil {
		return nil, err
	}
	return &Tenant{Name: name, Env: env, h: f.h}, nil
}

// StartCCM runs the tenant's fleetlb-ccm (as its Deployment would, without
// leader election or listeners) with the management kubeconfig given as
// bytes, for example read from the Secret an installer put in the tenant
// cluster.
func (tc *Tenant) StartCCM(managementKubeconfig []byte) error {
	if tc.CCM != nil {
		return fmt.Errorf("tenant %s already runs a ccm", tc.Name)
	}
	kc := filepath.Join(tc.h.Dir, tc.Name+"-installed-to-management.kubeconfig")
	if err := os.WriteFile(kc, managementKubeconfig, 0o600); err != nil {
		return err
	}
	ccm, err := tc.h.Start("fleetlb-ccm",
		"--kubeconfig", tc.Env.Kubeconfig, "--management-kubeconfig", kc, "--cluster-name", tc.Name,
		"--leader-elect=false", "--metrics-bind-address", "0", "--health-probe-bind-address", "0")
	if err != nil {
		return err
	}
	tc.CCM = ccm
	return nil
}

func newTenantEnv(gatewayCRDDir string) (*testenv.Env, error) {
	return testenv.New(testenv.Options{NoCRDs: true, ExtraCRDDirs: []string{gatewayCRDDir}})
}
