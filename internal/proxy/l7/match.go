package l7

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// matches reports whether r (with its normalized path, no query) matches, as Envoy's
// route matcher does: path first, then every header and query parameter matcher.
func (m *routeMatch) matches(r *http.Request, path string) bool {
	p := path
	if !m.caseSensitive {
		p = strings.ToLower(p)
	}
	switch m.kind {
	case "prefix":
		if !strings.HasPrefix(p, m.value) {
			return false
		}
	case "path":
		if p != m.value {
			return false
		}
	case "separated":
		if p != m.value && !strings.HasPrefix(p, strings.TrimSuffix(m.value, "/")+"/") {
			return false
		}
	case "regex":
		if !m.re.MatchString(path) {
			return false
		}
	}
	for i := range m.headers {
		if !m.headers[i].matches(r) {
			return false
		}
	}
	if len(m.query) > 0 {
		q := r.URL.Query()
		for _, qm := range m.query {
			vs, ok := q[qm.name]
			if !ok {
				return false
			}
			// Envoy matches the first value of a repeated parameter.
			if qm.str != nil && !qm.str.matches(vs[0]) {
				return false
			}
		}
	}
	if m.grpc && !strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		return false
	}
	return true
}

func (hm *headerMatch) matches(r *http.Request) bool {
	var v string
	var ok bool
	switch hm.name {
	case ":method":
		v, ok = r.Method, true
	case ":authority", "host":
		v, ok = r.Host, true
	case ":path":
		v, ok = r.URL.RequestURI(), true
	case ":scheme":
		v, ok = "http", true
		if r.TLS != nil {
			v = "https"
		}
	default:
		vs := r.Header.Values(hm.name)
		// Envoy matches a header that appears several times by its values joined with ",".
		v, ok = strings.Join(vs, ","), len(vs) > 0
	}
	var res bool
	switch {
	case hm.str != nil:
		res = ok && hm.str.matches(v)
	default:
		res = ok == hm.present
	}
	return res != hm.invert
}

// pick returns the first route of vh that matches r.
func (vh *virtualHost) pick(r *http.Request, path string) *route {
	for _, rt := range vh.routes {
		if rt.match.matches(r, path) {
			return rt
		}
	}
	return nil
}

// normalizePath removes dot segments (RFC 3986 §5.2.4), as Envoy's normalize_path
// does, keeping a trailing slash.
func normalizePath(p string) string {
	if !strings.Contains(p, ".") {
		return p
	}
	u := (&url.URL{Path: "/"}).ResolveReference(&url.URL{Path: p})
	return u.Path
}

// rewritePath applies prefix_rewrite (replacing what the route's path matcher
// matched) or regex_rewrite to path.
func (fa *forwardAction) rewritePath(m *routeMatch, path string) string {
	switch {
	case fa.prefixRewrite != nil:
		switch m.kind {
		case "prefix", "separated":
			return *fa.prefixRewrite + path[min(len(m.value), len(path)):]
		default: // path and regex matchers match the whole path
			return *fa.prefixRewrite
		}
	case fa.regexRewrite != nil:
		return fa.regexRewrite.ReplaceAllString(path, fa.regexSubst)
	}
	return path
}

// location builds a redirect's Location header as Envoy does.
func (ra *redirectAction) location(r *http.Request, m *routeMatch, path string) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	origScheme := scheme
	if ra.scheme != "" {
		scheme = ra.scheme
	}
	host, port := splitHostPort(r.Host)
	if ra.host != "" {
		host, port = splitHostPort(ra.host)
	}
	switch {
	case ra.port != 0:
		port = strconv.FormatUint(uint64(ra.port), 10)
	case ra.host != "":
		// a new host without a port drops the original port
	case scheme != origScheme && (port == "80" || port == "443"):
		port = ""
	}
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	newPath := path
	switch {
	case ra.path != "":
		newPath = ra.path
	case ra.prefixRewrite != "":
		if m.kind == "prefix" || m.kind == "separated" {
			newPath = ra.prefixRewrite + path[min(len(m.value), len(path)):]
		} else {
			newPath = ra.prefixRewrite
		}
	}
	u := url.URL{Scheme: scheme, Host: host, Path: newPath}
	if port != "" {
		u.Host = host + ":" + port
	}
	if q, hasQ := strings.CutPrefix(newPath, "?"); hasQ {
		u.Path, u.RawQuery = "", q
	} else if before, after, ok := strings.Cut(newPath, "?"); ok {
		u.Path, u.RawQuery = before, after // a path_redirect with a query replaces the query
	} else if !ra.stripQuery {
		u.RawQuery = r.URL.RawQuery
	}
	return u.String()
}

func splitHostPort(hp string) (host, port string) {
	if i := strings.LastIndexByte(hp, ':'); i >= 0 && !strings.Contains(hp[i:], "]") {
		return hp[:i], hp[i+1:]
	}
	return hp, ""
}
