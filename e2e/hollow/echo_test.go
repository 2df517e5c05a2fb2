package hollow

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestEchoBasicAnswers(t *testing.T) {
	h := echoHandler(PodContext{Namespace: "ns", Ingress: "gw", Service: "svc", Pod: "web-abc-0"}, "3000")

	// The reply is echo-basic's JSON, headers the request asks for are set.
	req := httptest.NewRequest(http.MethodPost, "/a//b?x=1", nil)
	req.Host = "example.com"
	req.Header.Set("X-Echo-Set-Header", "X-Foo: one, x-bar: two")
	req.Header.Add("X-Echo-Set-Header", "X-Foo: three")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var got map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"path": "/a//b?x=1", "host": "example.com", "method": "POST", "proto": "HTTP/1.1",
		"httpPort": "3000", "namespace": "ns", "ingress": "gw", "service": "svc", "pod": "web-abc-0"} {
		if got[k] != want {
			t.Errorf("%s = %v, want %q", k, got[k], want)
		}
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if v := rec.Header()["X-Foo"]; len(v) != 1 || v[0] != " one,three" {
		t.Errorf("X-Foo %q", v)
	}
	if v := rec.Header()["x-bar"]; len(v) != 1 || v[0] != " two" {
		t.Errorf("x-bar (case kept) %q", v)
	}

	// /status/<code> answers with the code, /health with OK.
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/status/418", nil))
	if rec.Code != http.StatusTeapot {
		t.Errorf("/status/418: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/health", nil))
	if rec.Code != http.StatusOK || rec.Body.String() != "OK" {
		t.Errorf("/health: %d %q", rec.Code, rec.Body.String())
	}

	// ?delay= holds the answer (the suite's timeout tests rely on it); a
	// bad duration is a 500.
	start := time.Now()
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/?delay=200ms", nil))
	if rec.Code != http.StatusOK || time.Since(start) < 200*time.Millisecond {
		t.Errorf("delay: %d after %s", rec.Code, time.Since(start))
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/?delay=soon", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("bad delay: %d", rec.Code)
	}
}

func TestEchoBasicImage(t *testing.T) {
	for image, want := range map[string]bool{
		"registry.k8s.io/gateway-api/echo-basic:v1.5.1":      true,
		"gcr.io/k8s-staging-gateway-api/echo-basic@sha256:0": true,
		"echo-basic": true,
		"registry.k8s.io/coredns/coredns:v1.12.2": false,
		"registry.k8s.io/echo-basic-other:v1":     false,
	} {
		if got := echoBasicImage(image); got != want {
			t.Errorf("%s: %v, want %v", image, got, want)
		}
	}
}
