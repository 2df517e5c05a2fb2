package route

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1 "github.com/fleetlb/fleetlb/api/v1alpha1"
	"github.com/fleetlb/fleetlb/internal/model"
)

func TestAllowedAndCovers(t *testing.T) {
	patterns := []v1.Hostname{"*.team-a.example.com", "exact.example.org"}
	for h, want := range map[v1.Hostname]bool{
		"www.team-a.example.com":   true,
		"a.b.team-a.example.com":   true, // any depth under the suffix
		"*.team-a.example.com":     true,
		"*.x.team-a.example.com":   true,
		"team-a.example.com":       false, // the suffix itself is not under it
		"www.team-ab.example.com":  false,
		"evilteam-a.example.com":   false,
		"exact.example.org":        true,
		"www.exact.example.org":    false,
		"*.example.com":            false,
		"www.team-a.example.com.x": false,
	} {
		if got := Allowed(patterns, h); got != want {
			t.Errorf("Allowed(%s) = %v, want %v", h, got, want)
		}
	}
	for _, c := range []struct {
		tls, h v1.Hostname
		want   bool
	}{
		{"a.example.com", "a.example.com", true},
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "a.b.example.com", false}, // a wildcard certificate covers one label
		{"*.example.com", "example.com", false},
		{"*.example.com", "*.example.com", true},
		{"a.example.com", "b.example.com", false},
	} {
		if got := Covers(c.tls, c.h); got != c.want {
			t.Errorf("Covers(%s, %s) = %v, want %v", c.tls, c.h, got, c.want)
		}
	}
}

func TestCheckRule(t *testing.T) {
	be := []v1.RouteBackend{{NodePort: 30000}}
	redirect := v1.RouteFilter{Type: v1.FilterRequestRedirect, RequestRedirect: &v1.RequestRedirect{Scheme: "https"}}
	prefixRewrite := v1.RouteFilter{Type: v1.FilterURLRewrite, URLRewrite: &v1.URLRewrite{Path: &v1.PathModifier{Type: v1.ReplacePrefixMatch, Value: "/"}}}
	for name, c := range map[string]struct {
		rule v1.RouteRule
		want string
	}{
		"ok":                  {v1.RouteRule{Backends: be}, ""},
		"redirect only":       {v1.RouteRule{Filters: []v1.RouteFilter{redirect}}, ""},
		"no backends":         {v1.RouteRule{}, v1.ReasonInvalidBackend},
		"zero weights":        {v1.RouteRule{Backends: []v1.RouteBackend{{NodePort: 1, Weight: ptr.To[int32](0)}}}, v1.ReasonInvalidBackend},
		"no node port":        {v1.RouteRule{Backends: []v1.RouteBackend{{}}}, v1.ReasonInvalidBackend},
		"redirect + rewrite":  {v1.RouteRule{Backends: be, Filters: []v1.RouteFilter{redirect, prefixRewrite}}, v1.ReasonInvalidSpec},
		"prefix rewrite ok":   {v1.RouteRule{Backends: be, Filters: []v1.RouteFilter{prefixRewrite}, Matches: []v1.RouteMatch{{Path: &v1.PathMatch{Type: v1.PathPrefix, Value: "/a"}}}}, ""},
		"prefix rewrite bad":  {v1.RouteRule{Backends: be, Filters: []v1.RouteFilter{prefixRewrite}, Matches: []v1.RouteMatch{{Path: &v1.PathMatch{Type: v1.PathExact, Value: "/a"}}}}, v1.ReasonInvalidSpec},
		"bad regex":           {v1.RouteRule{Backends: be, Matches: []v1.RouteMatch{{Path: &v1.PathMatch{Type: v1.PathRegularExpression, Value: "(("}}}}, v1.ReasonInvalidSpec},
		"bad header regex":    {v1.RouteRule{Backends: be, Matches: []v1.RouteMatch{{Headers: []v1.HeaderMatch{{Name: "x", Type: v1.MatchRegularExpression, Value: "["}}}}}, v1.ReasonInvalidSpec},
		"filter without body": {v1.RouteRule{Backends: be, Filters: []v1.RouteFilter{{Type: v1.FilterRequestHeaderModifier}}}, v1.ReasonInvalidSpec},
	} {
		if got, msg := CheckRule(&c.rule); got != c.want {
			t.Errorf("%s: %q (%s), want %q", name, got, msg, c.want)
		}
	}
}

