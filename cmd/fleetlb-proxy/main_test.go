package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAdminReadyAndMetrics(t *testing.T) {
	ready := make(chan struct{})
	srv := httptest.NewServer(adminHandler(ready))
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 64*1024)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return resp.StatusCode, b.String()
	}
	if code, _ := get("/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("/ready before config = %d, want 503", code)
	}
	close(ready)
	if code, _ := get("/ready"); code != http.StatusOK {
		t.Errorf("/ready after config = %d, want 200", code)
	}
	if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "fleetlb_proxy_") {
		t.Errorf("/metrics = %d, missing fleetlb_proxy_ metrics", code)
	}
}
