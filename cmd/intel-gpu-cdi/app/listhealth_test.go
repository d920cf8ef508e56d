package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health/uevent"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// TestListShowsWhatTheKernelSaysOfEachGPU: list reads the kernel's health
// signals in sysfs, and the running plugin's state file for what only a
// uevent said (a wedge), without writing it.
func TestListShowsWhatTheKernelSaysOfEachGPU(t *testing.T) {
	n := fakenode.NewT(t)
	n.MustApply(t, fakenode.Demo)
	const survivor, wedged = "0000:07:00.0", "0000:03:00.0"
	if err := n.SetSurvivabilityMode(survivor, true); err != nil {
		t.Fatal(err)
	}

	// The plugin heard the wedge and kept it in its state file.
	state := filepath.Join(t.TempDir(), "health.json")
	feed := fakenode.NewUeventFeed()
	plugin, err := health.New(health.WithSysfsRoot(n.Sys), health.WithStateFile(state),
		health.WithUeventConn(func() (uevent.Conn, error) { return feed, nil }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- plugin.Run(ctx) }()
	msg, err := n.WedgedEvent(wedged, "rebind")
	if err != nil {
		t.Fatal(err)
	}
	if err := feed.Send(ctx, msg); err != nil {
		t.Fatal(err)
	}
	// A Check saves what the listener heard; a deadline, not a timing.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if b, err := os.ReadFile(state); err == nil && bytes.Contains(b, []byte(`"wedged"`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the plugin never kept the wedge in its state file")
		}
		plugin.Check(nil)
	}
	cancel()
	<-done
	before, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}

	r := run(t, args([]string{"list", "--health-state-file", state}, roots(n))...)
	if r.code != 0 {
		t.Fatal(r.err)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^NAME .* HEALTH +STATUS$`),
		regexp.MustCompile(`(?m)^card0 .* healthy +ready$`),
		regexp.MustCompile(`(?m)^card1 .* wedged \(rebind\) +ready$`),
		regexp.MustCompile(`(?m)^card2 .* survivability-mode +ready$`),
		regexp.MustCompile(`(?m)^card1 is unhealthy: .*rebind`),
		regexp.MustCompile(`(?m)^card2 is unhealthy: .*firmware`),
	} {
		if !want.MatchString(r.stdout) {
			t.Errorf("no line matching %s in\n%s", want, r.stdout)
		}
	}
	if after, _ := os.ReadFile(state); string(after) != string(before) {
		t.Error("list wrote the plugin's state file")
	}

	r = run(t, args([]string{"list", "--format", "json", "--health-state-file", state}, roots(n))...)
	if r.code != 0 {
		t.Fatal(r.err)
	}
	var out struct {
		Devices []struct {
			PCIAddress string `json:"pciAddress"`
			Health     *struct {
				Healthy       bool     `json:"healthy"`
				Reason        string   `json:"reason"`
				WedgedMethods []string `json:"wedgedMethods"`
			} `json:"health"`
		} `json:"devices"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, d := range out.Devices {
		if d.Health == nil {
			t.Fatalf("%s has no health", d.PCIAddress)
		}
		got[d.PCIAddress] = d.Health.Reason
		if d.Health.Healthy != (d.Health.Reason == "") {
			t.Errorf("%s: healthy %v with reason %q", d.PCIAddress, d.Health.Healthy, d.Health.Reason)
		}
	}
	want := map[string]string{"0000:00:02.0": "", wedged: "wedged", survivor: "survivability-mode"}
	for pci, reason := range want {
		if got[pci] != reason {
			t.Errorf("%s: reason %q, want %q", pci, got[pci], reason)
		}
	}

	t.Run("without the state file only sysfs speaks", func(t *testing.T) {
		r := run(t, args([]string{"list", "--health-state-file", ""}, roots(n))...)
		if r.code != 0 {
			t.Fatal(r.err)
		}
		if !regexp.MustCompile(`(?m)^card1 .* healthy +ready$`).MatchString(r.stdout) {
			t.Errorf("card1 should read healthy without the plugin's record:\n%s", r.stdout)
		}
	})
}
