package rig

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Registrations returns the kubelet's device_plugin_registration_total per
// resource name: it grows by one each time a plugin registers, and starts at
// zero with every kubelet process.
func (r *Rig) Registrations(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(r.ReadOnlyPort)+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("kubelet GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	const prefix = `kubelet_device_plugin_registration_total{resource_name="`
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		name, value, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return nil, fmt.Errorf("parsing %q: %w", line, err)
		}
		out[name] = v
	}
	return out, sc.Err()
}

// WaitRegistered waits until every resource has registered more times than
// in before (nil: at least once).
func (r *Rig) WaitRegistered(ctx context.Context, before map[string]float64, resources []string, timeout time.Duration) error {
	return WaitFor(timeout, 100*time.Millisecond, func() (bool, error) {
		now, err := r.Registrations(ctx)
		if err != nil {
			return false, err
		}
		for _, res := range resources {
			if now[res] <= before[res] {
				return false, fmt.Errorf("%s registered %v times, %v before", res, now[res], before[res])
			}
		}
		return true, nil
	})
}
