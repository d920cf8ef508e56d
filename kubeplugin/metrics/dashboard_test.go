package metrics_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/metrics"
)

const dashboardPath = "../../deployments/grafana/intel-gpu-cdi.json"

// exported lists every metric name the plugin exports, the histogram
// series (_bucket, _sum, _count) included.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	mfs, err := metrics.New().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		names[mf.GetName()] = true
		if mf.GetType().String() == "HISTOGRAM" {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[mf.GetName()+suffix] = true
			}
		}
	}
	for name := range gpuCollectorNames(t) {
		names[name] = true
	}
	return names
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// gpuCollectorNames are the names the GPU collector describes.
func gpuCollectorNames(t *testing.T) map[string]bool {
	t.Helper()
	c := metrics.NewGPUCollector(t.TempDir(), func() []metrics.GPU { return nil },
		metrics.WithHealthStats(func() health.Stats { return health.Stats{} }))
	ch := make(chan *prometheus.Desc, 64)
	c.Describe(ch)
	close(ch)
	names := map[string]bool{}
	for d := range ch {
		m := fqName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no fqName in %s", d)
		}
		names[m[1]] = true
	}
	return names
}

// exprs collects every "expr" and "query"/"definition" string of the
// dashboard, wherever it sits.
func exprs(v any, out *[]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok && (k == "expr" || k == "definition") {
				*out = append(*out, s)
			}
			exprs(e, out)
		}
	case []any:
		for _, e := range x {
			exprs(e, out)
		}
	}
}

var metricName = regexp.MustCompile(`\bintel_gpu_cdi_[a-zA-Z0-9_]+`)

func TestTheDashboardQueriesOnlyMetricsThePluginExports(t *testing.T) {
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s is not JSON: %v", dashboardPath, err)
	}
	for _, key := range []string{"title", "uid", "panels", "templating"} {
		if dash[key] == nil {
			t.Errorf("the dashboard has no %s", key)
		}
	}

	var all []string
	exprs(dash, &all)
	if len(all) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	known := exported(t)
	used := map[string]bool{}
	for _, e := range all {
		for _, name := range metricName.FindAllString(e, -1) {
			used[name] = true
			if !known[name] {
				t.Errorf("the dashboard queries %s, which the plugin does not export (in %q)", name, e)
			}
		}
	}
	// Every GPU series the collector makes is on the dashboard.
	for name := range gpuCollectorNames(t) {
		if !used[name] {
			t.Errorf("the dashboard does not show %s", name)
		}
	}

	// Panel ids are unique, as Grafana requires.
	var ids []float64
	for _, p := range dash["panels"].([]any) {
		panel := p.(map[string]any)
		id, ok := panel["id"].(float64)
		if !ok {
			t.Errorf("panel %v has no id", panel["title"])
			continue
		}
		if slices.Contains(ids, id) {
			t.Errorf("panel id %v is used twice", id)
		}
		ids = append(ids, id)
		if panel["type"] != "row" {
			ds, _ := json.Marshal(panel["datasource"])
			if !strings.Contains(string(ds), "${datasource}") {
				t.Errorf("panel %v does not use the datasource variable", panel["title"])
			}
		}
	}
}
