package rig

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Bins are the paths of the pinned third-party binaries build.sh left in the
// cache.
type Bins struct {
	Containerd, Ctr, Shim, Crictl, Kubelet string
	// CNIDir holds the CNI plugins (loopback is the one the rig uses).
	CNIDir string
	// ControlPlane is the directory of kube-apiserver, kube-scheduler,
	// kube-controller-manager and kubectl; Etcd the etcd binary. Empty when
	// not built.
	ControlPlane, Etcd string
}

// ReadVersions parses versions.env (KEY=VALUE lines, # comments).
func ReadVersions(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading pinned versions: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s: malformed line %q", path, line)
		}
		out[k] = v
	}
	return out, sc.Err()
}

// FindBins locates every component in cacheDir as build.sh lays it out
// (<name>-<version>/ with a .complete stamp). Missing pieces are an error
// naming all of them, except the control plane, which only the full-cluster
// run needs.
func FindBins(cacheDir string, versions map[string]string) (Bins, error) {
	var missing []string
	dir := func(name, versionKey string, required bool) string {
		d := filepath.Join(cacheDir, name+"-"+versions[versionKey])
		if _, err := os.Stat(filepath.Join(d, ".complete")); err != nil {
			if required {
				missing = append(missing, d)
			}
			return ""
		}
		return d
	}
	ctrd := dir("containerd", "CONTAINERD_VERSION", true)
	crictl := dir("crictl", "CRICTL_VERSION", true)
	kubelet := dir("kubelet", "KUBERNETES_VERSION", true)
	cni := dir("cni-plugins", "CNI_PLUGINS_VERSION", true)
	cp := dir("kube-control-plane", "KUBERNETES_VERSION", false)
	etcd := dir("etcd", "ETCD_VERSION", false)
	if len(missing) > 0 {
		return Bins{}, fmt.Errorf("not built (run build.sh): %s", strings.Join(missing, ", "))
	}
	b := Bins{
		Containerd:   filepath.Join(ctrd, "containerd"),
		Ctr:          filepath.Join(ctrd, "ctr"),
		Shim:         filepath.Join(ctrd, "containerd-shim-runc-v2"),
		Crictl:       filepath.Join(crictl, "crictl"),
		Kubelet:      filepath.Join(kubelet, "kubelet"),
		CNIDir:       cni,
		ControlPlane: cp,
	}
	if etcd != "" {
		b.Etcd = filepath.Join(etcd, "etcd")
	}
	var errs []error
	for _, p := range []string{b.Containerd, b.Ctr, b.Shim, b.Crictl, b.Kubelet, filepath.Join(cni, "loopback")} {
		if _, err := os.Stat(p); err != nil {
			errs = append(errs, err)
		}
	}
	return b, errors.Join(errs...)
}
