package main

import (
	"fmt"
	"net"
	"net/http"
	"sync"
)

var answer = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })

// nodePorts stands in for the tenants' nodes: every node address × node port
// the step's objects use accepts connections, so the proxy's health checks
// pass and hosts settle at the healthy interval, as in a working fleet. (With
// nothing listening every host stays unhealthy and is probed each second:
// 20 000 refused connects a second at 10k + 10k, which loads this machine
// more than the control plane does.)
type nodePorts struct {
	lns []net.Listener
	wg  sync.WaitGroup
}

func nodeAddress(tenantIdx int) string { return fmt.Sprintf("127.0.%d.1", 20+tenantIdx) }

func nodePort(i int) int { return 30000 + i%2000 }

// listenNodePorts opens a listener on each node address × node port of
// objects 0..n-1 (object i belongs to tenant i % tenants).
func listenNodePorts(tenants, n int) (*nodePorts, error) {
	np := &nodePorts{}
	seen := map[string]bool{}
	for i := range n {
		addr := fmt.Sprintf("%s:%d", nodeAddress(i%tenants), nodePort(i))
		if seen[addr] {
			continue
		}
		seen[addr] = true
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			np.close()
			return nil, fmt.Errorf("node port %s: %w", addr, err)
		}
		np.lns = append(np.lns, ln)
		// HTTP, so a routed probe (changes) is answered at once; a TCP
		// health check only connects.
		np.wg.Go(func() { _ = http.Serve(ln, answer) })
	}
	return np, nil
}

func (np *nodePorts) close() {
	for _, ln := range np.lns {
		ln.Close()
	}
	np.wg.Wait()
}
