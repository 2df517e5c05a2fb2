package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/rest"
)

// profileDir is the -profile-dir flag: where the control planes' CPU
// profiles over the burst go.
var profileDir string

// profileSeconds is the -profile-seconds flag.
var profileSeconds int

// profileAPIServers starts a CPU profile of each kube-apiserver (by name)
// over -profile-seconds, from now; the returned wait reports the first
// failure. Nothing happens without -profile-dir. On this machine the
// apiservers take most of the CPU of a burst, so their profiles say where
// the burst's time goes.
func profileAPIServers(cfgs map[string]*rest.Config) (wait func() error) {
	if profileDir == "" {
		return func() error { return nil }
	}
	done := make(chan error, len(cfgs))
	for name, cfg := range cfgs {
		go func() { done <- apiserverProfile(cfg, filepath.Join(profileDir, name+"-apiserver-cpu.pprof")) }()
	}
	return func() error {
		var first error
		for range cfgs {
			if err := <-done; err != nil && first == nil {
				first = err
			}
		}
		return first
	}
}

func apiserverProfile(cfg *rest.Config, file string) error {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	resp, err := hc.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", strings.TrimSuffix(cfg.Host, "/"), profileSeconds))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", cfg.Host, resp.Status)
	}
	if err := os.MkdirAll(profileDir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
