package translate

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"unsafe"

	"github.com/fleetlb/fleetlb/internal/model"
)

// validMemo remembers the parts of a fleet model found valid, so a model
// where few parts changed is checked in the time those parts take. The parts
// of model.Fleet.Validate are independent but for the fleet-wide fields, name
// clashes between parts and references (a service or route to its backend's
// protocol, a virtual host to its certificate): each part is validated as a
// fleet of its own, with the fleet-wide fields and what it refers to; clashes
// are checked against the parts kept, references again when what they refer
// to came, went or changed protocol.
//
// A model is compared with the last one found valid part by part, in name
// order: a part that is the very same value (the same strings and slices,
// as the builder hands unchanged parts again; models are never modified once
// handed over) is valid as before without a look inside. Models whose
// backends, L4 services (by backend) or virtual hosts are not in name order
// are left to model.Fleet.Validate.
type validMemo struct {
	call     uint64
	base     model.Fleet // the fleet-wide fields last found valid
	backends map[string]*backendValid
	l4       map[l4Key]*l4Valid
	certs    map[string]*certValid
	vhosts   map[string]*vhostValid
	hosts    map[string]string   // hostname → the virtual host that serves it
	usedBy   map[string][]string // backend → virtual hosts whose routes name it
	// The parts of the last model found valid.
	lastB  []model.Backend
	lastL4 []model.L4Service
	lastVH []model.VirtualHost
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
	b model.Backend
}

type l4Valid struct {
	s     model.L4Service
	proto model.BackendProtocol // of its backend; "" for none
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
}

// sameBackend reports whether a and b are the very same backend value: equal
// fields and the same slices and pointers (so, models never being modified,
// the same content). false says nothing.
func sameBackend(a, b *model.Backend) bool {
	return a.Name == b.Name && a.Protocol == b.Protocol && idOf(a.Groups) == idOf(b.Groups) && a.LocalityWeighted == b.LocalityWeighted &&
		a.HealthCheck == b.HealthCheck && a.Outlier == b.Outlier && a.ConnectTimeout == b.ConnectTimeout &&
		a.ProxyProtocol == b.ProxyProtocol && a.SessionAffinity == b.SessionAffinity
}

func sameVirtualHost(a, b *model.VirtualHost) bool {
	return a.Name == b.Name && idOf(a.Hostnames) == idOf(b.Hostnames) && a.Certificate == b.Certificate &&
		a.RedirectToHTTPS == b.RedirectToHTTPS && idOf(a.Routes) == idOf(b.Routes)
}

// pair walks prev and cur, each in ascending key order, calling f(i, j) for
// each key: i or j is -1 where prev or cur has none. It reports false, early,
// when cur is not in strictly ascending order.
func pair[T any](prev, cur []T, key func(*T) string, f func(i, j int) bool) bool {
	i := 0
	for j := range cur {
		k := key(&cur[j])
		if j > 0 && key(&cur[j-1]) >= k {
			return false
		}
		for i < len(prev) && key(&prev[i]) < k {
			if !f(i, -1) {
				return false
			}
			i++
		}
		if i < len(prev) && key(&prev[i]) == k {
			if !f(i, j) {
				return false
			}
			i++
			continue
		}
		if !f(-1, j) {
			return false
		}
	}
	for ; i < len(prev); i++ {
		if !f(i, -1) {
			return false
		}
	}
	return true
}

func backendKey(b *model.Backend) string   { return b.Name }
func serviceKey(s *model.L4Service) string { return s.Backend }
func vhostKey(v *model.VirtualHost) string { return v.Name }
func certKey(c *model.Certificate) string  { return c.Name }
func l4KeyOf(s *model.L4Service) l4Key     { return l4Key{s.Protocol, s.VIP, s.Port} }
func hasKey(s []model.L4Service, k string) int {
	i, ok := slices.BinarySearchFunc(s, k, func(x model.L4Service, k string) int { return strings.Compare(x.Backend, k) })
	if !ok {
		return -1
	}
	return i
}

// strictlySorted reports whether s is in strictly ascending key order.
func strictlySorted[T any](s []T, key func(*T) string) bool {
	for i := 1; i < len(s); i++ {
		if key(&s[i-1]) >= key(&s[i]) {
			return false
		}
	}
	return true
}

