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
	// CNIDir holds the CNI plugins.
	CNIDir string
	// ControlPlane is the directory of kube-apiserver, kube-scheduler and
	// kube-controller-manager; Etcd the etcd binary.
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
// naming all of them.
func FindBins(cacheDir string, versions map[string]string) (Bins, error) {
	var missing []string
	dir := func(name, versionKey string) string {
		d := filepath.Join(cacheDir, name+"-"+versions[versionKey])
		if _, err := os.Stat(filepath.Join(d, ".complete")); err != nil {
			missing = append(missing, d)
		}
		return d
	}
	ctrd := dir("containerd", "CONTAINERD_VERSION")
	crictl := dir("crictl", "CRICTL_VERSION")
	kube := dir("kubernetes", "KUBERNETES_VERSION")
	cni := dir("cni-plugins", "CNI_PLUGINS_VERSION")
	etcd := dir("etcd", "ETCD_VERSION")
	if len(missing) > 0 {
		return Bins{}, fmt.Errorf("not built (run build.sh): %s", strings.Join(missing, ", "))
	}
	b := Bins{
		Containerd:   filepath.Join(ctrd, "containerd"),
		Ctr:          filepath.Join(ctrd, "ctr"),
		Shim:         filepath.Join(ctrd, "containerd-shim-runc-v2"),
		Crictl:       filepath.Join(crictl, "crictl"),
		Kubelet:      filepath.Join(kube, "kubelet"),
		CNIDir:       cni,
		ControlPlane: kube,
		Etcd:         filepath.Join(etcd, "etcd"),
	}
	var errs []error
	for _, p := range []string{
		b.Containerd, b.Ctr, b.Shim, b.Crictl, b.Kubelet, b.Etcd, filepath.Join(cni, "loopback"),
		filepath.Join(kube, "kube-apiserver"), filepath.Join(kube, "kube-scheduler"), filepath.Join(kube, "kube-controller-manager"),
	} {
		if _, err := os.Stat(p); err != nil {
			errs = append(errs, err)
		}
	}
	return b, errors.Join(errs...)
}
