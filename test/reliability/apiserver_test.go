package reliability_test

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
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/testenv"
)

// apiServer is an etcd and a kube-apiserver of the versions test/cluster
// pins and builds (test/cluster/build.sh, into E2E_CACHE_DIR): enough API
// for the DRA driver (nodes, ResourceSlices, ResourceClaims), with no
// scheduler and no kubelet. The admin is a static token in system:masters.
type apiServer struct {
	kubeconfig string
	client     kubernetes.Interface
}

// cacheBinary is where test/cluster/build.sh leaves a pinned component.
func cacheBinary(t testing.TB, name string) string {
	t.Helper()
	cache := os.Getenv("E2E_CACHE_DIR")
	if cache == "" {
		cache = "/var/cache/intel-gpu-cdi-e2e"
	}
	versions := map[string]string{}
	f, err := os.Open(filepath.Join("..", "cluster", "versions.env"))
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
		testenv.Unavailable(t, "%s is not built (run test/cluster/build.sh or make e2e-cluster once): %v", name, err)
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
// log file in dir, shown when it fails.
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

func startAPIServer(t testing.TB) *apiServer {
	t.Helper()
	etcd, apiserver := cacheBinary(t, "etcd"), cacheBinary(t, "kube-apiserver")
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
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 2 * time.Second}
	// The API server takes seconds to start; nothing tells when but asking.
	err = wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", server+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
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
	return &apiServer{kubeconfig: kubeconfig, client: client}
}
