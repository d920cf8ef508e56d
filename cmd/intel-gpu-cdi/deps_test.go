package main

import (
	"os/exec"
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
