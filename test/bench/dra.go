package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/drakubelet"
)

// DRADriver is the driver name both DRA candidates register as, which
// the claims are allocated from.
const DRADriver = "gpu.intel.com"

// DRA is where one run of a DRA candidate meets its API server: the
// node it runs on (a new one per run, so that no run finds the slices
// of another) and the kubelet directories below env.Dir.
type DRA struct {
	Client     kubernetes.Interface
	Kubeconfig string
}

// NodeName is the node of a run.
func (d *DRA) NodeName(env *Env) string { return fmt.Sprintf("bench-node-%d", env.Seq) }

// RegistrarDir is the kubelet's plugins_registry of a run.
func (d *DRA) RegistrarDir(env *Env) string { return filepath.Join(env.Dir, "plugins_registry") }

// PluginsDir is the kubelet's plugins directory of a run.
func (d *DRA) PluginsDir(env *Env) string { return filepath.Join(env.Dir, "plugins") }

// Setup is Candidate.Setup: the run's Node object and kubelet
// directories, as a kubelet makes them before any plugin starts.
func (d *DRA) Setup(ctx context.Context, env *Env) error {
	for _, dir := range []string{d.RegistrarDir(env), d.PluginsDir(env)} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return err
		}
	}
	_, err := d.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: d.NodeName(env)}}, metav1.CreateOptions{})
	return err
}

// Ready is Candidate.Ready for a DRA kubelet plugin: ready once the
// kubelet (test/drakubelet) has found its registration socket, asked it
// what it is, dialled its DRA socket and told it it is registered. The
// session then waits, untimed (Settle), for env.GPUs devices in the run's
// ResourceSlices and makes one allocated claim per device; each call is
// NodePrepareResources of one claim, as the kubelet makes it before a pod
// starts, and After unprepares it, as when the pod goes.
func (d *DRA) Ready(ctx context.Context, env *Env) (Session, error) {
	p, err := drakubelet.Register(ctx, filepath.Join(d.RegistrarDir(env), DRADriver+"-reg.sock"))
	if err != nil {
		return nil, err
	}
	s := &prepareSession{d: d, env: env, p: p}
	// A kubelet watches health where the plugin offers it; a plugin that
	// does not ends the stream at once, which is no error here.
	hctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if reports, _, err := p.WatchHealth(hctx); err == nil {
		go func() {
			for range reports {
			}
		}()
	}
	return s, nil
}

type prepareSession struct {
	d      *DRA
	env    *Env
	p      *drakubelet.Plugin
	cancel context.CancelFunc
	claims []*resourceapi.ResourceClaim
}

func (s *prepareSession) Settle(ctx context.Context) error {
	names, err := s.d.waitDevices(ctx, s.d.NodeName(s.env), s.env.GPUs)
	if err != nil {
		return err
	}
	for i, dev := range names {
		c, err := s.d.allocatedClaim(ctx, fmt.Sprintf("run%d-%d", s.env.Seq, i), s.d.NodeName(s.env), dev)
		if err != nil {
			return err
		}
		s.claims = append(s.claims, c)
	}
	return nil
}

func (s *prepareSession) Call(ctx context.Context, i int) error {
	c := s.claims[i%len(s.claims)]
	resp, err := s.p.Prepare(ctx, c)
	if err != nil {
		return err
	}
	r := resp.Claims[string(c.UID)]
	switch {
	case r == nil:
		return fmt.Errorf("no answer for claim %s", c.Name)
	case r.Error != "":
		return fmt.Errorf("claim %s: %s", c.Name, r.Error)
	case len(r.Devices) != 1 || len(r.Devices[0].CdiDeviceIds) != 1:
		return fmt.Errorf("claim %s: %d devices prepared, want one with one CDI name: %v", c.Name, len(r.Devices), r.Devices)
	}
	return nil
}

func (s *prepareSession) After(ctx context.Context, i int) error {
	c := s.claims[i%len(s.claims)]
	resp, err := s.p.Unprepare(ctx, c)
	if err != nil {
		return err
	}
	if r := resp.Claims[string(c.UID)]; r == nil || r.Error != "" {
		return fmt.Errorf("unpreparing claim %s: %v", c.Name, r)
	}
	return nil
}

func (s *prepareSession) Close() error {
	s.cancel()
	return s.p.Close()
}

// waitDevices waits until the node's ResourceSlices of the driver hold n
// devices, and returns their names.
func (d *DRA) waitDevices(ctx context.Context, node string, n int) ([]string, error) {
	w, err := d.Client.ResourceV1().ResourceSlices().Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	for {
		l, err := d.Client.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		var names []string
		for _, s := range l.Items {
			if s.Spec.Driver == DRADriver && s.Spec.NodeName != nil && *s.Spec.NodeName == node {
				for _, dev := range s.Spec.Devices {
					names = append(names, dev.Name)
				}
			}
		}
		if len(names) == n {
			return names, nil
		}
		select {
		case _, ok := <-w.ResultChan():
			if !ok {
				return nil, errors.New("the ResourceSlice watch ended")
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("%d of %d devices published for node %s: %w", len(names), n, node, ctx.Err())
		}
	}
}

// allocatedClaim creates a claim of one device, allocated to dev of the
// node's pool and reserved for a pod, as the scheduler leaves it.
func (d *DRA) allocatedClaim(ctx context.Context, name, node, dev string) (*resourceapi.ResourceClaim, error) {
	claims := d.Client.ResourceV1().ResourceClaims("default")
	c, err := claims.Create(ctx, &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{{
			Name: "gpu", Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: DRADriver},
		}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	c.Status.Allocation = &resourceapi.AllocationResult{Devices: resourceapi.DeviceAllocationResult{Results: []resourceapi.DeviceRequestAllocationResult{{
		Request: "gpu", Driver: DRADriver, Pool: node, Device: dev,
	}}}}
	c.Status.ReservedFor = []resourceapi.ResourceClaimConsumerReference{{Resource: "pods", Name: "pod-" + name, UID: types.UID("pod-" + name)}}
	return claims.UpdateStatus(ctx, c, metav1.UpdateOptions{})
}
