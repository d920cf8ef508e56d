package rig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	podresources "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// ListScript is what a GPU pod's container runs: its own view of /dev/dri,
// then a marker the suite waits for, then it idles until SIGTERM (as PID 1
// it would otherwise ignore SIGTERM and wait out the grace period).
const ListScript = `ls -l /dev/dri; echo "--- by-path"; ls -l /dev/dri/by-path 2>&1; echo "=== end"; trap "exit 0" TERM; sleep 86400 & wait`

// GPUPod is a static pod manifest: one busybox container that lists
// /dev/dri with limits on the given extended resources.
func GPUPod(name string, limits map[string]int) ([]byte, error) {
	return json.MarshalIndent(gpuPod(name, limits, true), "", "  ")
}

// ClusterGPUPod is GPUPod for the API server: the pod has its own network
// namespace (the full-cluster rig has a CNI).
func ClusterGPUPod(name string, limits map[string]int) ([]byte, error) {
	return json.MarshalIndent(gpuPod(name, limits, false), "", "  ")
}

func gpuPod(name string, limits map[string]int, hostNetwork bool) map[string]any {
	lim := map[string]string{}
	for k, v := range limits {
		lim[k] = fmt.Sprint(v)
	}
	pod := map[string]any{
		"apiVersion": "v1",
		"kind":       "Pod",
		"metadata": map[string]any{
			"name":      name,
			"namespace": "default",
			"labels":    map[string]string{"app.kubernetes.io/part-of": "intel-gpu-cdi-e2e"},
		},
		"spec": map[string]any{
			"restartPolicy": "Never",
			// The static-pod rig has no CNI: a host-network pod needs none,
			// and the container's view of /dev/dri does not depend on it.
			"hostNetwork":                   hostNetwork,
			"terminationGracePeriodSeconds": 1,
			"containers": []map[string]any{{
				"name":            "gpu",
				"image":           BusyboxImage,
				"imagePullPolicy": "Never",
				"command":         []string{"/bin/sh", "-c", ListScript},
				"resources":       map[string]any{"limits": lim},
			}},
		},
	}
	return pod
}

// StaticPodName is the name the kubelet gives a static pod: <name>-<node>.
func StaticPodName(name string) string { return name + "-" + NodeName }

// ApplyPod writes a static pod manifest atomically (the kubelet skips dot
// files, so the temp name is never read) and returns when it was written.
func (r *Rig) ApplyPod(name string, manifest []byte) (time.Time, error) {
	tmp := filepath.Join(r.ManifestDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, manifest, 0o644); err != nil {
		return time.Time{}, err
	}
	t := time.Now()
	if err := os.Rename(tmp, filepath.Join(r.ManifestDir, name+".json")); err != nil {
		return time.Time{}, err
	}
	return t, nil
}

// DeletePod removes the manifest and waits until the pod has no running
// container left and its sandbox is stopped: from then on the kubelet no
// longer counts its devices as in use.
func (r *Rig) DeletePod(ctx context.Context, name string) error {
	if err := os.Remove(filepath.Join(r.ManifestDir, name+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return WaitFor(60*time.Second, 250*time.Millisecond, func() (bool, error) {
		ctrs, err := r.Containers(ctx, name)
		if err != nil {
			return false, err
		}
		for _, c := range ctrs {
			if c.State == "CONTAINER_RUNNING" {
				return false, fmt.Errorf("pod %s: container %s still running", name, c.ID)
			}
		}
		var pods struct {
			Items []struct {
				ID    string `json:"id"`
				State string `json:"state"`
			} `json:"items"`
		}
		out, err := r.Crictl(ctx, "pods", "--label", "io.kubernetes.pod.name="+StaticPodName(name), "-o", "json")
		if err != nil {
			return false, err
		}
		if err := json.Unmarshal(out, &pods); err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if p.State == "SANDBOX_READY" {
				return false, fmt.Errorf("pod %s: sandbox %s still ready", name, p.ID)
			}
		}
		return true, nil
	})
}

// DeleteAllPods removes every manifest, then waits for each pod to stop.
func (r *Rig) DeleteAllPods(ctx context.Context) error {
	entries, err := os.ReadDir(r.ManifestDir)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			names = append(names, name)
			if err := os.Remove(filepath.Join(r.ManifestDir, e.Name())); err != nil {
				return err
			}
		}
	}
	var errs []error
	for _, name := range names {
		errs = append(errs, r.DeletePod(ctx, name))
	}
	return errors.Join(errs...)
}

// Container is crictl's view of one container.
type Container struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

// Containers lists the containers of a static pod.
func (r *Rig) Containers(ctx context.Context, name string) ([]Container, error) {
	return r.PodContainers(ctx, StaticPodName(name))
}

// PodContainers lists the containers of a pod by its full name.
func (r *Rig) PodContainers(ctx context.Context, podName string) ([]Container, error) {
	out, err := r.Crictl(ctx, "ps", "-a", "--label", "io.kubernetes.pod.name="+podName, "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Containers []Container `json:"containers"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("parsing crictl ps: %w", err)
	}
	return list.Containers, nil
}

