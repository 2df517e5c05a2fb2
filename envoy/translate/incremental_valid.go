package translate

import (
	"maps"
	"reflect"

	"github.com/fleetlb/fleetlb/internal/model"
)

// validMemo remembers the parts of a fleet model found valid, so a model
// where few parts changed is checked in the time those parts take. The parts
// of model.Fleet.Validate are independent but for the fleet-wide fields, name
// clashes between parts and references (a service or route to its backend's
// protocol, a virtual host to its certificate): each part is validated as a
// fleet of its own, with the fleet-wide fields and what it refers to; the
// clashes are checked across the whole model every time.
type validMemo struct {
	base     model.Fleet // the fleet-wide fields last found valid
	backends map[string]model.Backend
	l4       map[string]l4Valid
	certs    map[string]model.Certificate
	vhosts   map[string]vhostValid
}

type l4Valid struct {
	s     model.L4Service
	proto model.BackendProtocol // of its backend; "" for none
}

type vhostValid struct {
	v      model.VirtualHost
	protos map[string]model.BackendProtocol // backends its routes name → protocol ("" for none)
	cert   bool                             // its certificate exists
}

// check reports whether f is valid. false does not mean invalid: the caller
// then runs f.Validate(), which is authoritative (and words the errors).
func (m *validMemo) check(f *model.Fleet) bool {
	base := model.Fleet{Name: f.Name, HTTP: f.HTTP, HTTPS: f.HTTPS}
	if !reflect.DeepEqual(m.base, base) {
		if base.Validate() != nil {
			return false
		}
		m.base = base
		// Parts were checked next to other shared listeners.
		m.l4, m.vhosts = nil, nil
	}

	backends := make(map[string]*model.Backend, len(f.Backends))
	nextB := make(map[string]model.Backend, len(f.Backends))
	for i := range f.Backends {
		b := &f.Backends[i]
		if _, dup := backends[b.Name]; dup {
			return false
		}
		backends[b.Name] = b
		if old, ok := m.backends[b.Name]; !ok || !reflect.DeepEqual(&old, b) {
			if (&model.Fleet{Name: f.Name, Backends: []model.Backend{*b}}).Validate() != nil {
				return false
			}
		}
		nextB[b.Name] = *b
	}
	protocol := func(name string) model.BackendProtocol {
		if b := backends[name]; b != nil {
			return b.Protocol
		}
		return ""
	}

	nextL4 := make(map[string]l4Valid, len(f.L4))
	for i := range f.L4 {
		s := &f.L4[i]
		key := L4ListenerName(s.Protocol, s.VIP.String(), s.Port)
		if _, dup := nextL4[key]; dup {
			return false
		}
		v := l4Valid{s: *s, proto: protocol(s.Backend)}
		if old, ok := m.l4[key]; !ok || !reflect.DeepEqual(old, v) {
			mini := base
			mini.L4 = []model.L4Service{*s}
			if b := backends[s.Backend]; b != nil {
				mini.Backends = []model.Backend{*b}
			}
			if mini.Validate() != nil {
				return false
			}
		}
		nextL4[key] = v
	}

	certs := make(map[string]*model.Certificate, len(f.Certificates))
	nextC := make(map[string]model.Certificate, len(f.Certificates))
	for i := range f.Certificates {
		c := &f.Certificates[i]
		if _, dup := certs[c.Name]; dup {
			return false
		}
		certs[c.Name] = c
		if old, ok := m.certs[c.Name]; !ok || old != *c {
			if (&model.Fleet{Name: f.Name, Certificates: []model.Certificate{*c}}).Validate() != nil {
				return false
			}
		}
		nextC[c.Name] = *c
	}

	hosts := map[string]bool{}
	nextV := make(map[string]vhostValid, len(f.VirtualHosts))
	for i := range f.VirtualHosts {
		v := &f.VirtualHosts[i]
		if _, dup := nextV[v.Name]; dup {
			return false
		}
		for _, h := range v.Hostnames {
			if hosts[h] {
				return false
			}
			hosts[h] = true
		}
		val := vhostValid{v: *v, protos: map[string]model.BackendProtocol{}, cert: certs[v.Certificate] != nil}
		for _, r := range v.Routes {
			if r.Forward != nil {
				for _, wb := range r.Forward.Backends {
					val.protos[wb.Backend] = protocol(wb.Backend)
				}
			}
		}
		if old, ok := m.vhosts[v.Name]; !ok || old.cert != val.cert || !maps.Equal(old.protos, val.protos) || !reflect.DeepEqual(&old.v, v) {
			mini := base
			mini.VirtualHosts = []model.VirtualHost{*v}
			if c := certs[v.Certificate]; c != nil {
				mini.Certificates = []model.Certificate{*c}
			}
			for name := range val.protos {
				if b := backends[name]; b != nil {
					mini.Backends = append(mini.Backends, *b)
				}
			}
			if mini.Validate() != nil {
				return false
			}
		}
		nextV[v.Name] = val
	}
	m.backends, m.l4, m.certs, m.vhosts = nextB, nextL4, nextC, nextV
	return true
}
