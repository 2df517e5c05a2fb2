package model

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// certFor is a self-signed certificate for www.example.com with key k.
func certFor(t *testing.T, k crypto.Signer) Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "www.example.com"},
		DNSNames: []string{"www.example.com"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return Certificate{Name: "t/ns/tls",
		CertPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		KeyPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}))}
}

func validFleet(t *testing.T) *Fleet {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr("127.0.20.1")
	return &Fleet{
		Name:         "default",
		HTTP:         &SharedListener{VIP: vip, Port: 80},
		HTTPS:        &SharedListener{VIP: vip, Port: 443},
		Certificates: []Certificate{certFor(t, k)},
		VirtualHosts: []VirtualHost{{Name: "www.example.com", Hostnames: []string{"www.example.com"}, Certificate: "t/ns/tls",
			Routes: []Route{{Name: "r", Match: Match{PathType: PathPrefix, Path: "/"},
				Forward: &Forward{Backends: []WeightedBackend{{Backend: "web", Weight: 1}}}}}}},
		Backends: []Backend{{Name: "web", Protocol: BackendHTTP1,
			Groups:      []EndpointGroup{{Cluster: "a", Endpoints: []Endpoint{{Address: netip.MustParseAddr("127.0.1.1"), Port: 30080}}}},
			HealthCheck: &HealthCheck{Type: HealthTCP}}},
	}
}

// Each case is something Envoy refuses (a NACK of the shared resource) that
// the model must refuse first, so only the object that asked for it is left out.
func TestValidateRefusesWhatEnvoyRefuses(t *testing.T) {
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fw := func(f *Fleet) *Forward { return f.VirtualHosts[0].Routes[0].Forward }
	match := func(f *Fleet) *Match { return &f.VirtualHosts[0].Routes[0].Match }
	cases := []struct {
		name, want string
		mut        func(f *Fleet)
	}{
		{"set Host", "cannot be modified", func(f *Fleet) {
			fw(f).RequestHeaders.Set = []Header{{Name: "Host", Value: "victim.example.com"}}
		}},
		{"add host in lower case", "cannot be modified", func(f *Fleet) { fw(f).RequestHeaders.Add = []Header{{Name: "host", Value: "x"}} }},
		{"set :authority", "pseudo-header", func(f *Fleet) { fw(f).RequestHeaders.Set = []Header{{Name: ":authority", Value: "x"}} }},
		{"remove :path", "pseudo-header", func(f *Fleet) { fw(f).RequestHeaders.Remove = []string{":path"} }},
		{"remove Host on the response", "cannot be modified", func(f *Fleet) { fw(f).ResponseHeaders.Remove = []string{"HOST"} }},
		{"remove a non-token", "not a valid header name", func(f *Fleet) { fw(f).ResponseHeaders.Remove = []string{"a b"} }},
		{"CRLF in a value", "CR or LF", func(f *Fleet) {
			fw(f).ResponseHeaders.Set = []Header{{Name: "x-a", Value: "1\r\nSet-Cookie: evil=1"}}
		}},
		{"NUL in a value", "NUL", func(f *Fleet) { fw(f).RequestHeaders.Add = []Header{{Name: "x-a", Value: "a\x00b"}} }},
		{"percent in a value", "command operator", func(f *Fleet) {
			fw(f).RequestHeaders.Add = []Header{{Name: "x-a", Value: "%DOWNSTREAM_REMOTE_ADDRESS%"}}
		}},
		{"invalid UTF-8 in a value", "UTF-8", func(f *Fleet) { fw(f).RequestHeaders.Add = []Header{{Name: "x-a", Value: "\xff"}} }},
		{"regex over RE2's program size", "too complex", func(f *Fleet) {
			*match(f) = Match{PathType: PathRegex, Path: "/static/[a-zA-Z0-9._-]{0,200}/"}
		}},
		{"header regex over RE2's program size", "too complex", func(f *Fleet) {
			match(f).Headers = []StringMatch{{Name: "x-a", Type: StringRegex, Value: strings.Repeat("(a|b)", 40)}}
		}},
		{"invalid regex", "invalid regular expression", func(f *Fleet) { *match(f) = Match{PathType: PathRegex, Path: "(a"} }},
		{"? in a prefix", "? or #", func(f *Fleet) { match(f).Path = "/a?b" }},
		{"space in a path", "spaces", func(f *Fleet) { match(f).Path = "/a b" }},
		{"RSA 1024", "2048 to 4096", func(f *Fleet) { f.Certificates[0] = certFor(t, rsa1024) }},
		{"ECDSA P-224", "P-256 and P-384", func(f *Fleet) { f.Certificates[0] = certFor(t, p224) }},
		{"Ed25519", "not supported", func(f *Fleet) { f.Certificates[0] = certFor(t, ed) }},
		{"key of another certificate", "private key does not match", func(f *Fleet) {
			f.Certificates[0].KeyPEM = certFor(t, other).KeyPEM
		}},
		{"health check every nanosecond", "at least 1s", func(f *Fleet) { f.Backends[0].HealthCheck.Interval = 1 }},
		{"negative timeout", "negative", func(f *Fleet) { fw(f).Timeout = -1 }},
		{"sub-millisecond timeout", "at least 1ms", func(f *Fleet) { fw(f).BackendTimeout = Duration(time.Microsecond) }},
		{"six retries", "must be 0-5", func(f *Fleet) { fw(f).Retry = &Retry{Attempts: 6} }},
		{"retry per-try timeout over an hour", "1ms-1h", func(f *Fleet) { fw(f).Retry = &Retry{Attempts: 1, PerTryTimeout: Duration(2 * time.Hour)} }},
		{"unknown retry condition", "is not one of", func(f *Fleet) { fw(f).Retry = &Retry{Attempts: 1, RetryOn: []string{"4xx"}} }},
		{"retry condition twice", "appears twice", func(f *Fleet) { fw(f).Retry = &Retry{Attempts: 1, RetryOn: []string{"5xx", "5xx"}} }},
		{"retry status 200", "400-599", func(f *Fleet) { fw(f).Retry = &Retry{Attempts: 1, StatusCodes: []uint32{200}} }},
		{"retry status codes without their condition", "retriable-status-codes", func(f *Fleet) {
			fw(f).Retry = &Retry{Attempts: 1, RetryOn: []string{"5xx"}, StatusCodes: []uint32{502}}
		}},
		{"weights over uint32", "more than", func(f *Fleet) {
			fw(f).Backends = []WeightedBackend{{Backend: "web", Weight: 1 << 31}, {Backend: "web", Weight: 1 << 31}}
		}},
		{"locality weights over uint32", "more than", func(f *Fleet) {
			b := &f.Backends[0]
			b.LocalityWeighted = true
			b.Groups = []EndpointGroup{b.Groups[0], b.Groups[0]}
			b.Groups[0].Weight, b.Groups[1].Weight, b.Groups[1].Zone = 1<<31, 1<<31, "z"
		}},
		{"endpoint port 0", "port", func(f *Fleet) { f.Backends[0].Groups[0].Endpoints[0].Port = 0 }},
		{"endpoint with a zone", "zone", func(f *Fleet) {
			f.Backends[0].Groups[0].Endpoints[0].Address = netip.MustParseAddr("fe80::1%eth0")
		}},
		{"wildcard redirect host", "not a DNS name", func(f *Fleet) {
			r := &f.VirtualHosts[0].Routes[0]
			r.Forward, r.Redirect = nil, &Redirect{Host: "*.example.com"}
		}},
		{"backslash in a full-path rewrite", "backslash", func(f *Fleet) { fw(f).RewriteFullPath = `/a\1` }},
		{"outlier ejecting over 100%", "0-100", func(f *Fleet) { f.Backends[0].Outlier = &Outlier{MaxEjectionPercent: 101} }},
		{"locality name not UTF-8", "UTF-8", func(f *Fleet) { f.Backends[0].Groups[0].Zone = "\xfe" }},
	}
	if err := validFleet(t).Validate(); err != nil {
		t.Fatalf("base fleet: %v", err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := validFleet(t)
			c.mut(f)
			err := f.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate() = %v, want an error with %q", err, c.want)
			}
		})
	}
}

