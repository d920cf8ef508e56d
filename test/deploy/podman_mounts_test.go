package deploy_test

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/conflict"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/deviceplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/dra"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/drakubelet"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// The rendered DaemonSets run in containers the way the kubelet would run
// them on a node whose root is a temporary directory: every host path and
// mount path moves under that root, and so does every setting that names
// one. What the containers can and cannot reach through those mounts is
// then what the manifests give them. (test/cluster runs them on a real
// kubelet; this needs only podman.)

// testNodeName stands for spec.nodeName.
const testNodeName = "gpu-node-1"

// podNode is a node under root: its kubelet's directories, and a fake
// sysfs and /dev with GPUs.
type podNode struct {
	Root string
	GPUs *fakenode.Node
}

func newPodNode(t *testing.T) *podNode {
	t.Helper()
	// Short: the sockets under it must fit a unix socket address.
	root, err := os.MkdirTemp("", "igc-node-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	gpus, err := fakenode.New(root, fakenode.WithMode(fakenode.Mknod))
	if err != nil {
		t.Fatal(err)
	}
	gpus.MustApply(t, fakenode.Demo)
	// What the kubelet makes at its start.
	for _, d := range []string{dra.DefaultRegistrarDir, dra.DefaultPluginsDir, deviceplugin.DefaultKubeletSocketDir} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	return &podNode{Root: root, GPUs: gpus}
}

// at is a node path under the root.
func (n *podNode) at(p string) string { return filepath.Join(n.Root, p) }

// related says whether p is mount or lies on the way to it or under it.
func related(p, mount string) bool {
	p, mount = filepath.Clean(p), filepath.Clean(mount)
	return p == mount || strings.HasPrefix(mount, p+"/") || strings.HasPrefix(p, mount+"/")
}

// podmanArgs are the arguments of `podman run` that give ds's container
// what the kubelet would on n: its hostPath volumes (made first where the
// volume's type would make them), its security context's lockdown, and its
// env, with each path that a mount concerns moved under the root. The
// runtime's /sys of this machine has no GPU, so the fake node's sysfs is
// mounted read-only where --sysfs-root then points.
func (n *podNode) podmanArgs(t *testing.T, ds *appsv1.DaemonSet, extraEnv map[string]string) []string {
	t.Helper()
	spec := ds.Spec.Template.Spec
	c := spec.Containers[0]
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	args := []string{"--network", "none", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
		"--user", fmt.Sprintf("%d:%d", *c.SecurityContext.RunAsUser, *c.SecurityContext.RunAsGroup),
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
		"-v", n.GPUs.Sys + ":" + n.GPUs.Sys + ":ro"}
	var mountPaths []string
	for _, m := range c.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok || v.HostPath == nil {
			t.Fatalf("mount %s is not a hostPath volume", m.Name)
		}
		host := n.at(v.HostPath.Path)
		if v.HostPath.Type != nil && *v.HostPath.Type == corev1.HostPathDirectoryOrCreate {
			if err := os.MkdirAll(host, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		opt := ""
		if m.ReadOnly {
			opt = ":ro"
		}
		args = append(args, "-v", host+":"+n.at(m.MountPath)+opt)
		mountPaths = append(mountPaths, m.MountPath)
	}
	env := map[string]string{"INTEL_GPU_CDI_SYSFS_ROOT": n.GPUs.Sys, "INTEL_GPU_CDI_LOG_FORMAT": "text"}
	for _, e := range c.Env {
		value := e.Value
		if e.ValueFrom != nil {
			value = testNodeName // the only one is spec.nodeName
		}
		if _, set := env[e.Name]; set {
			continue
		}
		if filepath.IsAbs(value) && slices.ContainsFunc(mountPaths, func(m string) bool { return related(value, m) }) {
			value = n.at(value)
		}
		env[e.Name] = value
	}
	for k, v := range extraEnv {
		env[k] = v
	}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		args = append(args, "-e", k+"="+env[k])
	}
	return args
}

// refusal runs a container that should refuse to start: it returns the
// container's output and whether it exited on its own within a minute
// (with a non-zero status); one that still runs then is removed.
func (p *podmanRig) refusal(name string, args ...string) (out string, refused bool) {
	ctx, cancel := context.WithTimeout(p.ctx, time.Minute)
	defer cancel()
	p.t.Cleanup(func() { p.remove(name) })
	out, err := p.runCtx(ctx, append([]string{"run", "--rm", "--name", name}, args...)...)
	if ctx.Err() != nil {
		return out + "\n(still running after a minute)", false
	}
	return out, err != nil
}

// unreachableKubeconfig points the DRA driver at an API server it cannot
// reach (the container has no network): registration with the kubelet does
// not need one, publishing slices waits for it.
func (n *podNode) unreachableKubeconfig(t *testing.T) string {
	t.Helper()
	p := n.at("kubeconfig")
	const cfg = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: none}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTheDaemonSetsMountsWorkInAContainer(t *testing.T) {
	p := newPodman(t)
	if !fakenode.CanMknod() {
		skipOrFail(t, "mknod is not permitted here: the fake node needs real char devices")
	}
	version := fmt.Sprintf("0.0.0-mounttest.%d", time.Now().UnixNano())
	pluginImage := p.buildScratchImage(imageTargets[0], version)
	draImage := p.buildScratchImage(imageTargets[1], version)
	pluginDS := kustomize(t, deployments("kustomize", "base")).daemonSet(t, "intel-gpu-cdi")
	draDS := kustomize(t, deployments("kustomize", "dra")).daemonSet(t, "intel-gpu-cdi-dra")

	n := newPodNode(t)
	kubeconfig := n.unreachableKubeconfig(t)
	draArgs := append(n.podmanArgs(t, draDS, map[string]string{"INTEL_GPU_CDI_KUBECONFIG": kubeconfig}),
		"-v", kubeconfig+":"+kubeconfig+":ro")
	name := fmt.Sprintf("igc-dra-mounttest-%d", os.Getpid())
	t.Cleanup(func() { p.remove(name) })
	logs := func() string { out, _ := p.run("logs", name); return out }
	if out, err := p.run(append(append([]string{"run", "-d", "--name", name}, draArgs...), draImage)...); err != nil {
		t.Fatalf("podman run the DRA driver: %v\n%s", err, out)
	}

	dataDir := n.at((&dra.Config{PluginsDir: dra.DefaultPluginsDir, DriverName: dra.DefaultDriverName}).DataDir())
	regSocket := n.at(filepath.Join(dra.DefaultRegistrarDir, conflict.RegistrationSocket(dra.DefaultDriverName)))

	t.Run("the DRA driver registers, and the kubelet reaches its DRA socket at the path it registered", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		// The kubelet's side, on the host: GetInfo on the registration
		// socket, then a dial of the endpoint the driver named.
		plugin, err := drakubelet.Register(ctx, regSocket)
		if err != nil {
			t.Fatalf("registering: %v\ndriver log:\n%s", err, logs())
		}
		defer plugin.Close()
		if want := filepath.Join(dataDir, dra.SocketName); plugin.Info.Endpoint != want {
			t.Errorf("the driver registered the DRA socket %s, want %s (its own directory, mounted at its host path)", plugin.Info.Endpoint, want)
		}
		reports, _, err := plugin.WatchHealth(ctx)
		if err != nil {
			t.Fatalf("health stream on %s: %v\ndriver log:\n%s", plugin.Info.Endpoint, err, logs())
		}
		select {
		case r := <-reports:
			var devices []string
			for _, d := range r.GetDevices() {
				if d.GetDevice().GetPoolName() != testNodeName {
					t.Errorf("device %s in pool %q, want the node's %q", d.GetDevice().GetDeviceName(), d.GetDevice().GetPoolName(), testNodeName)
				}
				devices = append(devices, d.GetDevice().GetDeviceName())
			}
			// fakenode.Demo: an integrated GPU, an Arc A770 (i915) and an xe GPU.
			if len(devices) != 3 {
				t.Errorf("the health stream over the mounted socket reports %v, want the fake node's 3 GPUs", devices)
			}
		case <-ctx.Done():
			t.Fatalf("no health report over %s\ndriver log:\n%s", plugin.Info.Endpoint, logs())
		}
		if _, err := os.Stat(n.at("/var/run/cdi/intel.com-gpu.json")); err != nil {
			t.Errorf("the node's spec: %v", err)
		}
	})

	t.Run("the driver writes in the kubelet's plugins dir only its own directory", func(t *testing.T) {
		entries, err := os.ReadDir(n.at(dra.DefaultPluginsDir))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if !slices.Equal(names, []string{dra.DefaultDriverName}) {
			t.Errorf("%s holds %v, want only %s", dra.DefaultPluginsDir, names, dra.DefaultDriverName)
		}
		out, err := p.run("exec", name, "/usr/local/bin/intel-gpu-cdi-dra", "version")
		if err != nil || !strings.Contains(out, version) {
			t.Errorf("podman exec: %v\n%s", err, out)
		}
	})

	t.Run("the device plugin refuses to start beside it, seeing the registration socket through its read-only mount", func(t *testing.T) {
		out, refused := p.refusal(name+"-plugin", slices.Concat(n.podmanArgs(t, pluginDS, nil), []string{pluginImage, "plugin"})...)
		if !refused {
			t.Fatalf("the device plugin started beside a live DRA driver:\n%s", out)
		}
		if !strings.Contains(out, regSocket) || !strings.Contains(out, "never both") {
			t.Errorf("the device plugin failed for another reason than the live %s:\n%s", regSocket, out)
		}
	})

	p.remove(name)

	t.Run("the DRA driver refuses to start beside a live device-plugin socket, seen through its read-only mount", func(t *testing.T) {
		sock := n.at(filepath.Join(deviceplugin.DefaultKubeletSocketDir, deviceplugin.SocketNames()[0]))
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		// Whatever the first driver left; the refused one must add nothing.
		if err := os.Remove(regSocket); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		out, refused := p.refusal(name+"-refused", slices.Concat(draArgs, []string{draImage})...)
		if !refused {
			t.Fatalf("the DRA driver started beside a live device-plugin socket:\n%s", out)
		}
		if !strings.Contains(out, sock) || !strings.Contains(out, "never both") {
			t.Errorf("the DRA driver failed for another reason than the live %s:\n%s", sock, out)
		}
		if _, err := os.Stat(regSocket); err == nil {
			t.Errorf("the refused driver left %s", regSocket)
		}
	})
}
