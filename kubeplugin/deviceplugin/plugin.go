package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/dirwatch"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/node"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/retry"
)

// Plugin is the device plugin for all of the node's Intel GPU resources:
// one gRPC server and kubelet registration per resource. It is a
// node.Subscriber; Run follows the kubelet.
type Plugin struct {
	cfg Config
	log *slog.Logger
	hub *hub

	mu      sync.Mutex
	servers map[string]*server
	// last is the inventory of the last Update; nil before the first.
	last *inventory
	// watching is set once Run follows the kubelet: servers start only
	// then, so that no kubelet restart can come between a registration and
	// the watch that would see it.
	watching bool
	// closed is set when Run returns: no server starts after that.
	closed bool
}

var _ node.Subscriber = (*Plugin)(nil)

// New checks cfg and returns a plugin. Subscribe it to a node, run both.
func New(cfg Config) (*Plugin, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Plugin{
		cfg:     cfg,
		log:     cfg.Logger,
		hub:     newHub(),
		servers: map[string]*server{},
	}, nil
}

// Update takes a new snapshot of the node: the lists every ListAndWatch
// stream sends change at once, and a resource seen for the first time gets
// its server and registers. The node calls it after the spec holding the
// snapshot's GPUs is on disk.
func (p *Plugin) Update(ctx context.Context, s *node.Snapshot) error {
	inv := newInventory(s, &p.cfg)
	p.hub.Publish(inv)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.last = inv
	p.report(inv)
	if !p.watching {
		// Run serves this inventory once it follows the kubelet.
		return nil
	}
	if _, err := os.Stat(p.cfg.KubeletSocketDir); errors.Is(err, fs.ErrNotExist) {
		// No kubelet yet: Run serves and registers when it makes its
		// directory.
		return nil
	}
	return p.ensureServers(ctx, inv)
}

// Ready reports whether the plugin has had a snapshot and every resource
// it serves is registered with the kubelet.
func (p *Plugin) Ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last == nil {
		return errors.New("device plugin: no GPU state yet")
	}
	for _, r := range p.resources(p.last) {
		srv := p.servers[r]
		if srv == nil {
			return fmt.Errorf("device plugin: %s is not served", r)
		}
		if !srv.registered.Load() {
			return fmt.Errorf("device plugin: %s is not registered with the kubelet", r)
		}
	}
	return nil
}

// Run follows the kubelet until ctx ends: when the kubelet restarts (it
// wipes every socket in its directory and creates kubelet.sock again) the
// plugin serves on fresh sockets and registers again. The socket directory
// may be removed and created again when its parent can be watched;
// otherwise it must exist (see Config.KubeletSocketDir). On return every
// server is stopped and its socket removed.
func (p *Plugin) Run(ctx context.Context) error {
	dir := filepath.Clean(p.cfg.KubeletSocketDir)
	parent := filepath.Dir(dir)
	shared := p.cfg.Watcher
	if shared == nil {
		own, err := dirwatch.New()
		if err != nil {
			return err
		}
		defer own.Close()
		shared = own
	}
	w := shared.Follow()
	defer w.Close()
	// The parent tells when the directory is made (again); a directory
	// that is not there yet is watched once its parent reports it. A
	// parent this process may not read (the kubelet's root dir is 0750 on
	// some hosts, and a non-root plugin is not in its group) leaves the
	// directory itself, which must then exist.
	parentErr := w.Add(parent)
	if err := w.Add(dir); err != nil && parentErr != nil {
		return fmt.Errorf("watching the kubelet socket directory %s (%w) or its parent (%w)", dir, err, parentErr)
	}
	if parentErr != nil {
		p.log.Warn("cannot watch the kubelet socket directory's parent: the directory being removed and made again will not be seen", "parent", parent, "err", parentErr)
	}
	defer p.close()

	restarts := retry.New(retry.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Cap: 30 * time.Second})
	defer restarts.Reset()
	// Serve what Updates brought before the watches were set, and what a
	// kubelet that made its directory meanwhile can now take.
	p.mu.Lock()
	p.watching = true
	p.mu.Unlock()
	p.retryServers(ctx, restarts)
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events():
			if !ok {
				return errors.New("kubelet socket directory watcher closed")
			}
			switch {
			case ev.Name == dir && ev.Has(fsnotify.Create):
				_ = w.Add(dir)
				// The kubelet serves once it made kubelet.sock, which may
				// have come before the watch did.
				if _, err := os.Stat(filepath.Join(dir, KubeletSocket)); err == nil {
					p.kubeletRestarted(ctx, restarts)
				}
			case ev.Name == dir:
				_ = w.Remove(dir)
			case ev.Name == filepath.Join(dir, KubeletSocket) && ev.Has(fsnotify.Create):
				p.kubeletRestarted(ctx, restarts)
			}
		case err, ok := <-w.Errors():
			if !ok {
				return errors.New("kubelet socket directory watcher closed")
			}
			// A lost event may have been the kubelet coming back:
			// serving and registering again is harmless.
			p.log.Warn("kubelet socket directory watcher error; registering again", "err", err)
			p.kubeletRestarted(ctx, restarts)
		case <-restarts.After():
			p.retryServers(ctx, restarts)
		}
	}
}

