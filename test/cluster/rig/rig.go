// Package rig runs a real containerd and a real kubelet (no API server: static
// pods) on this machine for the cluster end-to-end suite, and puts the machine
// back as it found it afterwards. Every daemon it starts is stopped by its own
// PID; every host path, sysctl and cgroup it changes is recorded first.
package rig

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// DevicePluginDir is where every kubelet listens for device plugins,
	// whatever its --root-dir.
	DevicePluginDir = "/var/lib/kubelet/device-plugins"
	// PluginsRegistryDir is where a kubelet of the default --root-dir
	// watches for plugin registration sockets (DRA drivers); the rig's
	// kubelet watches it too (see New).
	PluginsRegistryDir = "/var/lib/kubelet/plugins_registry"
	// PluginsDir is where a DRA driver keeps its socket and checkpoint by
	// default.
	PluginsDir = "/var/lib/kubelet/plugins"
	// NodeName is the kubelet's --hostname-override: static pod names end in it.
	NodeName = "igc-e2e-node"
	// PauseImage is the sandbox image containerd is pinned to; built locally.
	PauseImage = "registry.k8s.io/pause:3.10-igc-e2e"
	// BusyboxImage is the workload image; built locally from busybox-static.
	BusyboxImage = "e2e.local/busybox:1"
)

// Rig owns one containerd, one kubelet and one device plugin process.
type Rig struct {
	Bins Bins
	// Dir holds everything the rig creates that is not at a fixed host path.
	Dir            string
	LogDir         string
	ContainerdSock string
	CDISpecDir     string
	ManifestDir    string
	KubeletRoot    string
	ReadOnlyPort   int

	host       *HostState
	containerd *Proc
	kubelet    *Proc
	plugin     *Proc
	dra        *Proc
	kubeletCfg string
	// entriesBefore lists, for each fixed kubelet directory that existed
	// before the run, its entries then; anything else in it at the end is
	// the rig's.
	entriesBefore map[string]map[string]bool
	// Full-cluster mode: the control plane, the kubelet's kubeconfig and the
	// CNI bridge to delete.
	cp                *controlPlane
	kubeletKubeconfig string
	cniBridge         string
}

// New snapshots the host, then lays out a work directory. Call Close, even
// after a failed New step, to undo everything.
func New(bins Bins) (*Rig, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the cluster rig needs root (mknod, mounts, cgroups)")
	}
	if err := checkNoOtherKubelet(); err != nil {
		return nil, err
	}
	host, err := SnapshotHost()
	if err != nil {
		return nil, err
	}
	// A short path: containerd's and the kubelet's unix sockets live below it.
	dir, err := os.MkdirTemp("/tmp", "igc-e2e-")
	if err != nil {
		return nil, err
	}
	r := &Rig{
		Bins:           bins,
		Dir:            dir,
		LogDir:         filepath.Join(dir, "logs"),
		ContainerdSock: filepath.Join(dir, "containerd.sock"),
		CDISpecDir:     filepath.Join(dir, "cdi"),
		ManifestDir:    filepath.Join(dir, "manifests"),
		KubeletRoot:    filepath.Join(dir, "kubelet"),
		host:           host,
	}
	r.entriesBefore = map[string]map[string]bool{}
	for _, d := range []string{DevicePluginDir, PluginsRegistryDir, PluginsDir} {
		if entries, err := os.ReadDir(d); err == nil {
			r.entriesBefore[d] = map[string]bool{}
			for _, e := range entries {
				r.entriesBefore[d][e.Name()] = true
			}
		}
	}
	for _, d := range []string{r.LogDir, r.CDISpecDir, r.ManifestDir, r.KubeletRoot, filepath.Join(dir, "cni", "net.d"), PluginsRegistryDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return r, err
		}
	}
	// The kubelet watches <root-dir>/plugins_registry, and its device-plugin
	// directory is fixed at /var/lib/kubelet/device-plugins. On a real node
	// both are in /var/lib/kubelet, and each plugin binary finds the other
	// one's socket there (the DRA driver in plugins_registry, the device
	// plugin in device-plugins) to refuse to serve the same GPUs. A bind
	// mount keeps that layout with the rig's own root directory. A symlink
	// would not do: a restarted kubelet walks the directory for the sockets
	// already there, and a walk does not follow a symlink. The kubelet
	// makes its root directory a shared mount at start, by binding it onto
	// itself unless it is one already, which would hide a bind below it: the
	// rig makes it one first.
	if err := bindMount(r.KubeletRoot, r.KubeletRoot); err != nil {
		return r, err
	}
	if err := syscall.Mount("", r.KubeletRoot, "", syscall.MS_SHARED|syscall.MS_REC, ""); err != nil {
		return r, fmt.Errorf("making %s a shared mount: %w", r.KubeletRoot, err)
	}
	registry := filepath.Join(r.KubeletRoot, "plugins_registry")
	if err := os.Mkdir(registry, 0o750); err != nil {
		return r, err
	}
	if err := bindMount(PluginsRegistryDir, registry); err != nil {
		return r, err
	}
	return r, nil
}

