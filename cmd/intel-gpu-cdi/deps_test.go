package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/bench"
)

// The device plugin runs on every GPU node, and every package linked into
// its binary costs memory there, used or not (BENCHMARKS.md, "At the
// floor"). These must never come back in, whatever imports them.
var forbidden = []struct{ prefix, why string }{
	{"k8s.io/client-go", "the DRA driver's API client belongs in its own binary"},
	{"k8s.io/api", "the Kubernetes API types belong to the DRA driver's binary"},
	{"k8s.io/dynamic-resource-allocation", "the DRA helper belongs in its own binary"},
	{"k8s.io/apimachinery", "kubeplugin/retry has its own backoff; apimachinery's wait links and initialises klog"},
	{"k8s.io/klog", "nothing here logs through klog; its init and flags cost memory"},
	{"github.com/russross/blackfriday", "urfave/cli's Markdown docs, left out by the product's build tags"},
	{"github.com/cpuguy83/go-md2man", "urfave/cli's man pages, left out by the product's build tags"},
	{"github.com/prometheus/client_golang/prometheus/promhttp", "its client and server instrumentation links 0.36 MB; kubeplugin/metrics serves the registry with expfmt"},
}

func TestTheBinaryLinksNothingItMustNot(t *testing.T) {
	out, err := exec.Command("go", "list", "-tags", bench.ProductTags, "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 || !strings.Contains(string(out), "google.golang.org/grpc\n") {
		t.Fatalf("go list -deps listed %d packages, without gRPC: not the plugin's dependencies\n%s", len(deps), out)
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f.prefix || strings.HasPrefix(d, f.prefix+"/") {
				t.Errorf("%s is linked into intel-gpu-cdi: %s (go mod why -m %s)", d, f.why, f.prefix)
			}
		}
	}
}

// Some costs come with a function, not a package: net/http is linked for
// its handler types (gRPC links it too), but its Server brings TLS and
// HTTP/2 along, 1.6 MB of binary; kubeplugin/httpserver does without it.
var forbiddenSymbols = []struct{ symbol, why string }{
	{"net/http.(*Server).Serve", "net/http's Server links TLS and HTTP/2: serve endpoints with kubeplugin/httpserver"},
	{"crypto/tls.(*Conn).Handshake", "nothing here speaks TLS"},
}

func TestTheBinaryLinksNoHTTPServer(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "intel-gpu-cdi")
	if out, err := exec.Command("go", "build", "-tags", bench.ProductTags, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command("go", "tool", "nm", bin).CombinedOutput()
	if err != nil {
		t.Fatalf("go tool nm: %v\n%s", err, out)
	}
	syms := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 3 {
			syms[f[len(f)-1]] = true
		}
	}
	if !syms["main.main"] || !syms["google.golang.org/grpc.(*Server).Serve"] {
		t.Fatalf("go tool nm listed no main.main or gRPC server: not the plugin's symbols")
	}
	for _, f := range forbiddenSymbols {
		if syms[f.symbol] {
			t.Errorf("%s is linked into intel-gpu-cdi: %s", f.symbol, f.why)
		}
	}
}