// check reports whether f is valid. false does not mean invalid: the caller
// then runs f.Validate(), which is authoritative (and words the errors).
func (m *validMemo) check(f *model.Fleet) bool {
	if len(f.Gateways) > 0 {
		// Gateways are not kept as parts: the whole model is validated.
		*m = validMemo{}
		return false
	}
	if m.backends == nil {
		m.backends, m.l4, m.certs, m.vhosts, m.hosts, m.usedBy = map[string]*backendValid{}, map[l4Key]*l4Valid{}, map[string]*certValid{}, map[string]*vhostValid{}, map[string]string{}, map[string][]string{}
	}
	m.call++
	if !m.parts(f) {
		// What is kept may be half updated: start over next time.
		*m = validMemo{}
		return false
	}
	m.lastB, m.lastL4, m.lastVH = f.Backends, f.L4, f.VirtualHosts
	// none is a model too (not "no last model")
	if m.lastB == nil {
		m.lastB = []model.Backend{}
	}
	if m.lastL4 == nil {
		m.lastL4 = []model.L4Service{}
	}
	if m.lastVH == nil {
		m.lastVH = []model.VirtualHost{}
	}
	return true
}

// backend is the kept backend of that name (nil for none).
func (m *validMemo) backend(name string) *model.Backend {
	if v := m.backends[name]; v != nil {
		return &v.b
	}
	return nil
}

func (m *validMemo) protocol(name string) model.BackendProtocol {
	if v := m.backends[name]; v != nil {
		return v.b.Protocol
	}
	return ""
}

