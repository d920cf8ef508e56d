// Package apiserver runs an etcd and a kube-apiserver of the versions
// test/cluster pins and builds (test/cluster/build.sh, into E2E_CACHE_DIR)
// for tests and benchmarks of the DRA driver: enough API for it (nodes,
// ResourceSlices, ResourceClaims), with no scheduler and no kubelet. The
// admin is a static token in system:masters. Where the components are not
// built, the test is Unavailable (skipped locally, failed in CI).
package apiserver

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
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
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// Server is a running API server.
type Server struct {
	// Kubeconfig is a kubeconfig file for the admin, for a process under
	// test.
	Kubeconfig string
	// Client is the admin's client, for the test itself.
	Client kubernetes.Interface
}

// DefaultCacheDir is where test/cluster/build.sh builds, unless
// E2E_CACHE_DIR says otherwise.
const DefaultCacheDir = "/var/cache/intel-gpu-cdi-e2e"

// versionsFile is test/cluster/versions.env, found from this source file
// so that any package's test can use it.
func versionsFile() string {
	_, self, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(self), "..", "cluster", "versions.env")
}

// Binary is where test/cluster/build.sh leaves a pinned component, etcd or
// kube-apiserver. A missing one makes t Unavailable, saying how to build it.
func Binary(t testing.TB, name string) string {
	t.Helper()
	cache := os.Getenv("E2E_CACHE_DIR")
	if cache == "" {
		cache = DefaultCacheDir
	}
	versions := map[string]string{}
	f, err := os.Open(versionsFile())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok && !strings.HasPrefix(k, "#") {
			versions[k] = v
		}
	}
	dir := map[string]string{
		"etcd":           "etcd-" + versions["ETCD_VERSION"],
		"kube-apiserver": "kubernetes-" + versions["KUBERNETES_VERSION"],
	}[name]
	p := filepath.Join(cache, dir, name)
	if _, err := os.Stat(p); err != nil {
		testenv.Unavailable(t, "%s is not built (run `test/cluster/build.sh`, or `make e2e-cluster` once, as root; E2E_CACHE_DIR=%s): %v", name, cache, err)
	}
	return p
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var out []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// startProc runs a component until the test ends; its output goes to a
// log file in dir.
func startProc(t testing.TB, dir, name string, args ...string) {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
}

// Start runs etcd and a kube-apiserver on loopback until the test ends
// and waits until the API server is ready.
func Start(t testing.TB) *Server {
	t.Helper()
	etcd, apiserver := Binary(t, "etcd"), Binary(t, "kube-apiserver")
	dir := t.TempDir()
	ports := freePorts(t, 3)
	etcdClient, etcdPeer := fmt.Sprintf("http://127.0.0.1:%d", ports[0]), fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	startProc(t, dir, "etcd", etcd, "--name", "bench", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdClient, "--advertise-client-urls", etcdClient,
		"--listen-peer-urls", etcdPeer, "--initial-advertise-peer-urls", etcdPeer,
		"--initial-cluster", "bench="+etcdPeer, "--unsafe-no-fsync")

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	saKey, saPub := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	tok := make([]byte, 16)
	rand.Read(tok)
	token := hex.EncodeToString(tok)
	for p, data := range map[string][]byte{
		saKey:                            pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		saPub:                            pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}),
		filepath.Join(dir, "tokens.csv"): []byte(token + ",admin,admin,system:masters\n"),
	} {
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	startProc(t, dir, "kube-apiserver", apiserver, "--etcd-servers", etcdClient,
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(ports[2]), "--advertise-address", "127.0.0.1",
		"--endpoint-reconciler-type", "none", "--cert-dir", filepath.Join(dir, "apiserver"),
		"--token-auth-file", filepath.Join(dir, "tokens.csv"), "--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc", "--service-account-key-file", saPub,
		"--service-account-signing-key-file", saKey, "--service-cluster-ip-range", "10.0.0.0/24")

	server := fmt.Sprintf("https://127.0.0.1:%d", ports[2])
	rc := &rest.Config{Host: server, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	if err := waitReady(server, token); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "kube-apiserver.log"))
		t.Fatalf("kube-apiserver not ready: %v\n%s", err, log)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: bench, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: %q}}]
contexts: [{name: bench, context: {cluster: bench, user: admin}}]
current-context: bench
`, server, token)), 0o600); err != nil {
		t.Fatal(err)
	}
	return &Server{Kubeconfig: kubeconfig, Client: client}
}

// waitReady asks /readyz until it answers 200: the API server takes
// seconds to start, and nothing tells when but asking.
func waitReady(server, token string) error {
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", server+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
