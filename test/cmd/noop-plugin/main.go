// Command noop-plugin is the floor that intel-gpu-cdi's plugin is measured
// against (test/bench): a kubelet device plugin that does only what the
// v1beta1 protocol needs. It registers the way intel-gpu-cdi does (stale
// socket removed, listen, serve, then Register on kubelet.sock, retried
// with the same backoff), lists --devices healthy devices once, and answers
// every Allocate with one constant CDI name. It reads no sysfs, writes no
// spec and watches nothing, so whatever the real plugin costs above it is
// the price of its own work.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

func main() {
	dir := flag.String("kubelet-socket-dir", "/var/lib/kubelet/device-plugins", "the kubelet's device-plugin directory (holds kubelet.sock)")
	resource := flag.String("resource", "gpu.intel.com/i915", "the extended resource to advertise")
	devices := flag.Int("devices", 64, "how many devices to list")
	flag.Parse()
	if *devices < 1 {
		fmt.Fprintf(os.Stderr, "noop-plugin: --devices %d: want at least 1\n", *devices)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, *dir, *resource, *devices); err != nil {
		fmt.Fprintf(os.Stderr, "noop-plugin: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir, resource string, n int) error {
	sock := filepath.Join(dir, "noop-plugin.sock")
	if err := os.Remove(sock); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing stale socket %s: %w", sock, err)
	}
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", sock, err)
	}
	defer os.Remove(sock)
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, newService(n))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer srv.Stop()

	if err := register(ctx, dir, filepath.Base(sock), resource); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-served:
		return fmt.Errorf("serving on %s: %w", sock, err)
	}
}

// register retries as intel-gpu-cdi does: kubelet.sock can exist a moment
// before the kubelet listens on it.
func register(ctx context.Context, dir, endpoint, resource string) error {
	kubelet := filepath.Join(dir, "kubelet.sock")
	backoff := 5 * time.Millisecond
	for {
		err := registerOnce(ctx, kubelet, endpoint, resource)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func registerOnce(ctx context.Context, kubelet, endpoint, resource string) error {
	conn, err := grpc.NewClient("unix://"+kubelet, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     endpoint,
		ResourceName: resource,
		Options:      &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true},
	})
	return err
}

// service holds every answer ready-made: nothing is computed per call.
type service struct {
	pluginapi.UnimplementedDevicePluginServer
	list     *pluginapi.ListAndWatchResponse
	allocate *pluginapi.AllocateResponse
}

func newService(n int) *service {
	list := &pluginapi.ListAndWatchResponse{}
	for i := range n {
		list.Devices = append(list.Devices, &pluginapi.Device{
			ID:     fmt.Sprintf("0000:%02x:%02x.0", 1+i/32, i%32),
			Health: pluginapi.Healthy,
		})
	}
	return &service{
		list: list,
		allocate: &pluginapi.AllocateResponse{ContainerResponses: []*pluginapi.ContainerAllocateResponse{{
			CdiDevices: []*pluginapi.CDIDevice{{Name: "intel.com/gpu=0000:01:00.0"}},
		}}},
	}
}

func (s *service) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true}, nil
}

func (s *service) ListAndWatch(_ *pluginapi.Empty, stream pluginapi.DevicePlugin_ListAndWatchServer) error {
	if err := stream.Send(s.list); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func (s *service) Allocate(context.Context, *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	return s.allocate, nil
}

func (s *service) GetPreferredAllocation(_ context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	resp := &pluginapi.PreferredAllocationResponse{}
	for _, cr := range req.ContainerRequests {
		ids := cr.AvailableDeviceIDs[:min(int(cr.AllocationSize), len(cr.AvailableDeviceIDs))]
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerPreferredAllocationResponse{DeviceIDs: ids})
	}
	return resp, nil
}

func (s *service) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}