// parts checks f's parts against those kept, and keeps f's.
func (m *validMemo) parts(f *model.Fleet) bool {
	call := m.call
	base := model.Fleet{Name: f.Name, HTTP: f.HTTP, HTTPS: f.HTTPS}
	if !reflect.DeepEqual(m.base, base) {
		if base.Validate() != nil {
			return false
		}
		// Parts were checked next to other shared listeners.
		*m = validMemo{call: call, base: base, backends: map[string]*backendValid{}, l4: map[l4Key]*l4Valid{}, certs: map[string]*certValid{},
			vhosts: map[string]*vhostValid{}, hosts: map[string]string{}, usedBy: map[string][]string{}}
	}

	// Backends that came, went or changed protocol: what the L4 services and
	// virtual hosts refer to.
	refs := map[string]bool{}
	prevB := m.lastB
	ok := prevB != nil && idOf(prevB) == idOf(f.Backends) || pair(prevB, f.Backends, backendKey, func(i, j int) bool {
		switch {
		case j < 0:
			delete(m.backends, prevB[i].Name)
			refs[prevB[i].Name] = true
		case i >= 0 && sameBackend(&prevB[i], &f.Backends[j]):
		default:
			b := &f.Backends[j]
			v := m.backends[b.Name]
			if v == nil || !v.b.Equal(b) {
				if (&model.Fleet{Name: f.Name, Backends: []model.Backend{*b}}).Validate() != nil {
					return false
				}
				if v == nil || v.b.Protocol != b.Protocol {
					refs[b.Name] = true
				}
				m.backends[b.Name] = &backendValid{b: *b}
			}
		}
		return true
	})
	if !ok {
		return false
	}

	// L4 services: those gone first, so a service that moved to a port another left does not clash.
	var check []int
	prevL4 := m.lastL4
	ok = prevL4 != nil && idOf(prevL4) == idOf(f.L4) || pair(prevL4, f.L4, serviceKey, func(i, j int) bool {
		if i >= 0 && j >= 0 && prevL4[i].Equal(&f.L4[j]) {
			return true
		}
		if i >= 0 {
			k := l4KeyOf(&prevL4[i])
			if v := m.l4[k]; v != nil && v.s.Backend == prevL4[i].Backend {
				delete(m.l4, k)
			}
		}
		if j >= 0 {
			check = append(check, j)
		}
		return true
	})
	if !ok {
		return false
	}
	for name := range refs {
		if j := hasKey(f.L4, name); j >= 0 {
			check = append(check, j)
		}
	}
	for _, j := range check {
		s := &f.L4[j]
		key := l4KeyOf(s)
		v := m.l4[key]
		if v != nil && v.s.Backend != s.Backend {
			return false // two services on one VIP port
		}
		if v != nil && v.proto == m.protocol(s.Backend) && v.s.Equal(s) {
			continue
		}
		mini := base
		mini.L4 = []model.L4Service{*s}
		if b := m.backend(s.Backend); b != nil {
			mini.Backends = []model.Backend{*b}
		}
		if mini.Validate() != nil {
			return false
		}
		m.l4[key] = &l4Valid{s: *s, proto: m.protocol(s.Backend)}
	}

	// Certificates are few: looked at every time.
	certsChanged := false
	certs := make(map[string]*model.Certificate, len(f.Certificates))
	for i := range f.Certificates {
		c := &f.Certificates[i]
		if _, dup := certs[c.Name]; dup {
			return false
		}
		certs[c.Name] = c
		v := m.certs[c.Name]
		if v == nil || v.c != *c {
			if (&model.Fleet{Name: f.Name, Certificates: []model.Certificate{*c}}).Validate() != nil {
				return false
			}
			certsChanged = true
			v = &certValid{c: *c}
			m.certs[c.Name] = v
		}
		v.mark = call
	}
	if len(m.certs) != len(f.Certificates) {
		certsChanged = true // some are gone
		maps.DeleteFunc(m.certs, func(_ string, v *certValid) bool { return v.mark != call })
	}

	// Virtual hosts: those gone first (their hostnames are free again).
	var checkVH []int
	prevVH := m.lastVH
	if certsChanged {
		prevVH = nil // every virtual host is looked at again
		clear(m.vhosts)
		clear(m.hosts)
		clear(m.usedBy)
	}
	ok = prevVH != nil && idOf(prevVH) == idOf(f.VirtualHosts) || pair(prevVH, f.VirtualHosts, vhostKey, func(i, j int) bool {
		if i >= 0 && j >= 0 && sameVirtualHost(&prevVH[i], &f.VirtualHosts[j]) {
			return true
		}
		if i >= 0 {
			m.forgetVH(prevVH[i].Name)
		}
		if j >= 0 {
			checkVH = append(checkVH, j)
		}
		return true
	})
	if !ok {
		return false
	}
	for name := range refs {
		for _, vh := range m.usedBy[name] {
			if j, found := slices.BinarySearchFunc(f.VirtualHosts, vh, func(x model.VirtualHost, k string) int { return strings.Compare(x.Name, k) }); found {
				checkVH = append(checkVH, j)
			}
		}
	}
	var refList []backendRef
	for _, j := range checkVH {
		vh := &f.VirtualHosts[j]
		refList = refList[:0]
		for _, r := range vh.Routes {
			if r.Forward != nil {
				for _, wb := range r.Forward.Backends {
					refList = append(refList, backendRef{wb.Backend, m.protocol(wb.Backend)})
				}
			}
		}
		hasCert := certs[vh.Certificate] != nil
		v := m.vhosts[vh.Name]
		if v != nil && v.cert == hasCert && slices.Equal(v.refs, refList) && v.v.Equal(vh) {
			continue
		}
		if v != nil {
			m.forgetVH(vh.Name)
		}
		for k, h := range vh.Hostnames {
			if _, taken := m.hosts[h]; taken || slices.Contains(vh.Hostnames[:k], h) {
				return false // served by two virtual hosts (or twice by one)
			}
		}
		mini := base
		mini.VirtualHosts = []model.VirtualHost{*vh}
		if c := certs[vh.Certificate]; c != nil {
			mini.Certificates = []model.Certificate{*c}
		}
		for _, r := range refList {
			if b := m.backend(r.name); b != nil && !slices.ContainsFunc(mini.Backends, func(x model.Backend) bool { return x.Name == r.name }) {
				mini.Backends = append(mini.Backends, *b)
			}
		}
		if mini.Validate() != nil {
			return false
		}
		v = &vhostValid{v: *vh, refs: slices.Clone(refList), cert: hasCert}
		m.vhosts[vh.Name] = v
		for _, h := range vh.Hostnames {
			m.hosts[h] = vh.Name
		}
		for _, r := range v.refs {
			if !slices.Contains(m.usedBy[r.name], vh.Name) {
				m.usedBy[r.name] = append(m.usedBy[r.name], vh.Name)
			}
		}
	}
	return true
}

// forgetVH drops what is kept of a virtual host.
func (m *validMemo) forgetVH(name string) {
	v := m.vhosts[name]
	if v == nil {
		return
	}
	delete(m.vhosts, name)
	for _, h := range v.v.Hostnames {
		if m.hosts[h] == name {
			delete(m.hosts, h)
		}
	}
	for _, r := range v.refs {
		users := slices.DeleteFunc(m.usedBy[r.name], func(n string) bool { return n == name })
		if len(users) == 0 {
			delete(m.usedBy, r.name)
		} else {
			m.usedBy[r.name] = users
		}
	}
}
