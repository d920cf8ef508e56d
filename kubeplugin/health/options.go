package health

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health/uevent"
)

// Source is one kind of health signal; a Source value is a set of them.
// Each can be turned off on its own (a flag of the plugin), for a kernel or
// a platform where a signal is noisy or absent.
type Source uint8

// The health sources.
const (
	// SourceUevent listens for kernel uevents, which makes every other
	// source react within milliseconds and is the only way to learn of a
	// wedge (WEDGED= exists in no sysfs file). Off, the Monitor reads sysfs
	// when asked (Check) and nothing else.
	SourceUevent Source = 1 << iota
	// SourceWedge turns a GPU Unhealthy on a DRM wedged event (WEDGED=)
	// and while its PCI function shows survivability_mode (xe: firmware
	// flash needed).
	SourceWedge
	// SourceHangs counts GPU hangs: devcoredumps whose failing_device is
	// the GPU (xe, and any driver using devcoredump) and i915's ERROR=1
	// events.
	SourceHangs
	// SourceAER reads the PCI function's aer_dev_* counters and follows the
	// kernel's PCIe error recovery events.
	SourceAER
	// SourceGone turns a GPU Unhealthy while its PCI function is missing
	// from sysfs or its config space reads all ones.
	SourceGone

	// AllSources is every source: the default.
	AllSources = SourceUevent | SourceWedge | SourceHangs | SourceAER | SourceGone
)

// sourceNames lists the sources in the order String and ParseSources use.
var sourceNames = []struct {
	s    Source
	name string
}{
	{SourceUevent, "uevent"},
	{SourceWedge, "wedge"},
	{SourceHangs, "hangs"},
	{SourceAER, "aer"},
	{SourceGone, "gone"},
}

// SourceNames lists the name of every source, as ParseSources reads them.
func SourceNames() []string {
	out := make([]string, len(sourceNames))
	for i, n := range sourceNames {
		out[i] = n.name
	}
	return out
}

// String names the set as ParseSources reads it: "uevent,wedge", "none".
func (s Source) String() string {
	var names []string
	for _, n := range sourceNames {
		if s&n.s != 0 {
			names = append(names, n.name)
		}
	}
	if rest := s &^ AllSources; rest != 0 {
		names = append(names, fmt.Sprintf("Source(%#x)", uint8(rest)))
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

// ParseSources reads a comma-separated list of source names (uevent,
// wedge, hangs, aer, gone), or "all", or "none". The error names the word
// it does not know.
func ParseSources(list string) (Source, error) {
	var out Source
	for _, word := range strings.Split(list, ",") {
		word = strings.TrimSpace(word)
		switch word {
		case "", "none":
			continue
		case "all":
			out |= AllSources
			continue
		}
		found := false
		for _, n := range sourceNames {
			if n.name == word {
				out |= n.s
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown health source %q: want a comma list of uevent, wedge, hangs, aer, gone, or all or none", word)
		}
	}
	return out, nil
}

// Thresholds say how many of a counted signal take a GPU out. A count is
// taken from the moment the driver bound the GPU (or the Monitor first saw
// it), so a driver rebind starts it again; 0 means the signal never takes a
// GPU out (it is still counted and reported).
type Thresholds struct {
	// FatalAER is the rise of TOTAL_ERR_FATAL that makes a GPU Unhealthy.
	FatalAER uint64
	// NonfatalAER is the rise of TOTAL_ERR_NONFATAL that makes a GPU
	// Unhealthy.
	NonfatalAER uint64
	// Hangs is the number of hangs that makes a GPU Unhealthy.
	Hangs uint64
}

// DefaultThresholds: one fatal PCIe error takes a GPU out; non-fatal PCIe
// errors and hangs never do by themselves (see the package documentation).
var DefaultThresholds = Thresholds{FatalAER: 1}

// Option configures a Monitor.
type Option func(*config)

type config struct {
	root       string
	log        *slog.Logger
	sources    Source
	thresholds Thresholds
	open       func() (uevent.Conn, error)
	openSet    bool
	rcvbuf     int
	stateFile  string
	// stateReadOnly: the state file is someone else's (a running plugin's)
	// to write; it is only read.
	stateReadOnly bool
}

// WithSysfsRoot sets where sysfs is mounted (default /sys). Every file the
// Monitor reads, and every DEVPATH a uevent names, is taken below it.
func WithSysfsRoot(root string) Option { return func(c *config) { c.root = root } }

// WithLogger sets the logger (default: discard). The Monitor logs a
// missing uevent socket, lost events and every health change of a GPU.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// WithSources sets which sources are on (default AllSources).
func WithSources(s Source) Option { return func(c *config) { c.sources = s } }

// WithThresholds replaces DefaultThresholds.
func WithThresholds(t Thresholds) Option { return func(c *config) { c.thresholds = t } }

// WithReceiveBuffer sets the uevent socket's receive buffer in bytes
// (default uevent.DefaultReceiveBuffer).
func WithReceiveBuffer(n int) Option { return func(c *config) { c.rcvbuf = n } }

// WithStateFile keeps what only the Monitor knows — wedges, failed PCIe
// recoveries, the PCIe error counts each GPU's binding started from — in
// path, so a restarted plugin still reports a wedged GPU (default: none,
// state lives in memory). Put it on tmpfs, outside any CDI spec directory
// (a runtime would read a .json there as a spec): /var/run/intel-gpu-cdi/
// health.json. Entries for GPUs rebound while no Monitor ran, and a file
// from an earlier boot, are ignored.
func WithStateFile(path string) Option { return func(c *config) { c.stateFile = path } }

// WithStateFileOf reads, and never writes, the state file a running plugin
// keeps at path: what `intel-gpu-cdi list` uses to show a wedge that only
// the plugin heard of. A path holding anything else is not read.
func WithStateFileOf(path string) Option {
	return func(c *config) { c.stateFile, c.stateReadOnly = path, true }
}

// WithUeventConn replaces the kernel's netlink socket as the source of
// uevents: open is called once by Run. Tests feed recorded or generated
// messages this way, and a failing open stands for a node without netlink
// access.
func WithUeventConn(open func() (uevent.Conn, error)) Option {
	return func(c *config) { c.open, c.openSet = open, true }
}

// check validates a configuration; errors name the setting.
func (c *config) check() error {
	if c.root == "" {
		return fmt.Errorf("health: sysfs root is empty")
	}
	if c.log == nil {
		return fmt.Errorf("health: logger is nil")
	}
	if rest := c.sources &^ AllSources; rest != 0 {
		return fmt.Errorf("health: unknown sources %#x", uint8(rest))
	}
	if c.rcvbuf <= 0 {
		return fmt.Errorf("health: receive buffer %d is not positive", c.rcvbuf)
	}
	if c.open == nil {
		return fmt.Errorf("health: uevent source is nil")
	}
	return nil
}
