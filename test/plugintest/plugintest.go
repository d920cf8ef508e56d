// Package plugintest runs the kubelet device plugin as the command wires
// it (a node model with the device plugin subscribed) inside a test
// process, configured by options that tests compose.
package plugintest

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/node"
)

// Config holds both configurations.
type Config struct {
	Node         node.Config
	DevicePlugin deviceplugin.Config
	subs         []node.Subscriber
	monitor      *health.Monitor
}

// Option changes a Config.
type Option func(*Config)

// Observer is what a test observer implements to hear both components.
type Observer interface {
	node.Observer
	deviceplugin.Observer
}

func WithScanner(s *discovery.Scanner) Option { return func(c *Config) { c.Node.Scanner = s } }
func WithBuilder(b *spec.Builder) Option      { return func(c *Config) { c.Node.Builder = b } }
func WithCDISpecDir(d string) Option          { return func(c *Config) { c.Node.CDISpecDir = d } }
func WithAllowIDs(ids []string) Option        { return func(c *Config) { c.Node.AllowIDs = ids } }
func WithDenyIDs(ids []string) Option         { return func(c *Config) { c.Node.DenyIDs = ids } }
func WithResyncPeriod(d time.Duration) Option { return func(c *Config) { c.Node.ResyncPeriod = d } }
func WithDebounce(d time.Duration) Option     { return func(c *Config) { c.Node.Debounce = d } }
func WithKubeletSocketDir(d string) Option {
	return func(c *Config) { c.DevicePlugin.KubeletSocketDir = d }
}
func WithSharedDevNum(n int) Option { return func(c *Config) { c.DevicePlugin.SharedDevNum = n } }
func WithPolicy(p deviceplugin.Policy) Option {
	return func(c *Config) { c.DevicePlugin.Policy = p }
}
func WithStrategies(s deviceplugin.Strategies) Option {
	return func(c *Config) { c.DevicePlugin.Strategies = s }
}
func WithMonitoring(on bool) Option { return func(c *Config) { c.DevicePlugin.EnableMonitoring = on } }
func WithLogger(l *slog.Logger) Option {
	return func(c *Config) { c.Node.Logger, c.DevicePlugin.Logger = l, l }
}
func WithObserver(o Observer) Option {
	return func(c *Config) { c.Node.Observer, c.DevicePlugin.Observer = o, o }
}

// WithHealth gives the node a health monitor; Run runs it.
func WithHealth(m *health.Monitor) Option {
	return func(c *Config) { c.Node.Health, c.monitor = m, m }
}

// WithSubscriber adds a subscriber of the node besides the device plugin.
func WithSubscriber(s node.Subscriber) Option {
	return func(c *Config) { c.subs = append(c.subs, s) }
}

// Plugin is a node and its device plugin.
type Plugin struct {
	Node         *node.Node
	DevicePlugin *deviceplugin.Plugin
	monitor      *health.Monitor
}

// New builds both from the defaults and opts. The scanner defaults to the
// real /sys and /dev, so tests always set one.
func New(opts ...Option) (*Plugin, error) {
	c := Config{Node: node.DefaultConfig(), DevicePlugin: deviceplugin.DefaultConfig()}
	for _, o := range opts {
		o(&c)
	}
	if c.Node.Scanner == nil {
		c.Node.Scanner = discovery.New()
	}
	if c.Node.Builder == nil {
		b, err := spec.NewBuilder()
		if err != nil {
			return nil, err
		}
		c.Node.Builder = b
	}
	n, err := node.New(c.Node)
	if err != nil {
		return nil, err
	}
	dp, err := deviceplugin.New(c.DevicePlugin)
	if err != nil {
		return nil, err
	}
	n.Subscribe(dp)
	for _, s := range c.subs {
		n.Subscribe(s)
	}
	return &Plugin{Node: n, DevicePlugin: dp, monitor: c.monitor}, nil
}

// SpecPath is where the node keeps its spec.
func (p *Plugin) SpecPath() string { return p.Node.SpecPath() }

// Run runs both until ctx ends, as the command does: the device plugin
// follows the kubelet, the node follows the GPUs.
func (p *Plugin) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if p.monitor != nil {
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			_ = p.monitor.Run(ctx)
		}()
		defer func() { <-stopped }()
	}
	dpErr := make(chan error, 1)
	go func() {
		err := p.DevicePlugin.Run(ctx)
		if err != nil {
			cancel()
		}
		dpErr <- err
	}()
	err := p.Node.Run(ctx)
	cancel()
	return errors.Join(err, <-dpErr)
}
