package httpserver_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/httpserver"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/metrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestServer(t *testing.T) {
	t.Run("a bad address fails at Listen", func(t *testing.T) {
		for _, addr := range []string{"", "nonsense", "127.0.0.1:notaport", "256.0.0.1:9400"} {
			_, err := httpserver.Listen("metrics", addr, map[string]http.Handler{"/": http.NotFoundHandler()})
			assert.Error(t, err, "address %q", addr)
		}
	})

	t.Run("a taken address fails at Listen", func(t *testing.T) {
		taken, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer taken.Close()
		_, err = httpserver.Listen("metrics", taken.Addr().String(), nil)
		assert.ErrorContains(t, err, "address already in use")
	})

	t.Run("it serves /metrics until its context ends and then frees the port", func(t *testing.T) {
		m := metrics.New()
		m.KubeletRestart()
		srv, err := metrics.Listen("127.0.0.1:0", m.Handler())
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx) }()

		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
		base := "http://" + srv.Addr().String()
		resp, err := client.Get(base + metrics.Path)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Contains(t, string(body), "intel_gpu_cdi_kubelet_restarts_total 1\n")

		resp, err = client.Get(base + "/")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusNotFound, resp.StatusCode, "only /metrics is served")

		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return after its context ended")
		}
		again, err := net.Listen("tcp", srv.Addr().String())
		require.NoError(t, err, "the port is free again")
		again.Close()
	})

	t.Run("a listener that fails is reported, not hidden", func(t *testing.T) {
		srv, err := httpserver.Listen("metrics", "127.0.0.1:0", nil)
		require.NoError(t, err)
		require.NoError(t, srv.Close())
		err = srv.Serve(context.Background())
		assert.ErrorContains(t, err, "serving metrics on")
	})
}
