// Package drakubelet plays the kubelet's side of a DRA kubelet plugin in
// tests: it registers the plugin as the kubelet's plugin watcher does
// (GetInfo on the registration socket, then NotifyRegistrationStatus) and
// calls NodePrepareResources, NodeUnprepareResources and the health stream
// on the DRA socket the plugin names, over the real gRPC APIs.
package drakubelet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	resourceapi "k8s.io/api/resource/v1"
	drahealth "k8s.io/kubelet/pkg/apis/dra-health/v1"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// Plugin is a registered DRA plugin as the kubelet holds it.
type Plugin struct {
	// Info is what the plugin answered to GetInfo.
	Info   *registerapi.PluginInfo
	conn   *grpc.ClientConn
	dra    drapb.DRAPluginClient
	health drahealth.DRAResourceHealthClient
}

// WaitSocket waits until path exists as a socket, or ctx ends. The
// kubelet's plugin watcher sees registration sockets through inotify too.
func WaitSocket(ctx context.Context, path string) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Add(filepath.Dir(path)); err != nil {
		return fmt.Errorf("watching for %s: %w", path, err)
	}
	for {
		if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for socket %s: %w", path, ctx.Err())
		case <-w.Events:
		case err := <-w.Errors:
			return err
		}
	}
}

func dial(path string) (*grpc.ClientConn, error) {
	return grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// Register waits for the registration socket, asks the plugin what it is,
// checks that it is a DRA plugin offering the v1 API, dials its DRA socket
// and tells it that it is registered.
func Register(ctx context.Context, regSocket string) (*Plugin, error) {
	if err := WaitSocket(ctx, regSocket); err != nil {
		return nil, err
	}
	reg, err := dial(regSocket)
	if err != nil {
		return nil, err
	}
	defer reg.Close()
	rc := registerapi.NewRegistrationClient(reg)
	info, err := rc.GetInfo(ctx, &registerapi.InfoRequest{}, grpc.WaitForReady(true))
	if err != nil {
		return nil, fmt.Errorf("GetInfo on %s: %w", regSocket, err)
	}
	if info.Type != registerapi.DRAPlugin {
		return nil, fmt.Errorf("%s is a %q plugin, not a DRA plugin", regSocket, info.Type)
	}
	conn, err := dial(info.Endpoint)
	if err != nil {
		return nil, err
	}
	if _, err := rc.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("NotifyRegistrationStatus on %s: %w", regSocket, err)
	}
	return &Plugin{Info: info, conn: conn, dra: drapb.NewDRAPluginClient(conn), health: drahealth.NewDRAResourceHealthClient(conn)}, nil
}

// Close drops the connection to the DRA socket.
func (p *Plugin) Close() error { return p.conn.Close() }

func refs(claims []*resourceapi.ResourceClaim) []*drapb.Claim {
	out := make([]*drapb.Claim, len(claims))
	for i, c := range claims {
		out[i] = &drapb.Claim{Namespace: c.Namespace, Name: c.Name, Uid: string(c.UID)}
	}
	return out
}

// Prepare calls NodePrepareResources for the claims, as the kubelet does
// before it starts a pod that uses them. The plugin reads each claim from
// the API server itself.
func (p *Plugin) Prepare(ctx context.Context, claims ...*resourceapi.ResourceClaim) (*drapb.NodePrepareResourcesResponse, error) {
	return p.dra.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: refs(claims)}, grpc.WaitForReady(true))
}

// Unprepare calls NodeUnprepareResources for the claims, as the kubelet
// does once no pod uses them.
func (p *Plugin) Unprepare(ctx context.Context, claims ...*resourceapi.ResourceClaim) (*drapb.NodeUnprepareResourcesResponse, error) {
	return p.dra.NodeUnprepareResources(ctx, &drapb.NodeUnprepareResourcesRequest{Claims: refs(claims)}, grpc.WaitForReady(true))
}

// WatchHealth opens the health stream, as the kubelet does after
// registration, and delivers its reports until ctx ends or the stream
// fails; the channel is closed then, and errc gets the error (nil when
// ctx ended).
func (p *Plugin) WatchHealth(ctx context.Context) (<-chan *drahealth.NodeWatchResourcesResponse, <-chan error, error) {
	stream, err := p.health.NodeWatchResources(ctx, &drahealth.NodeWatchResourcesRequest{}, grpc.WaitForReady(true))
	if err != nil {
		return nil, nil, err
	}
	out := make(chan *drahealth.NodeWatchResourcesResponse)
	errc := make(chan error, 1)
	go func() {
		defer close(out)
		for {
			r, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) || ctx.Err() != nil {
					err = nil
				}
				errc <- err
				return
			}
			select {
			case out <- r:
			case <-ctx.Done():
				errc <- nil
				return
			}
		}
	}()
	return out, errc, nil
}
