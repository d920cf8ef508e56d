package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/retry"
)

// KubeletSocket is the kubelet's registration socket in the socket dir.
const KubeletSocket = "kubelet.sock"

// MaxKubeletSocketDirLen is the longest kubelet socket directory in which
// every socket of the plugin (the longest is the monitoring one's) fits.
var MaxKubeletSocketDirLen = kubeplugin.MaxSocketPathLen - len("/"+socketName(ResourceMonitoring))

// socketName is the plugin's socket for a resource: intel-gpu-cdi-i915.sock.
func socketName(resource string) string {
	return "intel-gpu-cdi-" + resource[strings.LastIndexByte(resource, '/')+1:] + ".sock"
}

// SocketNames lists the socket of every resource the plugin may serve, as
// named in the kubelet socket directory: the DRA driver refuses to start
// where one of them is live.
func SocketNames() []string {
	return []string{socketName(ResourceI915), socketName(ResourceXe), socketName(ResourceMonitoring)}
}

// server owns the lifecycle of one resource's gRPC endpoint: socket,
// serving, registration with the kubelet, and restart when the kubelet
// comes back. The answers themselves come from service.
type server struct {
	resource string
	dir      string
	cfg      *Config
	hub      *hub
	log      *slog.Logger

	mu     sync.Mutex
	grpc   *grpc.Server
	done   chan struct{}
	cancel context.CancelFunc // stops the registration loop
	wg     sync.WaitGroup
	// registered is set once the kubelet accepted the current socket.
	registered atomic.Bool
}

func newServer(resource string, cfg *Config, h *hub) *server {
	return &server{
		resource: resource,
		dir:      cfg.KubeletSocketDir,
		cfg:      cfg,
		hub:      h,
		log:      cfg.Logger.With("resource", resource),
	}
}

func (s *server) socket() string { return filepath.Join(s.dir, socketName(s.resource)) }

// start serves on a fresh socket and registers in the background,
// retrying with backoff until the kubelet accepts or ctx ends.
func (s *server) start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sock := s.socket()
	if err := os.Remove(sock); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing stale socket %s: %w", sock, err)
	}
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", sock, err)
	}
	s.done = make(chan struct{})
	s.grpc = grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(s.grpc, &service{resource: s.resource, cfg: s.cfg, hub: s.hub, done: s.done})
	srv := s.grpc
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(lis); err != nil {
			s.log.Error("device plugin server stopped", "socket", sock, "err", err)
		}
	}()

	rctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.registerLoop(rctx)
	}()
	return nil
}

// stop ends serving and registration and removes the socket.
func (s *server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grpc == nil {
		return
	}
	s.cancel()
	close(s.done)
	s.grpc.Stop()
	s.wg.Wait()
	s.registered.Store(false)
	s.grpc = nil
	if err := os.Remove(s.socket()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("removing socket", "socket", s.socket(), "err", err)
	}
}

// restart is what a kubelet restart calls for: the kubelet wiped our
// socket, so serve on a new one and register again.
func (s *server) restart(ctx context.Context) error {
	s.stop()
	return s.start(ctx)
}

// registerBackoff paces registration retries. The first retry comes soon:
// kubelet.sock appears when the kubelet binds it, a moment before it
// listens, and a register in that moment is refused.
var registerBackoff = retry.Backoff{Duration: 5 * time.Millisecond, Factor: 2, Cap: 5 * time.Second}

const registerTimeout = 5 * time.Second

func (s *server) registerLoop(ctx context.Context) {
	err := retry.Until(ctx, registerBackoff, func() error {
		err := s.register(ctx)
		// An attempt cut short by stop is no failure of the kubelet's.
		if err == nil || ctx.Err() == nil {
			s.cfg.Observer.Registration(s.resource, err)
		}
		return err
	}, func(err error, next time.Duration) {
		s.log.Warn("registration with the kubelet failed; retrying", "err", err, "in", next)
	})
	if err == nil {
		s.registered.Store(true)
		s.log.Info("registered with the kubelet", "socket", s.socket())
	}
}

func (s *server) register(ctx context.Context) error {
	kubelet := filepath.Join(s.dir, KubeletSocket)
	conn, err := grpc.NewClient("unix://"+kubelet, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connecting to the kubelet at %s: %w", kubelet, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     socketName(s.resource),
		ResourceName: s.resource,
		Options:      &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true},
	}, grpc.WaitForReady(false))
	if err != nil {
		return fmt.Errorf("registering %s at %s: %w", s.resource, kubelet, err)
	}
	return nil
}
