package translate

import (
	"maps"
	"reflect"
	"slices"
	"unsafe"

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
	call     uint64
	base     model.Fleet // the fleet-wide fields last found valid
	backends map[string]*backendValid
	l4       map[l4Key]*l4Valid
	certs    map[string]*certValid
	vhosts   map[string]*vhostValid
	hosts    map[string]uint64         // hostname → the call that last saw it
	byName   map[string]*model.Backend // the last model's backends
	// The L4 services and virtual hosts of the last model found valid: the
	// same slice again (models are never modified once handed over), next to
	// backends of the same protocols and the same certificates, is valid
	// again without a look at each.
	lastL4 sliceID
	lastVH sliceID
}

// sliceID is a slice's identity: its array and length.
type sliceID struct {
	data unsafe.Pointer
	n    int
}

func idOf[T any](s []T) sliceID {
	if len(s) == 0 {
		return sliceID{}
	}
	return sliceID{unsafe.Pointer(unsafe.SliceData(s)), len(s)}
}

type backendValid struct {
	b    model.Backend
	mark uint64
}

type l4Valid struct {
	s     model.L4Service
	proto model.BackendProtocol // of its backend; "" for none
	mark  uint64
}

type certValid struct {
	c    model.Certificate
	mark uint64
}

type backendRef struct {
	name  string
	proto model.BackendProtocol // "" for none
}

type vhostValid struct {
	v    model.VirtualHost
	refs []backendRef // the backends its routes name, in order
	cert bool         // its certificate exists
	mark uint64
}

// check reports whether f is valid. false does not mean invalid: the caller
// then runs f.Validate(), which is authoritative (and words the errors).
// When true, m.backends is f's backends by name until the next call.
func (m *validMemo) check(f *model.Fleet) bool {
	if len(f.Gateways) > 0 {
		// Gateways are not kept as parts: the whole model is validated.
		return false
	}
	if m.backends == nil {
		m.backends, m.l4, m.certs, m.vhosts, m.hosts = map[string]*backendValid{}, map[l4Key]*l4Valid{}, map[string]*certValid{}, map[string]*vhostValid{}, map[string]uint64{}
	}
	m.call++
	// What a part was found to be next to what holds: true whatever the
	// rest of the model. Only a valid model says which parts are in use.
	lastL4, lastVH := m.lastL4, m.lastVH
	m.lastL4, m.lastVH = sliceID{}, sliceID{}
	ok, l4Seen, vhSeen := m.parts(f, lastL4, lastVH)
	if !ok {
		return false
	}
	m.lastL4, m.lastVH = idOf(f.L4), idOf(f.VirtualHosts)
	drop := func(mark uint64) bool { return mark != m.call }
	maps.DeleteFunc(m.backends, func(_ string, v *backendValid) bool { return drop(v.mark) })
	maps.DeleteFunc(m.certs, func(_ string, v *certValid) bool { return drop(v.mark) })
	// Parts not looked at this time are the same as last time: kept.
	if l4Seen {
		maps.DeleteFunc(m.l4, func(_ l4Key, v *l4Valid) bool { return drop(v.mark) })
	}
	if vhSeen {
		maps.DeleteFunc(m.vhosts, func(_ string, v *vhostValid) bool { return drop(v.mark) })
		if len(m.hosts) > 2*len(m.vhosts)+64 {
			maps.DeleteFunc(m.hosts, func(_ string, mark uint64) bool { return drop(mark) })
		}
	}
	return true
}

