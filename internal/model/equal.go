package model

import "slices"

// Equal methods compare parts of a Fleet field by field, much faster than
// reflect.DeepEqual: translate compares every part of a fleet with the one it
// last translated, on every change. TestEqualComparesEveryField fails when a
// field is added without being compared here.

// Equal reports whether b and o are the same backend.
func (b *Backend) Equal(o *Backend) bool {
	return b.Name == o.Name && b.Protocol == o.Protocol && b.LocalityWeighted == o.LocalityWeighted &&
		b.ConnectTimeout == o.ConnectTimeout && b.ProxyProtocol == o.ProxyProtocol && b.SessionAffinity == o.SessionAffinity &&
		slices.EqualFunc(b.Groups, o.Groups, func(x, y EndpointGroup) bool { return x.Equal(&y) }) &&
		b.HealthCheck.Equal(o.HealthCheck) && ptrEqual(b.Outlier, o.Outlier)
}

// Equal reports whether g and o are the same endpoint group.
func (g *EndpointGroup) Equal(o *EndpointGroup) bool {
	return g.Cluster == o.Cluster && g.Zone == o.Zone && g.Priority == o.Priority && g.Weight == o.Weight &&
		slices.Equal(g.Endpoints, o.Endpoints)
}

// Equal reports whether h and o are the same health check (both may be nil).
func (h *HealthCheck) Equal(o *HealthCheck) bool {
	if h == nil || o == nil {
		return h == o
	}
	return h.Type == o.Type && h.Port == o.Port && h.Path == o.Path && slices.Equal(h.ExpectedStatuses, o.ExpectedStatuses) &&
		h.Interval == o.Interval && h.Timeout == o.Timeout && h.UnhealthyThreshold == o.UnhealthyThreshold && h.HealthyThreshold == o.HealthyThreshold
}

// Equal reports whether s and o are the same L4 service.
func (s *L4Service) Equal(o *L4Service) bool {
	return s.Ref == o.Ref && s.VIP == o.VIP && s.Port == o.Port && s.Protocol == o.Protocol && s.Backend == o.Backend &&
		slices.Equal(s.SourceRanges, o.SourceRanges) && s.IdleTimeout == o.IdleTimeout
}

// Equal reports whether v and o are the same virtual host.
func (v *VirtualHost) Equal(o *VirtualHost) bool {
	return v.Name == o.Name && slices.Equal(v.Hostnames, o.Hostnames) && v.Certificate == o.Certificate &&
		v.RedirectToHTTPS == o.RedirectToHTTPS && slices.EqualFunc(v.Routes, o.Routes, func(x, y Route) bool { return x.Equal(&y) })
}

// Equal reports whether r and o are the same route.
func (r *Route) Equal(o *Route) bool {
	return r.Name == o.Name && r.Match.Equal(&o.Match) && ptrEqual(r.Redirect, o.Redirect) && r.Forward.Equal(o.Forward) && ptrEqual(r.Respond, o.Respond)
}

// Equal reports whether m and o are the same match.
func (m *Match) Equal(o *Match) bool {
	return m.PathType == o.PathType && m.Path == o.Path && m.Method == o.Method &&
		slices.Equal(m.Headers, o.Headers) && slices.Equal(m.Query, o.Query)
}

// Equal reports whether f and o are the same forward action (both may be nil).
func (f *Forward) Equal(o *Forward) bool {
	if f == nil || o == nil {
		return f == o
	}
	return f == o || slices.Equal(f.Backends, o.Backends) && f.RewriteHost == o.RewriteHost &&
		f.RewriteFullPath == o.RewriteFullPath && f.RewritePrefixPath == o.RewritePrefixPath &&
		f.RequestHeaders.Equal(&o.RequestHeaders) && f.ResponseHeaders.Equal(&o.ResponseHeaders) &&
		f.Timeout == o.Timeout && f.BackendTimeout == o.BackendTimeout && f.HashSourceIP == o.HashSourceIP && f.Retry.Equal(o.Retry)
}

// Equal reports whether r and o are the same retry policy (both may be nil).
func (r *Retry) Equal(o *Retry) bool {
	if r == nil || o == nil {
		return r == o
	}
	return r.Attempts == o.Attempts && r.PerTryTimeout == o.PerTryTimeout && slices.Equal(r.RetryOn, o.RetryOn) &&
		slices.Equal(r.StatusCodes, o.StatusCodes) && r.AllMethods == o.AllMethods
}

// Equal reports whether h and o are the same header changes.
func (h *HeaderChanges) Equal(o *HeaderChanges) bool {
	return slices.Equal(h.Set, o.Set) && slices.Equal(h.Add, o.Add) && slices.Equal(h.Remove, o.Remove)
}

// ptrEqual compares what two pointers to comparable structs point to.
func ptrEqual[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
