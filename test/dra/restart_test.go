package dra_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/drakubelet"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/dratest"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// The child is this test binary re-executed as a driver process, so that
// it can be SIGKILLed: childEnv carries the kubelet root, and childNodeEnv
// the fake node's sys and dev roots, and childClaimsEnv the claims its API
// server holds, as JSON.
const (
	childEnv       = "DRA_TEST_CHILD_ROOT"
	childNodeEnv   = "DRA_TEST_CHILD_NODE"
	childClaimsEnv = "DRA_TEST_CHILD_CLAIMS"
)

// runChild runs the driver until it is killed.
func runChild(root string) int {
	sys, dev, _ := strings.Cut(os.Getenv(childNodeEnv), "\n")
	var claims []*resourceapi.ResourceClaim
	if err := json.Unmarshal([]byte(os.Getenv(childClaimsEnv)), &claims); err != nil {
		fmt.Fprintln(os.Stderr, "child: claims:", err)
		return 2
	}
	objs := []runtime.Object{dratest.Node()}
	for _, c := range claims {
		objs = append(objs, c)
	}
	p, err := dratest.New(root, sys, dev, dratest.NewClient(objs...))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := p.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	return 0
}

// startChild starts the driver in another process on n and root, with
// claims in its API server.
func startChild(t *testing.T, n *fakenode.Node, root string, claims ...*resourceapi.ResourceClaim) *exec.Cmd {
	t.Helper()
	data, err := json.Marshal(claims)
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+root, childNodeEnv+"="+n.Sys+"\n"+n.Dev, childClaimsEnv+"="+string(data))
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd
}

// waitCheckpoint waits, through file events, until the checkpoint's claims
// satisfy ok.
func waitCheckpoint(t *testing.T, path, what string, ok func(map[string]json.RawMessage) bool) {
	t.Helper()
	w, err := fsnotify.NewWatcher()
	require.NoError(t, err)
	defer w.Close()
	require.NoError(t, w.Add(filepath.Dir(path)))
	deadline := time.After(waitFor)
	for !ok(checkpointClaims(t, path)) {
		select {
		case <-w.Events:
		case err := <-w.Errors:
			t.Fatal(err)
		case <-deadline:
			t.Fatalf("the checkpoint never showed that %s: %v", what, checkpointClaims(t, path))
		}
	}
}

func TestPreparedClaimsSurviveASIGKILLAndClaimsDeletedMeanwhileAreDropped(t *testing.T) {
	n := fakenode.NewT(t)
	n.MustApply(t, fakenode.DiscreteXe)
	root := shortTempDir(t)
	// The kubelet makes its registry directory.
	require.NoError(t, os.MkdirAll(filepath.Join(root, "plugins_registry"), 0o755))
	a := dratest.Claim("ns", "a", "uid-a", dratest.Exclusive("gpu", discrete))
	gone := dratest.Claim("ns", "gone", "uid-gone", dratest.Exclusive("gpu", igpu))
	replaced := dratest.Claim("ns", "replaced", "uid-replaced", dratest.Admin("gpu", igpu))
	child := startChild(t, n, root, a, gone, replaced)

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	regSock := filepath.Join(root, "plugins_registry", "gpu.intel.com-reg.sock")
	k, err := drakubelet.Register(ctx, regSock)
	require.NoError(t, err)
	before := prepare(t, k, a, gone, replaced)
	for uid, res := range before {
		require.Empty(t, res.Error, uid)
	}
	k.Close()

	require.NoError(t, child.Process.Signal(syscall.SIGKILL))
	_ = child.Wait()
	ckpt := filepath.Join(root, "plugins", "gpu.intel.com", "checkpoint.json")
	claims := checkpointClaims(t, ckpt)
	require.Contains(t, claims, "uid-a")
	require.Contains(t, claims, "uid-gone")
	require.Contains(t, claims, "uid-replaced")

	// While the driver was down, one claim was deleted and another
	// replaced by a claim of the same name: the kubelet will never
	// unprepare them.
	b := dratest.Claim("ns", "b", "uid-b", dratest.Exclusive("gpu", discrete))
	client := dratest.NewClient(dratest.Node(), a, b, dratest.Claim("ns", "replaced", "uid-replaced-2", dratest.Exclusive("gpu", igpu)))
	r := startRigOn(t, n, root, client)
	k2 := r.register()

	waitCheckpoint(t, ckpt, "the deleted and the replaced claims are dropped", func(c map[string]json.RawMessage) bool {
		_, g := c["uid-gone"]
		_, rp := c["uid-replaced"]
		_, ok := c["uid-a"]
		return !g && !rp && ok
	})
	t.Run("the surviving claim gets the same answer", func(t *testing.T) {
		after := prepare(t, k2, a)["uid-a"]
		assert.Equal(t, before["uid-a"].String(), after.String())
	})
	t.Run("and still holds its GPU", func(t *testing.T) {
		assert.Contains(t, prepare(t, k2, b)["uid-b"].Error, "ns/a")
		require.Empty(t, unprepare(t, k2, a)["uid-a"].Error)
		assert.Empty(t, prepare(t, k2, b)["uid-b"].Error)
	})
	entries, err := os.ReadDir(filepath.Dir(ckpt))
	require.NoError(t, err)
	for _, e := range entries {
		assert.False(t, strings.HasPrefix(e.Name(), ".checkpoint-"), "temporary file %s left behind", e.Name())
	}
}

func TestAClaimPreparedAgainAfterItsUnprepareIsDroppedOnceItIsGone(t *testing.T) {
	// The kubelet can retry a Prepare that raced with the claim's
	// Unprepare; the claim then stays in the checkpoint with no kubelet
	// left to unprepare it. The next Unprepare checks the others.
	r := startRig(t, []func(*fakenode.Node) error{fakenode.DiscreteXe})
	k := r.register()
	x := dratest.Claim("ns", "x", "uid-x", dratest.Exclusive("gpu", discrete))
	y := dratest.Claim("ns", "y", "uid-y", dratest.Exclusive("gpu", igpu))
	r.create(x, y)
	require.Empty(t, prepare(t, k, x)["uid-x"].Error)
	require.Empty(t, unprepare(t, k, x)["uid-x"].Error)
	require.Empty(t, prepare(t, k, x)["uid-x"].Error, "the late retry")
	r.deleteClaim(x)
	require.Empty(t, prepare(t, k, y)["uid-y"].Error)
	require.Empty(t, unprepare(t, k, y)["uid-y"].Error)
	waitCheckpoint(t, r.plugin.Driver.CheckpointPath(), "the deleted claim is dropped", func(c map[string]json.RawMessage) bool {
		return len(c) == 0
	})
}