// parts checks f's parts; l4Seen and vhSeen say whether its L4 services and
// virtual hosts were looked at (else they are lastL4 and lastVH, found valid
// next to what has not changed since).
func (m *validMemo) parts(f *model.Fleet, lastL4, lastVH sliceID) (ok, l4Seen, vhSeen bool) {
	call := m.call
	base := model.Fleet{Name: f.Name, HTTP: f.HTTP, HTTPS: f.HTTPS}
	if !reflect.DeepEqual(m.base, base) {
		if base.Validate() != nil {
			return false, true, true
		}
		m.base = base
		// Parts were checked next to other shared listeners.
		clear(m.l4)
		clear(m.vhosts)
		lastL4, lastVH = sliceID{}, sliceID{}
	}
	// Whether a backend came, went or changed protocol, or a certificate
	// came, went or changed: what the L4 services and virtual hosts refer to.
	refsChanged := false

	backends := make(map[string]*model.Backend, len(f.Backends))
	m.byName = backends
	for i := range f.Backends {
		b := &f.Backends[i]
		if _, dup := backends[b.Name]; dup {
			return false, true, true
		}
		backends[b.Name] = b
		v := m.backends[b.Name]
		if v == nil || !v.b.Equal(b) {
			if (&model.Fleet{Name: f.Name, Backends: []model.Backend{*b}}).Validate() != nil {
				return false, true, true
			}
			if v == nil || v.b.Protocol != b.Protocol {
				refsChanged = true
			}
			v = &backendValid{b: *b}
			m.backends[b.Name] = v
		}
		v.mark = call
	}
	if len(m.backends) != len(f.Backends) {
		refsChanged = true // some are gone
	}
	protocol := func(name string) model.BackendProtocol {
		if b := backends[name]; b != nil {
			return b.Protocol
		}
		return ""
	}

	l4Seen = refsChanged || idOf(f.L4) != lastL4
	for i := range f.L4 {
		if !l4Seen {
			break
		}
		s := &f.L4[i]
		key := l4Key{s.Protocol, s.VIP, s.Port}
		v := m.l4[key]
		if v != nil && v.mark == call {
			return false, true, true // two services on one VIP port
		}
		if v == nil || v.proto != protocol(s.Backend) || !v.s.Equal(s) {
			mini := base
			mini.L4 = []model.L4Service{*s}
			if b := backends[s.Backend]; b != nil {
				mini.Backends = []model.Backend{*b}
			}
			if mini.Validate() != nil {
				return false, true, true
			}
			v = &l4Valid{s: *s, proto: protocol(s.Backend)}
			m.l4[key] = v
		}
		v.mark = call
	}

	certs := make(map[string]*model.Certificate, len(f.Certificates))
	for i := range f.Certificates {
		c := &f.Certificates[i]
		if _, dup := certs[c.Name]; dup {
			return false, true, true
		}
		certs[c.Name] = c
		v := m.certs[c.Name]
		if v == nil || v.c != *c {
			if (&model.Fleet{Name: f.Name, Certificates: []model.Certificate{*c}}).Validate() != nil {
				return false, true, true
			}
			refsChanged = true
			v = &certValid{c: *c}
			m.certs[c.Name] = v
		}
		v.mark = call
	}

	if len(m.certs) != len(f.Certificates) {
		refsChanged = true // some are gone
	}

	vhSeen = refsChanged || idOf(f.VirtualHosts) != lastVH
	var refs []backendRef
	for i := range f.VirtualHosts {
		if !vhSeen {
			break
		}
		vh := &f.VirtualHosts[i]
		for _, h := range vh.Hostnames {
			if m.hosts[h] == call {
				return false, true, true // served by two virtual hosts (or twice by one)
			}
			m.hosts[h] = call
		}
		refs = refs[:0]
		for _, r := range vh.Routes {
			if r.Forward != nil {
				for _, wb := range r.Forward.Backends {
					refs = append(refs, backendRef{wb.Backend, protocol(wb.Backend)})
				}
			}
		}
		hasCert := certs[vh.Certificate] != nil
		v := m.vhosts[vh.Name]
		if v != nil && v.mark == call {
			return false, true, true // two virtual hosts of one name
		}
		if v == nil || v.cert != hasCert || !slices.Equal(v.refs, refs) || !v.v.Equal(vh) {
			mini := base
			mini.VirtualHosts = []model.VirtualHost{*vh}
			if c := certs[vh.Certificate]; c != nil {
				mini.Certificates = []model.Certificate{*c}
			}
			for _, r := range refs {
				if b := backends[r.name]; b != nil && !slices.ContainsFunc(mini.Backends, func(x model.Backend) bool { return x.Name == r.name }) {
					mini.Backends = append(mini.Backends, *b)
				}
			}
			if mini.Validate() != nil {
				return false, true, true
			}
			v = &vhostValid{v: *vh, refs: slices.Clone(refs), cert: hasCert}
			m.vhosts[vh.Name] = v
		}
		v.mark = call
	}
	return true, l4Seen, vhSeen
}
