package fleet

import (
	"fmt"
	"strings"
	"sync"

	"github.com/fleetlb/fleetlb/envoy/server"
)

// SnapshotNotifier is implemented by an xDS server that reports each new
// snapshot it serves a fleet (envoy/server.Server does): Programmed then
// turns False until the fleet acknowledges it, instead of still naming the
// previous version.
type SnapshotNotifier interface {
	OnServed(func(fleet string))
}

// NACKNotifier is implemented by an xDS server that reports refusals
// (envoy/server.Server does): Programmed says the fleet refused its newest
// configuration, and why.
type NACKNotifier interface {
	OnNACK(func(fleet string, n server.NACK))
}

// refusals remembers, per fleet, the last refusal and the generation the
// fleet was served when it came: it explains Programmed=False only while that
// generation is still the one served and not acknowledged.
type refusals struct {
	mu   sync.Mutex
	last map[string]refusal
}

type refusal struct {
	gen  uint64
	nack server.NACK
}

func (r *refusals) record(fleet string, gen uint64, n server.NACK) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last = map[string]refusal{}
	}
	r.last[fleet] = refusal{gen: gen, nack: n}
}

// of is the refusal of the served generation gen, if one came.
func (r *refusals) of(fleet string, gen uint64) (server.NACK, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	x, ok := r.last[fleet]
	return x.nack, ok && x.gen == gen
}

// describe is a NACK for the fleet's status; details are cut to keep the
// condition readable (the manager's log and the objects' ProxyRejected
// conditions carry the rest).
func describe(n server.NACK) string {
	typ := n.TypeURL[strings.LastIndex(n.TypeURL, ".")+1:]
	detail := n.Detail
	if len(detail) > 300 {
		detail = detail[:300] + "..."
	}
	return fmt.Sprintf("proxy %s refused the %s of the newest configuration: %s", n.Node, typ, detail)
}

// ReasonProxyRejected: the fleet's proxies refused the configuration it is
// served (the same reason manager/snapshot gives the object behind it).
const ReasonProxyRejected = "ProxyRejected"
