package probe_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/probe"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, err := io.ReadAll(rec.Result().Body)
	require.NoError(t, err)
	return rec.Code, string(body)
}

func TestProbesAnswerFromEveryCheck(t *testing.T) {
	var notReady, stuck error
	routes := probe.Handler(
		probe.Check{Name: "node", Live: func(context.Context) error { return stuck }, Ready: func() error { return nil }},
		probe.Check{Name: "device plugin", Ready: func() error { return notReady }},
	)
	mux := http.NewServeMux()
	for p, h := range routes {
		mux.Handle(p, h)
	}

	code, body := get(t, mux, probe.LivePath)
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ok\n", body)
	code, _ = get(t, mux, probe.ReadyPath)
	assert.Equal(t, http.StatusOK, code)

	notReady = errors.New("gpu.intel.com/i915 is not registered with the kubelet")
	code, body = get(t, mux, probe.ReadyPath)
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "device plugin: gpu.intel.com/i915 is not registered with the kubelet\n", body)
	code, _ = get(t, mux, probe.LivePath)
	assert.Equal(t, http.StatusOK, code, "not ready is not dead")

	stuck = errors.New("loop did not answer")
	code, body = get(t, mux, probe.LivePath)
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "node: loop did not answer\n", body)
}

func TestALivenessCheckGetsABoundedContext(t *testing.T) {
	var deadline time.Time
	routes := probe.Handler(probe.Check{Name: "node", Live: func(ctx context.Context) error {
		d, ok := ctx.Deadline()
		require.True(t, ok, "a liveness check must not be able to hang the probe")
		deadline = d
		return nil
	}})
	code, _ := get(t, routes[probe.LivePath], probe.LivePath)
	assert.Equal(t, http.StatusOK, code)
	assert.WithinDuration(t, time.Now().Add(probe.Timeout), deadline, probe.Timeout)
}