// kubeletRestarted serves on fresh sockets and registers again: a
// restarting kubelet removes every socket in its directory.
func (p *Plugin) kubeletRestarted(ctx context.Context, r *retry.Retry) {
	p.cfg.Observer.KubeletRestart()
	p.log.Info("kubelet (re)started; registering again")
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	failed := false
	for _, res := range sortedKeys(p.servers) {
		if err := p.servers[res].restart(ctx); err != nil {
			p.log.Error("restarting device plugin server", "resource", res, "err", err)
			delete(p.servers, res)
			failed = true
		}
	}
	if p.last != nil && p.startServers(ctx, p.last) != nil {
		failed = true
	}
	if failed {
		r.Failed()
	} else {
		r.Reset()
	}
}

func (p *Plugin) retryServers(ctx context.Context, r *retry.Retry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.last == nil {
		return
	}
	if p.startServers(ctx, p.last) != nil {
		r.Failed()
	} else {
		r.Reset()
	}
}

// startServers is ensureServers for Run, which retries on its own: the
// failure is logged here, as the node logs that of an Update.
func (p *Plugin) startServers(ctx context.Context, inv *inventory) error {
	err := p.ensureServers(ctx, inv)
	if err != nil {
		p.log.Error("device plugin servers could not start; retrying", "err", err)
	}
	return err
}

// ensureServers starts a server for every resource that has none. A server
// that could not start is retried by whoever called: the node after a
// failed Update, Run after a failed restart. Called with mu held.
func (p *Plugin) ensureServers(ctx context.Context, inv *inventory) error {
	var errs []error
	for _, r := range p.resources(inv) {
		if p.servers[r] != nil {
			continue
		}
		srv := newServer(r, &p.cfg, p.hub)
		if err := srv.start(ctx); err != nil {
			errs = append(errs, fmt.Errorf("starting device plugin server for %s: %w", r, err))
			continue
		}
		p.servers[r] = srv
	}
	return errors.Join(errs...)
}

// resources lists the resources to serve: those with GPUs, plus any
// already served (a resource whose last GPU left keeps serving an empty
// list, so the kubelet sees capacity 0 rather than a stale count).
func (p *Plugin) resources(inv *inventory) []string {
	var out []string
	for _, r := range []string{ResourceI915, ResourceXe, ResourceMonitoring} {
		if _, ok := inv.lists[r]; ok || p.servers[r] != nil {
			out = append(out, r)
		}
	}
	return out
}

// report tells the observer how many devices each resource has.
func (p *Plugin) report(inv *inventory) {
	for _, res := range p.resources(inv) {
		healthy, unhealthy := 0, 0
		for _, d := range inv.lists[res] {
			if d.Health == "Healthy" {
				healthy++
			} else {
				unhealthy++
			}
		}
		p.cfg.Observer.Devices(res, healthy, unhealthy)
	}
}

func (p *Plugin) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for r, srv := range p.servers {
		srv.stop()
		delete(p.servers, r)
	}
}

func sortedKeys(m map[string]*server) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
