package kubeplugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
)

// DefaultDebounce collects the burst of node and link events udev makes
// for one GPU into one rescan.
const DefaultDebounce = 15 * time.Millisecond

// Retry bounds after a failed scan or spec write.
const (
	retryMin = 100 * time.Millisecond
	retryMax = 30 * time.Second
)

// Plugin is the device plugin for all of the node's Intel GPU resources.
type Plugin struct {
	cfg      Config
	log      *slog.Logger
	hub      *hub
	servers  map[string]*server
	specPath string
	// written is the spec on disk as last written by us; nil when none.
	written []byte
	retry   time.Duration
	retryAt time.Time
	lastDev []discovery.Device
}

// New checks the configuration and returns a plugin ready to Run.
func New(opts ...Option) (*Plugin, error) {
	c := Config{
		KubeletSocketDir: DefaultKubeletSocketDir,
		CDISpecDir:       DefaultCDISpecDir,
		SharedDevNum:     1,
		Policy:           PolicyNone,
		Strategies:       Strategies{CRI: true},
		ResyncPeriod:     DefaultResyncPeriod,
		Debounce:         DefaultDebounce,
	}
	for _, o := range opts {
		o(&c)
	}
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("device plugin configuration: %w", err)
	}
	return &Plugin{
		cfg:      c,
		log:      c.Logger,
		hub:      newHub(),
		servers:  map[string]*server{},
		specPath: filepath.Join(c.CDISpecDir, c.Builder.FileName()+".json"),
	}, nil
}

// SpecPath is where the plugin keeps the node's CDI spec.
func (p *Plugin) SpecPath() string { return p.specPath }