func bindMount(from, to string) error {
	if err := syscall.Mount(from, to, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mounting %s at %s: %w", from, to, err)
	}
	return nil
}

// checkNoOtherKubelet refuses to run next to a live kubelet: both would own
// the fixed device-plugin directory.
func checkNoOtherKubelet() error {
	sock := filepath.Join(DevicePluginDir, "kubelet.sock")
	if _, err := os.Stat(sock); err != nil {
		return nil
	}
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return nil // stale socket of a dead kubelet
	}
	c.Close()
	return fmt.Errorf("a kubelet is already serving %s: refusing to run a second one", sock)
}

// Host returns the snapshot taken before the rig changed anything.
func (r *Rig) Host() *HostState { return r.host }

func (r *Rig) env() []string {
	// containerd finds its shim, and the shim finds runc, through PATH.
	return []string{"PATH=" + filepath.Dir(r.Bins.Shim) + ":" + os.Getenv("PATH")}
}

// StartContainerd writes a config whose every path is under r.Dir and starts
// containerd with CDI on and the given CDI spec directory.
func (r *Rig) StartContainerd(ctx context.Context) error {
	// No CNI network config: the suite's pods use the host network, so the
	// rig adds no bridge, veth or iptables rule to the host.
	cni := filepath.Join(r.Dir, "cni", "net.d")
	cfg := fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
temp = %[3]q
imports = []
disabled_plugins = ['io.containerd.nri.v1.nri']

[grpc]
  address = %[4]q

[ttrpc]
  address = %[5]q

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = %[6]q

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = [%[7]q]

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = 'io.containerd.runc.v2'

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = false

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = [%[8]q]
  conf_dir = %[9]q

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'

[plugins.'io.containerd.internal.v1.opt']
  path = %[10]q

[plugins.'io.containerd.shim.v1.manager']
  socket_dir = %[11]q
`,
		filepath.Join(r.Dir, "containerd", "root"),
		filepath.Join(r.Dir, "containerd", "state"),
		filepath.Join(r.Dir, "containerd", "tmp"),
		r.ContainerdSock,
		r.ContainerdSock+".ttrpc",
		PauseImage,
		r.CDISpecDir,
		r.Bins.CNIDir,
		cni,
		filepath.Join(r.Dir, "containerd", "opt"),
		filepath.Join(r.Dir, "s"),
	)
	path := filepath.Join(r.Dir, "containerd.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	p, err := Start("containerd", r.LogDir, r.env(), r.Bins.Containerd, "--config", path, "--log-level", "info")
	if err != nil {
		return err
	}
	r.containerd = p
	return WaitFor(60*time.Second, 200*time.Millisecond, func() (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("containerd %w; see %s", ErrExited, p.Log)
		}
		_, err := r.Crictl(ctx, "info")
		return err == nil, err
	})
}

// Ctr runs ctr against the rig's containerd in the CRI namespace.
func (r *Rig) Ctr(ctx context.Context, args ...string) ([]byte, error) {
	return run(ctx, r.env(), r.Bins.Ctr, append([]string{"--address", r.ContainerdSock, "--namespace", "k8s.io"}, args...)...)
}

// Crictl runs crictl against the rig's containerd.
func (r *Rig) Crictl(ctx context.Context, args ...string) ([]byte, error) {
	ep := "unix://" + r.ContainerdSock
	return run(ctx, r.env(), r.Bins.Crictl, append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "20s"}, args...)...)
}

// ImportImage loads an OCI archive written by WriteOCIArchive.
func (r *Rig) ImportImage(ctx context.Context, archive string) error {
	_, err := r.Ctr(ctx, "images", "import", "--platform", "linux/"+runtime.GOARCH, archive)
	return err
}

func run(ctx context.Context, env []string, bin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// FreePort returns a TCP port on loopback that nothing listens on now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (r *Rig) writeKubeletConfig() error {
	ports := make([]int, 3)
	for i := range ports {
		p, err := FreePort()
		if err != nil {
			return err
		}
		ports[i] = p
	}
	r.ReadOnlyPort = ports[1]
	cfg := map[string]any{
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"kind":                     "KubeletConfiguration",
		"address":                  "127.0.0.1",
		"port":                     ports[0],
		"readOnlyPort":             ports[1],
		"healthzBindAddress":       "127.0.0.1",
		"healthzPort":              ports[2],
		"staticPodPath":            r.ManifestDir,
		"fileCheckFrequency":       "1s",
		"syncFrequency":            "10s",
		"podLogsDir":               filepath.Join(r.Dir, "pod-logs"),
		"containerRuntimeEndpoint": "unix://" + r.ContainerdSock,
		"cgroupDriver":             "cgroupfs",
		"failSwapOn":               false,
		"failCgroupV1":             false,
		// The rig runs without CAP_SYS_RESOURCE: lowering oom_score_adj fails.
		"oomScoreAdj":    0,
		"resolvConf":     "",
		"authentication": map[string]any{"anonymous": map[string]any{"enabled": true}, "webhook": map[string]any{"enabled": false}},
		"authorization":  map[string]any{"mode": "AlwaysAllow"},
		// A shared build machine may be short of disk: no evictions mid-suite.
		"evictionHard":                map[string]string{"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
	}
	raw, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	r.kubeletCfg = filepath.Join(r.Dir, "kubelet.json")
	return os.WriteFile(r.kubeletCfg, raw, 0o644)
}

// KubeletSock is the kubelet's device-plugin registration socket.
func KubeletSock() string { return filepath.Join(DevicePluginDir, "kubelet.sock") }

// StartKubelet starts the kubelet and waits until it is healthy and has
// created a fresh registration socket.
func (r *Rig) StartKubelet(ctx context.Context) error {
	if r.kubeletCfg == "" {
		if err := r.writeKubeletConfig(); err != nil {
			return err
		}
	}
	// A kubelet deletes every file in the device-plugin dir at start and
	// creates kubelet.sock anew. Removing the previous kubelet's socket first
	// makes "it exists" mean "the new kubelet is listening" (inode numbers are
	// reused too quickly to tell the two apart).
	if err := os.Remove(KubeletSock()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	args := []string{
		"--config", r.kubeletCfg,
		"--root-dir", r.KubeletRoot,
		"--hostname-override", NodeName,
		"--v", "2",
	}
	if r.kubeletKubeconfig != "" {
		args = append(args, "--kubeconfig", r.kubeletKubeconfig)
	}
	p, err := Start("kubelet", r.LogDir, r.env(), r.Bins.Kubelet, args...)
	if err != nil {
		return err
	}
	r.kubelet = p
	return WaitFor(90*time.Second, 100*time.Millisecond, func() (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("kubelet %w; see %s", ErrExited, p.Log)
		}
		c, err := net.DialTimeout("unix", KubeletSock(), time.Second)
		if err != nil {
			return false, err
		}
		c.Close()
		return true, nil
	})
}

// StopKubelet stops the kubelet; its pods keep running in containerd.
func (r *Rig) StopKubelet() error { return r.kubelet.Stop(30 * time.Second) }

// StartPlugin starts the device plugin binary (`<bin> plugin <args>`) with the
// rig's CDI spec directory.
func (r *Rig) StartPlugin(bin string, args ...string) error {
	return r.StartPluginAs(nil, bin, args...)
}

// StartPluginAs is StartPlugin with the plugin running as cred's user and
// groups: the non-root plugin. It reaches the rig's directories only as far
// as their permissions let it.
func (r *Rig) StartPluginAs(cred *syscall.Credential, bin string, args ...string) error {
	if r.plugin != nil && !r.plugin.Exited() {
		return errors.New("a plugin is already running")
	}
	args = append([]string{"plugin", "--cdi-spec-dir", r.CDISpecDir, "--kubelet-socket-dir", DevicePluginDir}, args...)
	p, err := StartAs(cred, "plugin", r.LogDir, nil, bin, args...)
	if err != nil {
		return err
	}
	r.plugin = p
	return nil
}

// StartDRA starts the DRA driver binary (`<bin> <args>`) with the rig's
// CDI spec directory; everything else is the caller's (the kubelet
// directories default to their places in /var/lib/kubelet, which the rig's
// kubelet uses, see New). Its output goes to dra.log.
func (r *Rig) StartDRA(bin string, args ...string) (*Proc, error) {
	if r.dra != nil && !r.dra.Exited() {
		return nil, errors.New("a DRA driver is already running")
	}
	p, err := Start("dra", r.LogDir, nil, bin, append([]string{"--cdi-spec-dir", r.CDISpecDir}, args...)...)
	if err != nil {
		return nil, err
	}
	r.dra = p
	return p, nil
}

// Plugin is the running plugin process, if any.
func (r *Rig) Plugin() *Proc { return r.plugin }

// StopPlugin stops the plugin.
func (r *Rig) StopPlugin() error { return r.plugin.Stop(15 * time.Second) }

// KubeletGet fetches path from the kubelet's read-only port.
func (r *Rig) KubeletGet(ctx context.Context, path string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(r.ReadOnlyPort)+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("kubelet GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(into)
}

// Close tears everything down in dependency order and restores the host. It
// keeps going past failures and reports them all.
func (r *Rig) Close() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	add(r.plugin.Stop(10 * time.Second))
	add(r.dra.Stop(10 * time.Second))
	add(r.kubelet.Stop(30 * time.Second))
	if r.containerd != nil && !r.containerd.Exited() {
		// Without the kubelet nothing restarts them: remove every sandbox so
		// the shims and container processes end.
		if _, err := r.Crictl(ctx, "rmp", "--all", "--force"); err != nil {
			add(err)
		}
	}
	add(r.containerd.Stop(30 * time.Second))
	// Shims re-parent to init; they carry the rig's unique paths in argv.
	add(KillPIDs(ProcessesWithArg(r.Dir)))
	add(r.stopControlPlane())
	add(r.deleteBridge())
	add(UnmountUnder(r.Dir))
	if r.host != nil {
		add(r.host.Restore())
	}
	for d, before := range r.entriesBefore {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if !before[e.Name()] {
				add(os.RemoveAll(filepath.Join(d, e.Name())))
			}
		}
	}
	if keep := os.Getenv("E2E_ARTIFACTS_DIR"); keep != "" {
		add(copyDir(r.LogDir, keep))
	}
	// A mount left below the rig's directory could be a host directory
	// (the bind of plugins_registry): never remove through it.
	if left := MountsUnder(r.Dir); len(left) > 0 {
		add(fmt.Errorf("not removing %s: still mounted below it: %v", r.Dir, left))
	} else {
		add(os.RemoveAll(r.Dir))
	}
	return errors.Join(errs...)
}

func copyDir(from, to string) error {
	if err := os.MkdirAll(to, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), raw, 0o644); err != nil {
			return err
		}
	}
	return nil
}