// Running is a started GPU container and what it printed.
type Running struct {
	ID        string
	StartedAt time.Time
	Logs      string
	// Inspect is `crictl inspect` of the container, for what the runtime
	// was asked to inject.
	Inspect map[string]any
}

// WaitRunning waits until the static pod's container runs and has printed
// its /dev/dri listing; it gives up early if the kubelet fails the pod.
func (r *Rig) WaitRunning(ctx context.Context, name string, timeout time.Duration) (*Running, error) {
	return r.WaitPodRunning(ctx, StaticPodName(name), timeout, func() error {
		if st, err := r.KubeletPodStatus(ctx, name); err == nil && st.Status.Phase == "Failed" {
			return &PodFailedError{Pod: name, Reason: st.Status.Reason, Message: st.Status.Message}
		}
		return nil
	})
}

// WaitPodRunning waits until a pod's container (by the pod's full name) runs
// and has printed its /dev/dri listing. failed, if not nil, is asked while
// waiting whether the pod has failed for good.
func (r *Rig) WaitPodRunning(ctx context.Context, podName string, timeout time.Duration, failed func() error) (*Running, error) {
	var run Running
	err := waitForUnless(timeout, func() (bool, error) {
		ctrs, err := r.PodContainers(ctx, podName)
		if err != nil {
			return false, err
		}
		for _, c := range ctrs {
			if c.State != "CONTAINER_RUNNING" {
				continue
			}
			logs, err := r.Crictl(ctx, "logs", c.ID)
			if err != nil {
				return false, err
			}
			if !strings.Contains(string(logs), "=== end") {
				return false, errors.New("listing not printed yet")
			}
			run.ID, run.Logs = c.ID, string(logs)
			return true, nil
		}
		if failed != nil {
			if err := failed(); err != nil {
				return false, err
			}
		}
		return false, fmt.Errorf("pod %s: no running container (%d listed)", podName, len(ctrs))
	})
	if err != nil {
		return nil, err
	}
	raw, err := r.Crictl(ctx, "inspect", "-o", "json", run.ID)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw, &run.Inspect); err != nil {
		return nil, fmt.Errorf("parsing crictl inspect: %w", err)
	}
	if st, ok := run.Inspect["status"].(map[string]any); ok {
		if s, ok := st["startedAt"].(string); ok {
			run.StartedAt, _ = time.Parse(time.RFC3339Nano, s)
		}
	}
	return &run, nil
}

// PodFailedError is a pod the kubelet has given up on (rejected at
// admission, or its container failed).
type PodFailedError struct{ Pod, Reason, Message string }

func (e *PodFailedError) Error() string {
	return fmt.Sprintf("pod %s failed: %s: %s", e.Pod, e.Reason, e.Message)
}

// waitForUnless is WaitFor that gives up at once on a PodFailedError.
func waitForUnless(timeout time.Duration, cond func() (bool, error)) error {
	var failed *PodFailedError
	var final error
	err := WaitFor(timeout, 100*time.Millisecond, func() (bool, error) {
		ok, err := cond()
		if errors.As(err, &failed) {
			final = err
			return true, nil
		}
		return ok, err
	})
	if final != nil {
		return final
	}
	return err
}

// KubeletPod is the part of the kubelet's pod list the suite reads.
type KubeletPod struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Status struct {
		Phase             string `json:"phase"`
		Reason            string `json:"reason"`
		Message           string `json:"message"`
		ContainerStatuses []struct {
			Name  string `json:"name"`
			State struct {
				Waiting *struct {
					Reason  string `json:"reason"`
					Message string `json:"message"`
				} `json:"waiting"`
			} `json:"state"`
		} `json:"containerStatuses"`
	} `json:"status"`
}

// KubeletPodStatus returns the kubelet's status of a static pod.
func (r *Rig) KubeletPodStatus(ctx context.Context, name string) (*KubeletPod, error) {
	var list struct {
		Items []KubeletPod `json:"items"`
	}
	if err := r.KubeletGet(ctx, "/pods", &list); err != nil {
		return nil, err
	}
	for i := range list.Items {
		if list.Items[i].Metadata.Name == StaticPodName(name) {
			return &list.Items[i], nil
		}
	}
	return nil, fmt.Errorf("kubelet has no pod %s", StaticPodName(name))
}

func (r *Rig) podResources(ctx context.Context, f func(podresources.PodResourcesListerClient) error) error {
	sock := filepath.Join(r.KubeletRoot, "pod-resources", "kubelet.sock")
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return f(podresources.NewPodResourcesListerClient(conn))
}

// Allocatable returns, per resource name, the device IDs the kubelet can
// hand out now (pod-resources API).
func (r *Rig) Allocatable(ctx context.Context) (map[string][]string, error) {
	out := map[string][]string{}
	err := r.podResources(ctx, func(c podresources.PodResourcesListerClient) error {
		resp, err := c.GetAllocatableResources(ctx, &podresources.AllocatableResourcesRequest{})
		if err != nil {
			return err
		}
		for _, d := range resp.GetDevices() {
			out[d.GetResourceName()] = append(out[d.GetResourceName()], d.GetDeviceIds()...)
		}
		return nil
	})
	return out, err
}

