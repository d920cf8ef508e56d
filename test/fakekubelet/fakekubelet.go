// Package fakekubelet is a kubelet stand-in for tests and the demo: it
// serves the real v1beta1 Registration service on kubelet.sock, records
// what plugins register, and talks to a registered plugin as the kubelet's
// device manager would (ListAndWatch, Allocate, GetPreferredAllocation).
// Restart behaves like a restarting kubelet: it wipes every socket in the
// directory and creates kubelet.sock again.
package fakekubelet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// Kubelet serves Registration on <dir>/kubelet.sock.
type Kubelet struct {
	dir string

	mu   sync.Mutex
	srv  *grpc.Server
	regs []*pluginapi.RegisterRequest
	// wake is closed and replaced on every registration.
	wake chan struct{}
	wg   sync.WaitGroup
	// reject, when set, makes Register fail with this error.
	reject error
	// rejected counts the registrations refused because of reject.
	rejected int
}

// Start serves a fake kubelet in dir, creating dir when needed.
func Start(dir string) (*Kubelet, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	k := &Kubelet{dir: dir, wake: make(chan struct{})}
	if err := k.serve(); err != nil {
		return nil, err
	}
	return k, nil
}

// Dir is the device-plugin directory the kubelet serves in.
func (k *Kubelet) Dir() string { return k.dir }

// Socket is the path of kubelet.sock.
func (k *Kubelet) Socket() string { return filepath.Join(k.dir, "kubelet.sock") }

func (k *Kubelet) serve() error {
	sock := k.Socket()
	if err := os.Remove(sock); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", sock, err)
	}
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", sock, err)
	}
	srv := grpc.NewServer()
	pluginapi.RegisterRegistrationServer(srv, registration{k: k})
	k.mu.Lock()
	k.srv = srv
	k.mu.Unlock()
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		_ = srv.Serve(lis)
	}()
	return nil
}

type registration struct {
	pluginapi.UnimplementedRegistrationServer
	k *Kubelet
}

func (r registration) Register(_ context.Context, req *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	k := r.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.reject != nil {
		k.rejected++
		close(k.wake)
		k.wake = make(chan struct{})
		return nil, k.reject
	}
	if req.Version != pluginapi.Version {
		return nil, fmt.Errorf("unsupported API version %q", req.Version)
	}
	if strings.ContainsRune(req.Endpoint, '/') {
		return nil, fmt.Errorf("endpoint %q must be a socket name in %s", req.Endpoint, k.dir)
	}
	k.regs = append(k.regs, req)
	close(k.wake)
	k.wake = make(chan struct{})
	return &pluginapi.Empty{}, nil
}

// SetReject makes every following Register fail with err (nil accepts again).
func (k *Kubelet) SetReject(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.reject = err
}

// WaitRejected waits until at least n registrations were refused by SetReject.
func (k *Kubelet) WaitRejected(ctx context.Context, n int) error {
	for {
		k.mu.Lock()
		seen, wake := k.rejected, k.wake
		k.mu.Unlock()
		if seen >= n {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d refused registrations (saw %d): %w", n, seen, ctx.Err())
		}
	}
}

// Registrations returns every registration so far, oldest first.
func (k *Kubelet) Registrations() []*pluginapi.RegisterRequest {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]*pluginapi.RegisterRequest(nil), k.regs...)
}

// WaitRegistration waits for the n-th registration (counting from 1) of a
// resource and returns it.
func (k *Kubelet) WaitRegistration(ctx context.Context, resource string, n int) (*pluginapi.RegisterRequest, error) {
	for {
		k.mu.Lock()
		seen := 0
		for _, r := range k.regs {
			if r.ResourceName == resource {
				seen++
				if seen == n {
					k.mu.Unlock()
					return r, nil
				}
			}
		}
		wake := k.wake
		k.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for registration %d of %s (saw %d): %w", n, resource, seen, ctx.Err())
		}
	}
}

// Restart stops serving, removes every socket in the directory as a
// restarting kubelet does, and serves kubelet.sock again.
func (k *Kubelet) Restart() error {
	k.stopServer()
	entries, err := os.ReadDir(k.dir)
	if err != nil {
		return fmt.Errorf("reading %s: %w", k.dir, err)
	}
	for _, e := range entries {
		if e.Type()&fs.ModeSocket != 0 {
			if err := os.Remove(filepath.Join(k.dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("wiping %s: %w", e.Name(), err)
			}
		}
	}
	return k.serve()
}

func (k *Kubelet) stopServer() {
	k.mu.Lock()
	srv := k.srv
	k.srv = nil
	k.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
	k.wg.Wait()
}

// Stop stops serving and removes kubelet.sock.
func (k *Kubelet) Stop() {
	k.stopServer()
	_ = os.Remove(k.Socket())
}

// Client talks to one plugin endpoint as the device manager does.
type Client struct {
	pluginapi.DevicePluginClient
	conn *grpc.ClientConn
}

// Dial connects to a plugin's endpoint (a socket name from its registration).
func (k *Kubelet) Dial(endpoint string) (*Client, error) {
	sock := filepath.Join(k.dir, endpoint)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dialing plugin at %s: %w", sock, err)
	}
	return &Client{DevicePluginClient: pluginapi.NewDevicePluginClient(conn), conn: conn}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Watch opens ListAndWatch and delivers each list on the returned channel
// until ctx ends or the stream fails; the channel is closed then.
func (c *Client) Watch(ctx context.Context) (<-chan []*pluginapi.Device, error) {
	stream, err := c.ListAndWatch(ctx, &pluginapi.Empty{})
	if err != nil {
		return nil, fmt.Errorf("ListAndWatch: %w", err)
	}
	out := make(chan []*pluginapi.Device, 16)
	go func() {
		defer close(out)
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			select {
			case out <- resp.Devices:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
