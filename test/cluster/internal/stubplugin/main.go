// Command stubplugin is a stand-in for `intel-gpu-cdi plugin` used only to
// prove the cluster rig before the real plugin exists. It takes the same
// flags, writes the spec with the product's own cdi packages, and answers
// Allocate with CDI names. It is deliberately simple (polling, no
// GetPreferredAllocation) and is not a model for the product.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
)

type config struct {
	sysfsRoot, devRoot, socketDir, specDir, strategy string
	shared                                           int
}

func main() {
	if len(os.Args) < 2 || os.Args[1] != "plugin" {
		log.Fatal("usage: stubplugin plugin [flags]")
	}
	var c config
	fs := flag.NewFlagSet("plugin", flag.ExitOnError)
	fs.StringVar(&c.sysfsRoot, "sysfs-root", "/sys", "")
	fs.StringVar(&c.devRoot, "dev-root", "/dev", "")
	fs.StringVar(&c.socketDir, "kubelet-socket-dir", pluginapi.DevicePluginPath, "")
	fs.StringVar(&c.specDir, "cdi-spec-dir", "/var/run/cdi", "")
	fs.StringVar(&c.strategy, "device-list-strategy", "cdi-cri", "")
	fs.IntVar(&c.shared, "shared-dev-num", 1, "")
	fs.String("allocation-policy", "none", "")
	fs.String("log-level", "info", "")
	_ = fs.Parse(os.Args[2:])

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, c); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, c config) error {
	res, err := discovery.New(discovery.WithSysfsRoot(c.sysfsRoot), discovery.WithDevRoot(c.devRoot)).Scan()
	if err != nil {
		return err
	}
	b, err := spec.NewBuilder()
	if err != nil {
		return err
	}
	devs := res.Usable()
	s, err := b.Build(devs)
	if err != nil {
		return err
	}
	specPath := filepath.Join(c.specDir, b.FileName()+".json")
	if err := spec.Write(specPath, s, spec.Format("json")); err != nil {
		return err
	}
	defer os.Remove(specPath)

	byDriver := map[string][]*pluginapi.Device{}
	pci := map[string]string{} // device ID -> PCI address (the CDI device name)
	for _, d := range devs {
		for i := range c.shared {
			id := d.PCIAddress
			if c.shared > 1 {
				id = fmt.Sprintf("%s-%d", d.PCIAddress, i)
			}
			pci[id] = d.PCIAddress
			byDriver[d.Driver] = append(byDriver[d.Driver], &pluginapi.Device{ID: id, Health: pluginapi.Healthy})
		}
	}
	var servers []*server
	for driver, list := range byDriver {
		servers = append(servers, &server{
			resource: "gpu.intel.com/" + driver,
			sock:     filepath.Join(c.socketDir, "stub-intel-gpu-"+driver+".sock"),
			kubelet:  filepath.Join(c.socketDir, "kubelet.sock"),
			devices:  list, pci: pci, builder: b, strategy: c.strategy,
		})
	}
	for {
		// Register at start and whenever a (new) kubelet has wiped our
		// sockets; its kubelet.sock must exist first.
		if _, err := os.Stat(filepath.Join(c.socketDir, "kubelet.sock")); err == nil {
			for _, s := range servers {
				if _, err := os.Stat(s.sock); err == nil && s.grpc != nil {
					continue
				}
				if err := s.restart(ctx); err != nil {
					log.Printf("%s: %v", s.resource, err)
					continue
				}
				log.Printf("%s: registered", s.resource)
			}
		}
		select {
		case <-ctx.Done():
			for _, s := range servers {
				s.stop()
			}
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

type server struct {
	pluginapi.UnimplementedDevicePluginServer
	resource, sock, kubelet, strategy string
	devices                           []*pluginapi.Device
	pci                               map[string]string
	builder                           *spec.Builder
	grpc                              *grpc.Server
}

func (s *server) stop() {
	if s.grpc != nil {
		s.grpc.Stop()
		s.grpc = nil
	}
	_ = os.Remove(s.sock)
}

func (s *server) restart(ctx context.Context) error {
	s.stop()
	l, err := net.Listen("unix", s.sock)
	if err != nil {
		return err
	}
	s.grpc = grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(s.grpc, s)
	go func(g *grpc.Server) { _ = g.Serve(l) }(s.grpc)

	conn, err := grpc.NewClient("unix://"+s.kubelet, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(rctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     filepath.Base(s.sock),
		ResourceName: s.resource,
	})
	return err
}

func (s *server) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

func (s *server) ListAndWatch(_ *pluginapi.Empty, stream pluginapi.DevicePlugin_ListAndWatchServer) error {
	if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: s.devices}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func (s *server) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	out := &pluginapi.AllocateResponse{}
	for i, creq := range req.ContainerRequests {
		var names []string
		for _, id := range creq.DevicesIds {
			addr, ok := s.pci[id]
			if !ok {
				return nil, fmt.Errorf("unknown device %q", id)
			}
			if q := s.builder.QualifiedName(addr); !slices.Contains(names, q) {
				names = append(names, q)
			}
		}
		cresp := &pluginapi.ContainerAllocateResponse{}
		for _, strategy := range strings.Split(s.strategy, ",") {
			switch strategy {
			case "cdi-cri":
				for _, n := range names {
					cresp.CdiDevices = append(cresp.CdiDevices, &pluginapi.CDIDevice{Name: n})
				}
			case "cdi-annotations":
				key, err := cdiapi.AnnotationKey("stub-intel-gpu", fmt.Sprintf("c%d", i))
				if err != nil {
					return nil, err
				}
				cresp.Annotations = map[string]string{key: strings.Join(names, ",")}
			default:
				return nil, errors.New("stub plugin: unsupported strategy " + strategy)
			}
		}
		out.ContainerResponses = append(out.ContainerResponses, cresp)
	}
	return out, nil
}

func (s *server) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

func (s *server) GetPreferredAllocation(context.Context, *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	return &pluginapi.PreferredAllocationResponse{}, nil
}