// AssignedDevices returns, per resource name, the device IDs the kubelet
// assigned to a static pod's containers.
func (r *Rig) AssignedDevices(ctx context.Context, name string) (map[string][]string, error) {
	out := map[string][]string{}
	err := r.podResources(ctx, func(c podresources.PodResourcesListerClient) error {
		resp, err := c.List(ctx, &podresources.ListPodResourcesRequest{})
		if err != nil {
			return err
		}
		for _, pod := range resp.GetPodResources() {
			if pod.GetName() != StaticPodName(name) {
				continue
			}
			for _, ctr := range pod.GetContainers() {
				for _, d := range ctr.GetDevices() {
					out[d.GetResourceName()] = append(out[d.GetResourceName()], d.GetDeviceIds()...)
				}
			}
		}
		return nil
	})
	return out, err
}

// WaitAllocatable waits until the kubelet offers exactly want[resource]
// devices for each resource named in want.
func (r *Rig) WaitAllocatable(ctx context.Context, want map[string]int, timeout time.Duration) error {
	return WaitFor(timeout, 100*time.Millisecond, func() (bool, error) {
		got, err := r.Allocatable(ctx)
		if err != nil {
			return false, err
		}
		for res, n := range want {
			if len(got[res]) != n {
				return false, fmt.Errorf("kubelet offers %d of %s, want %d (all: %v)", len(got[res]), res, n, got)
			}
		}
		return true, nil
	})
}

// HostVolume is a hostPath volume a ScriptPod mounts.
type HostVolume struct {
	Name, HostPath, MountPath string
	ReadOnly                  bool
	// RecursiveReadOnly is "", "Enabled" or "IfPossible".
	RecursiveReadOnly string
}

// ScriptPod is a static pod manifest: one busybox container, locked down as
// the plugin's DaemonSet is (root, every capability dropped, no privilege
// escalation), that runs script with the given host paths mounted, then
// prints the marker WaitRunning waits for and idles.
func ScriptPod(name, script string, volumes ...HostVolume) ([]byte, error) {
	return scriptPod(name, script, true, volumes)
}

// ClusterScriptPod is ScriptPod for the API server (own network namespace).
func ClusterScriptPod(name, script string, volumes ...HostVolume) ([]byte, error) {
	return scriptPod(name, script, false, volumes)
}

func scriptPod(name, script string, hostNetwork bool, volumes []HostVolume) ([]byte, error) {
	pod := gpuPod(name, nil, hostNetwork)
	spec := pod["spec"].(map[string]any)
	ctr := spec["containers"].([]map[string]any)[0]
	ctr["command"] = []string{"/bin/sh", "-c", script + `; echo "=== end"; trap "exit 0" TERM; sleep 86400 & wait`}
	ctr["securityContext"] = map[string]any{
		"runAsUser":                0,
		"allowPrivilegeEscalation": false,
		"capabilities":             map[string]any{"drop": []string{"ALL"}},
	}
	var vols, mounts []map[string]any
	for _, v := range volumes {
		vols = append(vols, map[string]any{"name": v.Name, "hostPath": map[string]any{"path": v.HostPath}})
		m := map[string]any{"name": v.Name, "mountPath": v.MountPath, "readOnly": v.ReadOnly}
		if v.RecursiveReadOnly != "" {
			m["recursiveReadOnly"] = v.RecursiveReadOnly
		}
		mounts = append(mounts, m)
	}
	spec["volumes"] = vols
	ctr["volumeMounts"] = mounts
	return json.MarshalIndent(pod, "", "  ")
}

// PodClaim is one of a pod's spec.resourceClaims: a claim of the pod's own
// made from Template, or the existing ResourceClaim Claim. The container
// gets the devices of every one.
type PodClaim struct{ Name, Template, Claim string }

// ClusterClaimPod is ClusterGPUPod for Dynamic Resource Allocation: the
// container asks for the devices of claims instead of extended resources.
func ClusterClaimPod(name string, claims ...PodClaim) ([]byte, error) {
	pod := gpuPod(name, nil, false)
	spec := pod["spec"].(map[string]any)
	ctr := spec["containers"].([]map[string]any)[0]
	var podClaims, ctrClaims []map[string]any
	for _, c := range claims {
		pc := map[string]any{"name": c.Name}
		switch {
		case c.Template != "":
			pc["resourceClaimTemplateName"] = c.Template
		case c.Claim != "":
			pc["resourceClaimName"] = c.Claim
		default:
			return nil, fmt.Errorf("pod %s: claim %s names neither a template nor a claim", name, c.Name)
		}
		podClaims = append(podClaims, pc)
		ctrClaims = append(ctrClaims, map[string]any{"name": c.Name})
	}
	spec["resourceClaims"] = podClaims
	ctr["resources"] = map[string]any{"claims": ctrClaims}
	return json.MarshalIndent(pod, "", "  ")
}