// A rule the fleet's proxies would refuse is refused at admission, on the
// tenant's own Route, with the model's reason: it never reaches the shared
// route configuration where a NACK would hold back every tenant.
func TestCheckRuleRefusesWhatTheProxyRefuses(t *testing.T) {
	be := []v1.RouteBackend{{NodePort: 30000}}
	mod := func(typ v1.FilterType, m v1.HeaderModifier) []v1.RouteFilter {
		f := v1.RouteFilter{Type: typ}
		if typ == v1.FilterRequestHeaderModifier {
			f.RequestHeaderModifier = &m
		} else {
			f.ResponseHeaderModifier = &m
		}
		return []v1.RouteFilter{f}
	}
	for name, c := range map[string]struct {
		rule v1.RouteRule
		want string // in the message
	}{
		"set Host": {v1.RouteRule{Backends: be, Filters: mod(v1.FilterRequestHeaderModifier,
			v1.HeaderModifier{Set: []v1.HTTPHeader{{Name: "Host", Value: "victim.example.com"}}})}, `"Host" cannot be modified`},
		"remove :authority": {v1.RouteRule{Backends: be, Filters: mod(v1.FilterRequestHeaderModifier,
			v1.HeaderModifier{Remove: []string{":authority"}})}, "pseudo-header"},
		"CRLF in a response header": {v1.RouteRule{Backends: be, Filters: mod(v1.FilterResponseHeaderModifier,
			v1.HeaderModifier{Add: []v1.HTTPHeader{{Name: "x-a", Value: "1\r\nx-b: 2"}}})}, "CR or LF"},
		"regex over RE2's program size": {v1.RouteRule{Backends: be, Matches: []v1.RouteMatch{{Path: &v1.PathMatch{
			Type: v1.PathRegularExpression, Value: "/static/[a-zA-Z0-9._-]{0,200}/"}}}}, "too complex"},
		"header regex over RE2's program size in the second match": {v1.RouteRule{Backends: be, Matches: []v1.RouteMatch{{}, {
			Headers: []v1.HeaderMatch{{Name: "x", Type: v1.MatchRegularExpression, Value: "(ab|cd){40}"}}}}}, "match 1: "},
		"negative timeout":                        {v1.RouteRule{Backends: be, Timeouts: &v1.RouteTimeouts{Request: &metav1.Duration{Duration: -time.Second}}}, "negative"},
		"retry status codes the CRD would refuse": {v1.RouteRule{Backends: be, Retry: &v1.RouteRetry{Attempts: 1, StatusCodes: []v1.RetryStatusCode{200}}}, "400-599"},
		"six retries":                             {v1.RouteRule{Backends: be, Retry: &v1.RouteRetry{Attempts: 6}}, "must be 0-5"},
	} {
		got, msg := CheckRule(&c.rule)
		if got != v1.ReasonInvalidSpec || !strings.Contains(msg, c.want) {
			t.Errorf("%s: %q (%s), want %s with %q", name, got, msg, v1.ReasonInvalidSpec, c.want)
		}
	}
}

func TestCheckSecretRefusesKeysTheProxyRefuses(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"a.example.com"}, NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "weak"}, Type: corev1.SecretTypeTLS, Data: map[string][]byte{
		corev1.TLSCertKey:       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}),
	}}
	if reason, msg := CheckSecret(s); reason != v1.ReasonSecretNotTLS || !strings.Contains(msg, "2048 to 4096") {
		t.Fatalf("CheckSecret = %q %q, want SecretNotTLS for a 1024-bit key", reason, msg)
	}
}

// A public suffix, or a wildcard directly under one, would hand one tenant
// every domain registered under it: such a pattern allows nothing.
func TestPublicSuffixPatternsAllowNothing(t *testing.T) {
	for _, c := range []struct {
		patterns []v1.Hostname
		h        v1.Hostname
		want     bool
	}{
		{[]v1.Hostname{"*.com"}, "shop.com", false},
		{[]v1.Hostname{"*.com"}, "*.shop.com", false},
		{[]v1.Hostname{"*.co.uk"}, "shop.co.uk", false},
		{[]v1.Hostname{"co.uk"}, "co.uk", false},
		{[]v1.Hostname{"*.uk"}, "co.uk", false},
		// Another pattern of the tenant still allows its own names.
		{[]v1.Hostname{"*.com", "*.shop.com"}, "www.shop.com", true},
		{[]v1.Hostname{"*.example.co.uk"}, "www.example.co.uk", true},
		{[]v1.Hostname{"*.corp"}, "wiki.corp", true},
	} {
		if got := Allowed(c.patterns, c.h); got != c.want {
			t.Errorf("Allowed(%v, %s) = %v, want %v", c.patterns, c.h, got, c.want)
		}
	}
	if p, ok := publicSuffixCover([]v1.Hostname{"*.shop.com", "*.com"}, "www.other.com"); !ok || p != "*.com" {
		t.Errorf("publicSuffixCover = %s, %v, want *.com", p, ok)
	}
	if _, ok := publicSuffixCover([]v1.Hostname{"*.com"}, "www.other.org"); ok {
		t.Error("publicSuffixCover names a pattern that does not cover the name")
	}
}

// A rule's retry override reaches the model field by field; no override
// keeps the virtual host's default policy.
func TestRuleActionCopiesRetry(t *testing.T) {
	rule := v1.RouteRule{Backends: []v1.RouteBackend{{NodePort: 30000}}, Retry: &v1.RouteRetry{
		Attempts: 3, PerTryTimeout: &metav1.Duration{Duration: 250 * time.Millisecond},
		RetryOn: []v1.RetryOn{v1.RetryOn5xx, v1.RetryOnRetriableStatusCodes}, StatusCodes: []v1.RetryStatusCode{429}, AllMethods: true,
	}}
	_, fw := RuleAction(&rule)
	want := &model.Retry{Attempts: 3, PerTryTimeout: model.Duration(250 * time.Millisecond),
		RetryOn: []string{"5xx", "retriable-status-codes"}, StatusCodes: []uint32{429}, AllMethods: true}
	if !fw.Retry.Equal(want) {
		t.Errorf("retry %+v, want %+v", fw.Retry, want)
	}
	rule.Retry = &v1.RouteRetry{Attempts: 0}
	if _, fw = RuleAction(&rule); fw.Retry == nil || fw.Retry.Attempts != 0 {
		t.Errorf("attempts 0: retry %+v, want a policy without retries", fw.Retry)
	}
	rule.Retry = nil
	if _, fw = RuleAction(&rule); fw.Retry != nil {
		t.Errorf("no override: retry %+v, want nil", fw.Retry)
	}
}
