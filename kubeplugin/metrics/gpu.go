package metrics

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
)

// GPU is one GPU the GPUCollector reports on.
type GPU struct {
	PCIAddress string
	Card       string
	// Health is the GPU's status from the health Monitor; nil leaves out
	// the health, hang and driver-recovery series.
	Health *health.Status
}

// GPUCollector is a prometheus.Collector of per-GPU series: health, hangs,
// PCIe errors, and what sysfs shows without privilege — hwmon temperature,
// power and energy where the GPU has them, current, maximum and actual GT
// frequency. It reads sysfs at each scrape, for the GPUs the caller's
// function names at that moment. A file that is missing or unreadable
// leaves its series out; it is never reported as 0.
//
// A GPU whose PCI function is runtime-suspended gets no hwmon or frequency
// series: i915 and xe wake the device to answer those reads, and a scrape
// every few seconds would keep an idle discrete GPU from ever sleeping.
type GPUCollector struct {
	root  string
	gpus  func() []GPU
	stats func() health.Stats

	healthy, hangs, recoveries, pcieErrors  *prometheus.Desc
	temperature, power, energy              *prometheus.Desc
	freqCurrent, freqMax, freqActual        *prometheus.Desc
	listenerUp, uevents, overflows, dropped *prometheus.Desc
}

var _ prometheus.Collector = (*GPUCollector)(nil)

// GPUOption configures a GPUCollector.
type GPUOption func(*GPUCollector)

// WithHealthStats adds the health Monitor's own series (uevent listener
// up, uevents by result, overflows), read from stats at each scrape.
func WithHealthStats(stats func() health.Stats) GPUOption {
	return func(c *GPUCollector) { c.stats = stats }
}

// NewGPUCollector reads below sysfsRoot for the GPUs gpus returns.
func NewGPUCollector(sysfsRoot string, gpus func() []GPU, opts ...GPUOption) *GPUCollector {
	gpu := []string{"pci_address", "card"}
	with := func(extra ...string) []string { return append(append([]string(nil), gpu...), extra...) }
	name := func(n string) string { return prometheus.BuildFQName(Namespace, "gpu", n) }
	c := &GPUCollector{
		root: sysfsRoot,
		gpus: gpus,
		healthy: prometheus.NewDesc(name("healthy"),
			"1 when the GPU is healthy, 0 when not; reason says why not (wedged, survivability-mode, aer-fatal, gone, …).",
			with("reason"), nil),
		hangs: prometheus.NewDesc(name("hangs_total"),
			"GPU hangs seen since the plugin started: devcoredumps naming the GPU and i915 error events.", gpu, nil),
		recoveries: prometheus.NewDesc(name("driver_recoveries_total"),
			"Times the driver found the GPU wedged and recovered it itself (WEDGED=none).", gpu, nil),
		pcieErrors: prometheus.NewDesc(name("pcie_errors_total"),
			"PCIe errors the kernel counted for the GPU's function since it was enumerated (aer_dev_*), by severity: correctable, nonfatal, fatal.",
			with("severity"), nil),
		temperature: prometheus.NewDesc(name("temperature_celsius"),
			"Temperature from the GPU's hwmon (temp*_input), by sensor label.", with("sensor"), nil),
		power: prometheus.NewDesc(name("power_watts"),
			"Power from the GPU's hwmon (power*_input, else power*_average), by sensor label.", with("sensor"), nil),
		energy: prometheus.NewDesc(name("energy_joules_total"),
			"Energy used from the GPU's hwmon (energy*_input), by sensor label; rate() of it is the power.", with("sensor"), nil),
		freqCurrent: prometheus.NewDesc(name("frequency_current_hertz"),
			"GT frequency requested now (i915 rps_cur_freq_mhz / gt_cur_freq_mhz, xe cur_freq).", with("gt"), nil),
		freqMax: prometheus.NewDesc(name("frequency_max_hertz"),
			"Highest GT frequency allowed (i915 rps_max_freq_mhz / gt_max_freq_mhz, xe max_freq).", with("gt"), nil),
		freqActual: prometheus.NewDesc(name("frequency_actual_hertz"),
			"GT frequency the hardware runs at (i915 rps_act_freq_mhz / gt_act_freq_mhz, xe act_freq); 0 while the GT sleeps.", with("gt"), nil),
		listenerUp: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "health", "uevent_listener_up"),
			"1 while the health monitor hears kernel uevents; 0 when it cannot (no netlink access): wedged GPUs then go unnoticed.", nil, nil),
		uevents: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "health", "uevents_total"),
			"Kernel uevent messages read, by result: parsed, malformed, foreign (not sent by the kernel).", []string{"result"}, nil),
		overflows: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "health", "uevent_overflows_total"),
			"Times the kernel dropped uevents because the socket buffer was full (every GPU was re-checked).", nil, nil),
		dropped: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "health", "uevents_dropped_total"),
			"Uevents about a GPU that could not be tracked (gone before they were handled).", nil, nil),
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *GPUCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.healthy, c.hangs, c.recoveries, c.pcieErrors, c.temperature, c.power, c.energy,
		c.freqCurrent, c.freqMax, c.freqActual,
	} {
		ch <- d
	}
	if c.stats != nil {
		for _, d := range []*prometheus.Desc{c.listenerUp, c.uevents, c.overflows, c.dropped} {
			ch <- d
		}
	}
}

