package translate

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"

	"github.com/fleetlb/fleetlb/internal/model"
)

func cloneFleet(t *testing.T, f *model.Fleet) *model.Fleet {
	t.Helper()
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	var out model.Fleet
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

// mutate changes one random part of f (in place; f is a fresh copy), drawing
// parts from the golden models so that clashes and bad references happen too.
func mutate(rng *rand.Rand, f *model.Fleet, pool []*model.Fleet) {
	other := pool[rng.IntN(len(pool))]
	switch rng.IntN(14) {
	case 0: // a backend's endpoints or options
		if len(f.Backends) > 0 {
			b := &f.Backends[rng.IntN(len(f.Backends))]
			switch rng.IntN(3) {
			case 0:
				if len(b.Groups) > 0 && len(b.Groups[0].Endpoints) > 0 {
					b.Groups[0].Endpoints[0].Port = uint16(30000 + rng.IntN(100))
				}
			case 1:
				b.SessionAffinity = !b.SessionAffinity
			case 2:
				b.ConnectTimeout = model.Duration(rng.IntN(5)+1) * 1e9
			}
		}
	case 1: // a backend goes
		if len(f.Backends) > 0 {
			i := rng.IntN(len(f.Backends))
			f.Backends = slices.Delete(f.Backends, i, i+1)
		}
	case 2: // an L4 service goes, or moves
		if len(f.L4) > 0 {
			i := rng.IntN(len(f.L4))
			if rng.IntN(2) == 0 {
				f.L4 = slices.Delete(f.L4, i, i+1)
			} else {
				f.L4[i].Port = uint16(1 + rng.IntN(3))
			}
		}
	case 3: // a virtual host goes
		if len(f.VirtualHosts) > 0 {
			i := rng.IntN(len(f.VirtualHosts))
			f.VirtualHosts = slices.Delete(f.VirtualHosts, i, i+1)
		}
	case 4: // a route's path
		if len(f.VirtualHosts) > 0 {
			v := &f.VirtualHosts[rng.IntN(len(f.VirtualHosts))]
			if len(v.Routes) > 0 {
				v.Routes[0].Match = model.Match{PathType: model.PathPrefix, Path: fmt.Sprintf("/p%d", rng.IntN(5))}
			}
		}
	case 5: // certificates and redirects
		if len(f.VirtualHosts) > 0 {
			v := &f.VirtualHosts[rng.IntN(len(f.VirtualHosts))]
			switch {
			case rng.IntN(2) == 0:
				v.RedirectToHTTPS = !v.RedirectToHTTPS
			case len(f.Certificates) > 0 && v.Certificate == "":
				v.Certificate = f.Certificates[rng.IntN(len(f.Certificates))].Name
			default:
				v.Certificate = ""
			}
		}
	case 6: // a certificate goes
		if len(f.Certificates) > 0 {
			f.Certificates = slices.Delete(f.Certificates, 0, 1)
		}
	case 7: // the shared listeners
		switch rng.IntN(3) {
		case 0:
			f.HTTP = nil
		case 1:
			f.HTTPS = nil
		default:
			f.HTTP, f.HTTPS = other.HTTP, other.HTTPS
		}
	case 8: // parts of another model join
		f.Backends = append(f.Backends, other.Backends...)
		f.L4 = append(f.L4, other.L4...)
		f.VirtualHosts = append(f.VirtualHosts, other.VirtualHosts...)
		f.Certificates = append(f.Certificates, other.Certificates...)
		if f.HTTP == nil {
			f.HTTP = other.HTTP
		}
		if f.HTTPS == nil {
			f.HTTPS = other.HTTPS
		}
	case 9: // a hostname served twice
		if len(f.VirtualHosts) > 1 {
			f.VirtualHosts[1].Hostnames = append(f.VirtualHosts[1].Hostnames, f.VirtualHosts[0].Hostnames[0])
		}
	case 10: // a virtual host renamed (same content, new name)
		if len(f.VirtualHosts) > 0 {
			f.VirtualHosts[0].Name += "x"
		}
	case 11: // nothing
	case 12: // a backend's protocol (services and routes refer to it)
		if len(f.Backends) > 0 {
			b := &f.Backends[rng.IntN(len(f.Backends))]
			b.Protocol = []model.BackendProtocol{model.BackendTCP, model.BackendUDP, model.BackendHTTP1, model.BackendHTTP2}[rng.IntN(4)]
			if b.Protocol == model.BackendUDP {
				b.HealthCheck, b.ProxyProtocol = nil, 0 // valid on its own
			}
		}
	case 13: // a certificate's content
		if len(f.Certificates) > 0 {
			c := &f.Certificates[rng.IntN(len(f.Certificates))]
			if len(other.Certificates) > 0 {
				o := other.Certificates[rng.IntN(len(other.Certificates))]
				c.CertPEM, c.KeyPEM = o.CertPEM, o.KeyPEM
			} else {
				c.KeyPEM = ""
			}
		}
	}
}

// TestIncrementalMatchesTranslate runs random sequences of models (the
// golden inputs and random changes to them) through one Incremental and
// checks every result against a translation from scratch: the same
// resources, or the same error.
func TestIncrementalMatchesTranslate(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var pool []*model.Fleet
	for _, in := range inputs {
		pool = append(pool, loadModel(t, in))
	}
	valid, invalid := 0, 0
	for seed := range uint64(32) {
		rng := rand.New(rand.NewPCG(seed, 11))
		var x Incremental
		f := cloneFleet(t, pool[rng.IntN(len(pool))])
		for step := range 300 {
			if rng.IntN(5) == 0 {
				f = cloneFleet(t, pool[rng.IntN(len(pool))])
			} else {
				prev := f
				f = cloneFleet(t, f)
				mutate(rng, f, pool)
				sorted := rng.IntN(2) == 0
				if sorted {
					sortParts(f) // before anything is shared: prev is never modified
				}
				if rng.IntN(2) == 0 {
					shareUnchanged(prev, f)
				}
				if sorted && rng.IntN(3) != 0 {
					shareEqualParts(prev, f)
				}
			}
			where := fmt.Sprintf("seed %d step %d", seed, step)
			want, werr := Translate(f)
			got, _, gerr := x.Translate(f)
			if errLines(werr) != errLines(gerr) {
				t.Fatalf("%s: error %v, want %v", where, gerr, werr)
			}
			if werr != nil {
				invalid++
				continue
			}
			valid++
			sameResources(t, where, got, want)
			// The same model again: nothing is rebuilt.
			again, changed, err := x.Translate(cloneFleet(t, f))
			if err != nil || changed {
				t.Fatalf("%s: the same model again: changed %v, error %v", where, changed, err)
			}
			for i, typ := range [][2][]types.Resource{{got.Listeners, again.Listeners}, {got.Routes, again.Routes}, {got.Clusters, again.Clusters}, {got.Endpoints, again.Endpoints}, {got.Secrets, again.Secrets}} {
				if !slices.Equal(typ[0], typ[1]) {
					t.Fatalf("%s: type %d was rebuilt for the same model", where, i)
				}
			}
		}
	}
	t.Logf("%d valid models, %d invalid", valid, invalid)
	if valid < 500 || invalid < 100 {
		t.Fatalf("the random sequences hold %d valid and %d invalid models: too few of one kind to compare", valid, invalid)
	}
}

// shareUnchanged makes next hold prev's very slices where they are equal,
// as the snapshot builder hands them (parts made once are handed again).
func shareUnchanged(prev, next *model.Fleet) {
	if reflect.DeepEqual(prev.L4, next.L4) {
		next.L4 = prev.L4
	}
	if reflect.DeepEqual(prev.VirtualHosts, next.VirtualHosts) {
		next.VirtualHosts = prev.VirtualHosts
	}
	if reflect.DeepEqual(prev.Certificates, next.Certificates) {
		next.Certificates = prev.Certificates
	}
	if reflect.DeepEqual(prev.HTTP, next.HTTP) {
		next.HTTP = prev.HTTP
	}
}

// sortParts puts f's backends, L4 services (by backend) and virtual hosts
// in name order, as the snapshot builder hands them (the order where the
// translator matches parts with the last model's).
func sortParts(f *model.Fleet) {
	slices.SortStableFunc(f.Backends, func(a, b model.Backend) int { return strings.Compare(a.Name, b.Name) })
	slices.SortStableFunc(f.L4, func(a, b model.L4Service) int { return strings.Compare(a.Backend, b.Backend) })
	slices.SortStableFunc(f.VirtualHosts, func(a, b model.VirtualHost) int { return strings.Compare(a.Name, b.Name) })
}

// shareEqualParts makes each backend, L4 service and virtual host of next
// that equals prev's of the same name the very same value (its slices and
// pointers prev's), as the builder hands a part it did not make again.
func shareEqualParts(prev, next *model.Fleet) {
	shareElems(prev.Backends, next.Backends, func(b *model.Backend) string { return b.Name })
	shareElems(prev.L4, next.L4, func(s *model.L4Service) string { return s.Backend })
	shareElems(prev.VirtualHosts, next.VirtualHosts, func(v *model.VirtualHost) string { return v.Name })
}

func shareElems[T any](prev, next []T, key func(*T) string) {
	byName := map[string]*T{}
	for i := range prev {
		byName[key(&prev[i])] = &prev[i]
	}
	for i := range next {
		if p := byName[key(&next[i])]; p != nil && reflect.DeepEqual(*p, next[i]) {
			next[i] = *p
		}
	}
}

func sameResources(t *testing.T, where string, got, want *Output) {
	t.Helper()
	for typ, pair := range map[string][2][]types.Resource{
		"listeners": {got.Listeners, want.Listeners}, "routes": {got.Routes, want.Routes}, "clusters": {got.Clusters, want.Clusters},
		"endpoints": {got.Endpoints, want.Endpoints}, "secrets": {got.Secrets, want.Secrets},
	} {
		if len(pair[0]) != len(pair[1]) {
			var g, w []string
			for _, r := range pair[0] {
				g = append(g, nameOf(r))
			}
			for _, r := range pair[1] {
				w = append(w, nameOf(r))
			}
			t.Fatalf("%s: %d %s %v, want %d %v", where, len(pair[0]), typ, g, len(pair[1]), w)
		}
		for i := range pair[0] {
			if !proto.Equal(pair[0][i], pair[1][i]) {
				t.Fatalf("%s: %s %q differs from a translation from scratch", where, typ, nameOf(pair[1][i]))
			}
		}
	}
}

// TestIncrementalReusesUnchanged: one changed backend rebuilds its cluster
// and endpoints and nothing else.
func TestIncrementalReusesUnchanged(t *testing.T) {
	var x Incremental
	f := l4Fleet(50)
	a, _, err := x.Translate(f)
	if err != nil {
		t.Fatal(err)
	}
	g := cloneFleet(t, f)
	g.Backends[7].Groups[0].Endpoints[0].Port = 31000
	b, changed, err := x.Translate(g)
	if err != nil || !changed {
		t.Fatalf("changed %v, error %v", changed, err)
	}
	for typ, pair := range map[string][2][]types.Resource{"listeners": {a.Listeners, b.Listeners}, "clusters": {a.Clusters, b.Clusters}, "endpoints": {a.Endpoints, b.Endpoints}} {
		var rebuilt []string
		for i := range pair[0] {
			if pair[0][i] != pair[1][i] {
				rebuilt = append(rebuilt, nameOf(pair[1][i]))
			}
		}
		want := []string{}
		if typ == "endpoints" {
			want = []string{g.Backends[7].Name}
		}
		if len(rebuilt) != len(want) || (len(want) == 1 && rebuilt[0] != want[0]) {
			t.Errorf("%s rebuilt: %v, want %v", typ, rebuilt, want)
		}
	}
}

// errLines is an error's lines in order (model.Validate words some in map order).
func errLines(err error) string {
	if err == nil {
		return ""
	}
	lines := strings.Split(strings.TrimPrefix(err.Error(), "invalid fleet model: "), "\n")
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestIncrementalSharedPartsFollowWhatTheyReferTo: a model that hands the
// very L4 services and virtual hosts of the previous one, next to a backend
// whose protocol or session affinity changed, is checked and translated as
// a translation from scratch does.
func TestIncrementalSharedPartsFollowWhatTheyReferTo(t *testing.T) {
	var x Incremental
	f := l4Fleet(3)
	l7 := l7Fleet(20)
	f.HTTP, f.VirtualHosts, f.Backends = l7.HTTP, l7.VirtualHosts, append(f.Backends, l7.Backends...)
	f.HTTP.VIP = addr(99)
	if _, _, err := x.Translate(f); err != nil {
		t.Fatal(err)
	}
	for i, change := range []func(*model.Fleet){
		func(g *model.Fleet) { g.Backends[0].Protocol, g.Backends[0].HealthCheck = model.BackendUDP, nil }, // an L4 service's
		func(g *model.Fleet) { g.Backends[0].SessionAffinity = true },
		func(g *model.Fleet) { g.Backends[len(g.Backends)-1].Protocol = model.BackendTCP }, // a route's
		func(g *model.Fleet) { g.Backends = g.Backends[:len(g.Backends)-1] },
	} {
		g := *f
		g.Backends = slices.Clone(f.Backends)
		change(&g) // L4 and VirtualHosts are f's very slices
		want, werr := Translate(&g)
		got, _, gerr := x.Translate(&g)
		if errLines(werr) != errLines(gerr) {
			t.Fatalf("change %d: error %v, want %v", i, gerr, werr)
		}
		if werr == nil {
			sameResources(t, fmt.Sprint("change ", i), got, want)
		}
		// Back to f (valid), so the next change is made next to it.
		if _, _, err := x.Translate(f); err != nil {
			t.Fatal(err)
		}
	}
}