func TestValidateAcceptsWhatEnvoyAccepts(t *testing.T) {
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fw := func(f *Fleet) *Forward { return f.VirtualHosts[0].Routes[0].Forward }
	for name, mut := range map[string]func(f *Fleet){
		"RSA 2048":    func(f *Fleet) { f.Certificates[0] = certFor(t, rsa2048) },
		"ECDSA P-384": func(f *Fleet) { f.Certificates[0] = certFor(t, p384) },
		"ordinary header changes": func(f *Fleet) {
			fw(f).RequestHeaders = HeaderChanges{Set: []Header{{Name: "X-Env", Value: "prod"}}, Remove: []string{"x-debug"}}
		},
		"a modest regex": func(f *Fleet) {
			f.VirtualHosts[0].Routes[0].Match = Match{PathType: PathRegex, Path: "/api/v[0-9]+/.*"}
		},
		"health check every 1s":    func(f *Fleet) { f.Backends[0].HealthCheck.Interval = Duration(time.Second) },
		"weights up to uint32 max": func(f *Fleet) { fw(f).Backends = []WeightedBackend{{Backend: "web", Weight: 1<<32 - 1}} },
	} {
		t.Run(name, func(t *testing.T) {
			f := validFleet(t)
			mut(f)
			if err := f.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRegexProgramSizeGrowsWithRepetition(t *testing.T) {
	if err := ValidateRegex("/[a-z]{1,5}"); err != nil {
		t.Fatal(err)
	}
	if err := ValidateRegex("/[a-z]{1,80}"); err == nil {
		t.Fatal("a class repeated 80 times is over RE2's default program size")
	}
	if err := ValidateRegex("(?<name>a)"); err == nil {
		t.Fatal("(?<name>) is accepted by Go but not by every RE2")
	}
}