// Collect implements prometheus.Collector.
func (c *GPUCollector) Collect(ch chan<- prometheus.Metric) {
	for _, g := range c.gpus() {
		c.collectGPU(ch, &g)
	}
	if c.stats != nil {
		st := c.stats()
		up := 0.0
		if st.Listener == health.ListenerListening {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.listenerUp, prometheus.GaugeValue, up)
		parsed := st.Received - st.Malformed - st.Foreign
		ch <- prometheus.MustNewConstMetric(c.uevents, prometheus.CounterValue, float64(parsed), "parsed")
		ch <- prometheus.MustNewConstMetric(c.uevents, prometheus.CounterValue, float64(st.Malformed), "malformed")
		ch <- prometheus.MustNewConstMetric(c.uevents, prometheus.CounterValue, float64(st.Foreign), "foreign")
		ch <- prometheus.MustNewConstMetric(c.overflows, prometheus.CounterValue, float64(st.Overflows))
		ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(st.Dropped))
	}
}

func (c *GPUCollector) collectGPU(ch chan<- prometheus.Metric, g *GPU) {
	labels := []string{g.PCIAddress, g.Card}
	with := func(extra string) []string { return []string{g.PCIAddress, g.Card, extra} }
	if s := g.Health; s != nil {
		v := 0.0
		if s.Healthy {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.healthy, prometheus.GaugeValue, v, with(string(s.Reason))...)
		ch <- prometheus.MustNewConstMetric(c.hangs, prometheus.CounterValue, float64(s.Counters.Hangs), labels...)
		ch <- prometheus.MustNewConstMetric(c.recoveries, prometheus.CounterValue, float64(s.Counters.DriverRecoveries), labels...)
	}
	fnDir := health.FunctionDir(c.root, g.PCIAddress)
	if aer, err := health.ReadAER(fnDir); err == nil {
		ch <- prometheus.MustNewConstMetric(c.pcieErrors, prometheus.CounterValue, float64(aer.Correctable), with("correctable")...)
		ch <- prometheus.MustNewConstMetric(c.pcieErrors, prometheus.CounterValue, float64(aer.Nonfatal), with("nonfatal")...)
		ch <- prometheus.MustNewConstMetric(c.pcieErrors, prometheus.CounterValue, float64(aer.Fatal), with("fatal")...)
	}
	if suspended(fnDir) {
		return
	}
	for _, r := range hwmonReadings(fnDir) {
		switch r.kind {
		case "temp":
			ch <- prometheus.MustNewConstMetric(c.temperature, prometheus.GaugeValue, float64(r.value)/1e3, with(r.sensor)...)
		case "power":
			ch <- prometheus.MustNewConstMetric(c.power, prometheus.GaugeValue, float64(r.value)/1e6, with(r.sensor)...)
		case "energy":
			ch <- prometheus.MustNewConstMetric(c.energy, prometheus.CounterValue, float64(r.value)/1e6, with(r.sensor)...)
		}
	}
	for _, f := range gtFrequencies(c.root, fnDir, g.Card) {
		desc := map[string]*prometheus.Desc{"cur": c.freqCurrent, "max": c.freqMax, "act": c.freqActual}[f.kind]
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(f.mhz)*1e6, with(f.gt)...)
	}
}

// suspended reports whether the function is runtime-suspended.
func suspended(fnDir string) bool {
	b, err := os.ReadFile(filepath.Join(fnDir, "power", "runtime_status"))
	return err == nil && strings.TrimSpace(string(b)) == "suspended"
}