// Run serves until ctx ends. It returns an error only when it cannot start
// at all (no way to watch the node); a bad device, a failed spec write or a
// kubelet restart is logged and retried, never fatal. On return the sockets
// are gone and the spec is left in place for running containers.
func (p *Plugin) Run(ctx context.Context) error {
	if n, err := spec.CleanTemp(p.cfg.CDISpecDir); err != nil {
		p.log.Warn("cleaning leftover temporary specs", "dir", p.cfg.CDISpecDir, "err", err)
	} else if n > 0 {
		p.log.Info("removed leftover temporary specs", "dir", p.cfg.CDISpecDir, "count", n)
	}
	p.removeOtherEncoding()

	if n := len(filepath.Clean(p.cfg.KubeletSocketDir)); n > MaxKubeletSocketDirLen {
		return fmt.Errorf("kubelet socket directory %s: %d bytes is too long for the sockets in it (at most %d)", p.cfg.KubeletSocketDir, n, MaxKubeletSocketDirLen)
	}
	if err := os.MkdirAll(p.cfg.KubeletSocketDir, 0o750); err != nil {
		return fmt.Errorf("creating kubelet socket directory %s: %w", p.cfg.KubeletSocketDir, err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("creating file watcher: %w", err)
	}
	defer w.Close()
	if err := w.Add(p.cfg.KubeletSocketDir); err != nil {
		return fmt.Errorf("watching %s: %w", p.cfg.KubeletSocketDir, err)
	}
	p.watchDRI(w)

	defer p.stopServers()
	// The spec is written before any server registers.
	p.rescan(ctx)

	var resync <-chan time.Time
	if p.cfg.ResyncPeriod > 0 {
		t := time.NewTicker(p.cfg.ResyncPeriod)
		defer t.Stop()
		resync = t.C
	}
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()

	for {
		select {
		case <-ctx.Done():
			p.log.Info("shutting down")
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("file watcher closed")
			}
			switch filepath.Dir(ev.Name) {
			case filepath.Clean(p.cfg.KubeletSocketDir):
				if filepath.Base(ev.Name) == KubeletSocket && ev.Has(fsnotify.Create) {
					p.kubeletRestarted(ctx)
				}
			default:
				if filepath.Base(ev.Name) == "dri" && ev.Has(fsnotify.Create) {
					p.watchDRI(w)
				}
				debounce.Reset(p.cfg.Debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("file watcher closed")
			}
			// An overflow loses events: rescan to catch up.
			p.log.Warn("file watcher error; rescanning", "err", err)
			debounce.Reset(p.cfg.Debounce)
		case <-debounce.C:
			p.rescan(ctx)
		case <-resync:
			p.rescan(ctx)
		case <-p.retryAfter():
			p.rescan(ctx)
		}
	}
}

// watchDRI watches <dev-root>/dri, where udev adds and removes the nodes
// (a bind-mounted host /dev/dri delivers the same events). Until it exists
// the dev root is watched so its creation is seen.
func (p *Plugin) watchDRI(w *fsnotify.Watcher) {
	dri := p.cfg.Scanner.DRIDir()
	if err := w.Add(dri); err == nil {
		_ = w.Remove(p.cfg.Scanner.DevRoot())
		return
	}
	if err := w.Add(p.cfg.Scanner.DevRoot()); err != nil {
		p.log.Warn("cannot watch for device changes; relying on periodic resync", "dir", p.cfg.Scanner.DevRoot(), "err", err)
	}
}

// retryAfter returns a channel that fires when a failed rescan is due
// again. The time is fixed when the failure happens, so that events that
// wake the loop meanwhile do not push the retry back.
func (p *Plugin) retryAfter() <-chan time.Time {
	if p.retry == 0 {
		return nil
	}
	return time.After(time.Until(p.retryAt))
}

func (p *Plugin) failed() {
	p.retry = min(max(p.retry*2, retryMin), retryMax)
	p.retryAt = time.Now().Add(p.retry)
}

// rescan reads the node and moves the kubelet and the spec to it, in the
// order that never advertises a GPU without its spec on disk: first the
// spec with the old and new GPUs, then the new list, then the spec with
// only the new GPUs.
func (p *Plugin) rescan(ctx context.Context) {
	start := time.Now()
	res, err := p.cfg.Scanner.Scan()
	if err != nil {
		p.cfg.Observer.Rescan(time.Since(start), err)
		p.log.Error("scanning GPUs", "err", err)
		p.failed()
		return
	}
	for _, s := range res.Skipped {
		p.log.Warn("skipped DRM card", "card", s.Name, "reason", s.Reason)
	}
	prev := p.hub.current()
	next := buildSnapshot(res.Devices, prev, &p.cfg, p.pciGone)

	both, only := union(next, prev), next.specDevices()
	wroteUnion, err := p.writeSpec(both)
	if err != nil {
		p.cfg.Observer.Rescan(time.Since(start), err)
		p.log.Error("writing CDI spec; keeping the previous device list", "path", p.specPath, "err", err)
		p.failed()
		return
	}
	p.hub.publish(next)
	serving := p.ensureServers(ctx, next)
	// union holds next's GPUs and those leaving; with none leaving the
	// spec is already exactly next's, and building it again is waste.
	wroteTrim := false
	if len(both) != len(only) {
		wroteTrim, err = p.writeSpec(only)
	}
	switch {
	case err != nil:
		// The spec on disk still holds every advertised GPU; only GPUs
		// that just left linger in it until the retry.
		p.log.Error("trimming CDI spec", "path", p.specPath, "err", err)
		p.failed()
	case serving:
		p.retry = 0
	}
	p.cfg.Observer.Rescan(time.Since(start), err)
	p.report(next)
	if wroteUnion || wroteTrim {
		// Writing a spec reads it back through the CDI library, whose
		// YAML parser makes megabytes of garbage for a big node. Nothing
		// else allocates on an idle node, so no collection would come for
		// minutes and the plugin would keep that memory: return it now.
		// Specs change only when GPUs do.
		debug.FreeOSMemory()
	}
}

// report tells the observer and the device callback about a new snapshot.
func (p *Plugin) report(s *snapshot) {
	for _, res := range p.resources(s) {
		healthy, unhealthy := 0, 0
		for _, d := range s.lists[res] {
			if d.Health == "Healthy" {
				healthy++
			} else {
				unhealthy++
			}
		}
		p.cfg.Observer.Devices(res, healthy, unhealthy)
	}
	devs := make([]discovery.Device, len(s.gpus))
	for i, g := range s.gpus {
		devs[i] = g.dev
	}
	if p.cfg.OnDevices != nil && !slices.EqualFunc(devs, p.lastDev, sameDevice) {
		p.cfg.OnDevices(devs)
	}
	p.lastDev = devs
}

func sameDevice(a, b discovery.Device) bool {
	return a.PCIAddress == b.PCIAddress && a.Card == b.Card && a.Ready == b.Ready && a.Reason == b.Reason
}

// resources lists the resources to serve: those with GPUs, plus any
// already served (a resource whose last GPU left keeps serving an empty
// list, so the kubelet sees capacity 0 rather than a stale count).
func (p *Plugin) resources(s *snapshot) []string {
	var out []string
	for _, r := range []string{ResourceI915, ResourceXe, ResourceMonitoring} {
		if _, ok := s.lists[r]; ok || p.servers[r] != nil {
			out = append(out, r)
		}
	}
	return out
}

// ensureServers starts a server for every resource that has none and
// reports whether every resource is served; a server that could not start
// is retried with the rescan.
func (p *Plugin) ensureServers(ctx context.Context, s *snapshot) bool {
	ok := true
	for _, r := range p.resources(s) {
		if p.servers[r] != nil {
			continue
		}
		srv := newServer(r, &p.cfg, p.hub)
		if err := srv.start(ctx); err != nil {
			p.log.Error("starting device plugin server", "resource", r, "err", err)
			p.failed()
			ok = false
			continue
		}
		p.servers[r] = srv
	}
	return ok
}

// kubeletRestarted serves on fresh sockets and registers again: a
// restarting kubelet removes every socket in its directory.
func (p *Plugin) kubeletRestarted(ctx context.Context) {
	p.cfg.Observer.KubeletRestart()
	p.log.Info("kubelet restarted; registering again")
	for r, srv := range p.servers {
		if err := srv.restart(ctx); err != nil {
			p.log.Error("restarting device plugin server", "resource", r, "err", err)
			delete(p.servers, r)
			p.failed()
		}
	}
}

func (p *Plugin) stopServers() {
	for r, srv := range p.servers {
		srv.stop()
		delete(p.servers, r)
	}
}

// pciGone reports whether a PCI function left the bus.
func (p *Plugin) pciGone(pci string) bool {
	_, err := os.Stat(filepath.Join(p.cfg.Scanner.SysfsRoot(), "bus", "pci", "devices", pci))
	return errors.Is(err, fs.ErrNotExist)
}

// writeSpec makes the spec on disk hold exactly devs, writing only when
// that changes what is there, and reports whether it wrote. With no device
// the spec is removed: a CDI spec must have one.
func (p *Plugin) writeSpec(devs []discovery.Device) (bool, error) {
	if len(devs) == 0 {
		removed, err := spec.RemoveStale(p.specPath, p.cfg.Builder.Kind())
		if err != nil {
			p.cfg.Observer.SpecWrite(err)
			return false, err
		}
		p.written = nil
		return removed, nil
	}
	s, err := p.cfg.Builder.Build(devs)
	if err != nil {
		return false, err
	}
	data, err := spec.Marshal(s, spec.FormatJSON)
	if err != nil {
		return false, err
	}
	if bytes.Equal(data, p.written) {
		if _, err := os.Stat(p.specPath); err == nil {
			return false, nil
		}
	}
	err = spec.WriteEncoded(p.specPath, data)
	p.cfg.Observer.SpecWrite(err)
	if err != nil {
		return false, err
	}
	p.written = data
	return true, nil
}

// removeOtherEncoding removes our own spec written under the other
// extension (by an older run or by `generate`): two files with the same
// device names make runtimes drop those devices.
func (p *Plugin) removeOtherEncoding() {
	other := filepath.Join(p.cfg.CDISpecDir, p.cfg.Builder.FileName()+".yaml")
	removed, err := spec.RemoveStale(other, p.cfg.Builder.Kind())
	switch {
	case err != nil:
		p.log.Warn("a spec of another owner may conflict with ours", "path", other, "err", err)
	case removed:
		p.log.Info("removed our spec in the other encoding", "path", other)
	}
}
