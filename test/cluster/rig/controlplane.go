package rig

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// BridgeName is the host bridge the full-cluster rig's CNI creates; the rig
// deletes it at Close.
const BridgeName = "igce2e0"

// podSubnet is a private range unlikely to collide with anything on a build
// machine; the bridge is no gateway and masquerades nothing, so the host
// gets no route, no forwarding and no NAT rule.
const podSubnet = "10.254.77.0/24"

// controlPlane holds the API-server side of a one-node cluster.
type controlPlane struct {
	etcd, apiserver, controllerManager, scheduler *Proc
	server                                        string
	adminKubeconfig                               string
	pki                                           *PKI
	api                                           *API
}

// EnableCNI gives pods a network through a bridge, so that the node turns
// Ready (a cluster's scheduler avoids NotReady nodes). The bridge is the
// pods' gateway, so the host has an address on it and the kubelet reaches
// pod IPs for HTTP probes; there is no masquerading, so pods reach nothing
// beyond the host. Call before StartContainerd.
func (r *Rig) EnableCNI() error {
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(r.Bins.CNIDir, p)); err != nil {
			return fmt.Errorf("CNI plugin %s: %w", p, err)
		}
	}
	if _, err := net.InterfaceByName(BridgeName); err == nil {
		return fmt.Errorf("interface %s already exists: another rig is running or one was killed", BridgeName)
	}
	conflist := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "igc-e2e",
  "plugins": [{
    "type": "bridge",
    "bridge": %q,
    "isGateway": true,
    "ipMasq": false,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "dataDir": %q}
  }]
}`, BridgeName, podSubnet, filepath.Join(r.Dir, "cni", "ipam"))
	r.cniBridge = BridgeName
	return os.WriteFile(filepath.Join(r.Dir, "cni", "net.d", "10-igc-e2e.conflist"), []byte(conflist), 0o644)
}

// StartControlPlane starts etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler on loopback ports, and makes the next StartKubelet join
// them as node NodeName.
func (r *Rig) StartControlPlane(ctx context.Context) error {
	if r.Bins.ControlPlane == "" || r.Bins.Etcd == "" {
		return errors.New("control plane not built (run build.sh)")
	}
	cp := &controlPlane{}
	r.cp = cp
	pki, err := NewPKI(filepath.Join(r.Dir, "pki"))
	if err != nil {
		return err
	}
	cp.pki = pki
	loop := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")}
	apiCert, apiKey, err := pki.Issue("apiserver", "kube-apiserver", nil, loop,
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"})
	if err != nil {
		return err
	}
	adminCert, adminKey, err := pki.Issue("admin", "kubernetes-admin", []string{"system:masters"}, nil, nil)
	if err != nil {
		return err
	}
	nodeCert, nodeKey, err := pki.Issue("kubelet", "system:node:"+NodeName, []string{"system:nodes"}, nil, nil)
	if err != nil {
		return err
	}
	saKey, saPub, err := pki.ServiceAccountKeys()
	if err != nil {
		return err
	}
	ports := make([]int, 6)
	for i := range ports {
		if ports[i], err = FreePort(); err != nil {
			return err
		}
	}
	etcdClient := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	etcdPeer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	cp.server = "https://127.0.0.1:" + strconv.Itoa(ports[2])

	cp.etcd, err = Start("etcd", r.LogDir, nil, r.Bins.Etcd,
		"--name", "e2e", "--data-dir", filepath.Join(r.Dir, "etcd"),
		"--listen-client-urls", etcdClient, "--advertise-client-urls", etcdClient,
		"--listen-peer-urls", etcdPeer, "--initial-advertise-peer-urls", etcdPeer,
		"--initial-cluster", "e2e="+etcdPeer, "--unsafe-no-fsync")
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, cp.etcd, etcdClient+"/health", nil, 60*time.Second); err != nil {
		return err
	}

	bin := func(name string) string { return filepath.Join(r.Bins.ControlPlane, name) }
	cp.apiserver, err = Start("kube-apiserver", r.LogDir, nil, bin("kube-apiserver"),
		"--etcd-servers", etcdClient,
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(ports[2]),
		// Loopback only: no endpoint reconciler (it refuses 127.0.0.1) and
		// so no endpoints for the kubernetes service, which nothing here uses.
		"--advertise-address", "127.0.0.1", "--endpoint-reconciler-type", "none",
		"--tls-cert-file", apiCert, "--tls-private-key-file", apiKey,
		"--client-ca-file", pki.CACert,
		"--kubelet-client-certificate", adminCert, "--kubelet-client-key", adminKey,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", saPub, "--service-account-signing-key-file", saKey,
		"--service-cluster-ip-range", "10.0.0.0/24",
		"--authorization-mode", "Node,RBAC",
		"--allow-privileged=true",
		"--cert-dir", filepath.Join(r.Dir, "apiserver"),
	)
	if err != nil {
		return err
	}
	cp.adminKubeconfig = filepath.Join(r.Dir, "admin.kubeconfig")
	if err := pki.Kubeconfig(cp.adminKubeconfig, cp.server, adminCert, adminKey); err != nil {
		return err
	}
	r.kubeletKubeconfig = filepath.Join(r.Dir, "kubelet.kubeconfig")
	if err := pki.Kubeconfig(r.kubeletKubeconfig, cp.server, nodeCert, nodeKey); err != nil {
		return err
	}
	client, err := pki.client(adminCert, adminKey)
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, cp.apiserver, cp.server+"/readyz", client, 120*time.Second); err != nil {
		return err
	}
	if cp.api, err = newAPI(cp.server, pki.CACert, adminCert, adminKey); err != nil {
		return err
	}

	cp.controllerManager, err = Start("kube-controller-manager", r.LogDir, nil, bin("kube-controller-manager"),
		"--kubeconfig", cp.adminKubeconfig, "--leader-elect=false",
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(ports[3]),
		"--service-account-private-key-file", saKey, "--root-ca-file", pki.CACert,
		"--use-service-account-credentials=false",
		"--cert-dir", filepath.Join(r.Dir, "controller-manager"),
	)
	if err != nil {
		return err
	}
	cp.scheduler, err = Start("kube-scheduler", r.LogDir, nil, bin("kube-scheduler"),
		"--kubeconfig", cp.adminKubeconfig, "--leader-elect=false",
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(ports[4]),
		"--cert-dir", filepath.Join(r.Dir, "scheduler"),
	)
	return err
}

func (p *PKI) client(cert, key string) (*http.Client, error) {
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12},
	}}, nil
}

// waitHTTP waits until url answers 200, failing early if proc exits.
func waitHTTP(ctx context.Context, proc *Proc, url string, client *http.Client, timeout time.Duration) error {
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	return WaitFor(timeout, 250*time.Millisecond, func() (bool, error) {
		if proc.Exited() {
			return false, fmt.Errorf("%s %w; see %s", proc.Name, ErrExited, proc.Log)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Errorf("%s: %s", url, resp.Status)
	})
}

// stopControlPlane stops the control plane, clients first.
func (r *Rig) stopControlPlane() error {
	if r.cp == nil {
		return nil
	}
	return errors.Join(
		r.cp.scheduler.Stop(10*time.Second),
		r.cp.controllerManager.Stop(10*time.Second),
		r.cp.apiserver.Stop(20*time.Second),
		r.cp.etcd.Stop(10*time.Second),
	)
}

// deleteBridge removes the CNI bridge (veths die with their namespaces).
func (r *Rig) deleteBridge() error {
	if r.cniBridge == "" {
		return nil
	}
	if _, err := net.InterfaceByName(r.cniBridge); err != nil {
		return nil
	}
	if out, err := exec.Command("ip", "link", "delete", r.cniBridge).CombinedOutput(); err != nil {
		return fmt.Errorf("deleting bridge %s: %w: %s", r.cniBridge, err, out)
	}
	return nil
}