// readInt reads a sysfs attribute holding one integer; false when it is
// missing, unreadable or not a number.
func readInt(p string) (int64, bool) {
	b, err := os.ReadFile(p)
	if err != nil || len(b) > 64 {
		return 0, false
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return v, err == nil
}

// hwmonReading is one hwmon channel's raw value (m°C, µW or µJ).
type hwmonReading struct {
	kind, sensor string
	value        int64
}

// The regular expressions of this file are compiled on first use: the
// plugin without --metrics-address never needs them.
var hwmonInput = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^(temp|power|energy)([0-9]+)_(input|average)$`)
})

// hwmonReadings reads every temperature, power and energy channel of the
// hwmon devices below the function. A channel is named by its label file
// ("pkg", "vram", "card") or else by itself ("temp1"); with more than one
// hwmon device the device's name comes first ("hwmon3/pkg").
func hwmonReadings(fnDir string) []hwmonReading {
	dirs, _ := filepath.Glob(filepath.Join(fnDir, "hwmon", "hwmon[0-9]*"))
	sort.Strings(dirs)
	var out []hwmonReading
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		// power*_input wins over power*_average for the same channel.
		seen := map[string]bool{}
		names := make([]string, 0, len(entries))
		for _, e := range entries {
			names = append(names, e.Name())
		}
		sort.Slice(names, func(i, j int) bool {
			ii, jj := strings.HasSuffix(names[i], "_input"), strings.HasSuffix(names[j], "_input")
			if ii != jj {
				return ii
			}
			return names[i] < names[j]
		})
		for _, name := range names {
			m := hwmonInput().FindStringSubmatch(name)
			if m == nil || (m[3] == "average" && m[1] != "power") {
				continue
			}
			channel := m[1] + m[2]
			if seen[channel] {
				continue
			}
			v, ok := readInt(filepath.Join(dir, name))
			if !ok {
				continue
			}
			seen[channel] = true
			sensor := channel
			if b, err := os.ReadFile(filepath.Join(dir, channel+"_label")); err == nil {
				if l := strings.ToValidUTF8(strings.TrimSpace(string(b)), "?"); l != "" {
					sensor = l
				}
			}
			if len(dirs) > 1 {
				sensor = filepath.Base(dir) + "/" + sensor
			}
			out = append(out, hwmonReading{kind: m[1], sensor: sensor, value: v})
		}
	}
	return out
}

// gtFrequency is one GT's frequency of one kind (cur, max, act) in MHz.
type gtFrequency struct {
	gt, kind string
	mhz      int64
}

var gtName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^gt[0-9]+$`) })

// gtFrequencies reads the GT frequencies where each driver keeps them:
// i915 per GT on the card (cardN/gt/gtK/rps_*_freq_mhz; older kernels only
// cardN/gt_*_freq_mhz, which is gt0), xe per GT below the function
// (tileT/gtK/freq0/*_freq; GT numbers are unique across tiles).
func gtFrequencies(root, fnDir, card string) []gtFrequency {
	var out []gtFrequency
	kinds := []string{"cur", "max", "act"}
	add := func(gt, kind, p string) {
		if v, ok := readInt(p); ok && v >= 0 {
			out = append(out, gtFrequency{gt: gt, kind: kind, mhz: v})
		}
	}
	if card != "" {
		cardDir := health.CardDir(root, card)
		gts, _ := filepath.Glob(filepath.Join(cardDir, "gt", "gt[0-9]*"))
		sort.Strings(gts)
		for _, dir := range gts {
			if gt := filepath.Base(dir); gtName().MatchString(gt) {
				for _, k := range kinds {
					add(gt, k, filepath.Join(dir, "rps_"+k+"_freq_mhz"))
				}
			}
		}
		if len(gts) == 0 {
			for _, k := range kinds {
				add("gt0", k, filepath.Join(cardDir, "gt_"+k+"_freq_mhz"))
			}
		}
	}
	freqs, _ := filepath.Glob(filepath.Join(fnDir, "tile[0-9]*", "gt[0-9]*", "freq0"))
	sort.Strings(freqs)
	for _, dir := range freqs {
		if gt := filepath.Base(filepath.Dir(dir)); gtName().MatchString(gt) {
			for _, k := range kinds {
				add(gt, k, filepath.Join(dir, k+"_freq"))
			}
		}
	}
	return out
}
