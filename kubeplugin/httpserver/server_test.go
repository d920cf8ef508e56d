package httpserver_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
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

// serveT serves routes on a loopback port until the test ends, and fails
// the test if Serve then reports an error other than want.
func serveT(t *testing.T, routes map[string]http.Handler) (base string, stop func() error) {
	t.Helper()
	srv, err := httpserver.Listen("test", "127.0.0.1:0", routes)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	stopped := false
	var result error
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case result = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("Serve did not return after its context ended")
			}
		}
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return "http://" + srv.Addr().String(), stop
}

// rawRequest sends req as it is and returns all the server answered.
func rawRequest(t *testing.T, base, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(c, req)
	require.NoError(t, err)
	out, err := io.ReadAll(c)
	require.NoError(t, err)
	return string(out)
}

func TestTheServerSpeaksHTTP(t *testing.T) {
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Method", r.Method)
		fmt.Fprintf(w, "hello %s", r.URL.Query().Get("who"))
	})
	base, stop := serveT(t, map[string]http.Handler{
		"/hello": hello,
		"/teapot": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusTeapot)
			w.WriteHeader(http.StatusOK) // too late: the first status counts
			io.WriteString(w, "short and stout")
		}),
		"/panic": http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("handler bug") }),
		"/empty": http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}),
	})

	t.Run("a client that keeps connections alive gets every answer whole", func(t *testing.T) {
		client := &http.Client{Timeout: 10 * time.Second}
		for i := range 3 {
			resp, err := client.Get(fmt.Sprintf("%s/hello?who=%d", base, i))
			require.NoError(t, err)
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, fmt.Sprintf("hello %d", i), string(body))
			assert.Equal(t, int64(len(body)), resp.ContentLength)
			assert.Equal(t, "text/plain; charset=utf-8", resp.Header.Get("Content-Type"))
			assert.Equal(t, "GET", resp.Header.Get("X-Method"))
			assert.True(t, resp.Close, "the server says it closes the connection")
		}
	})

	t.Run("HEAD gets the headers and no body", func(t *testing.T) {
		out := rawRequest(t, base, "HEAD /hello?who=x HTTP/1.1\r\nHost: x\r\n\r\n")
		assert.True(t, strings.HasPrefix(out, "HTTP/1.1 200 OK\r\n"), out)
		assert.Contains(t, out, "Content-Length: 7\r\n")
		assert.True(t, strings.HasSuffix(out, "\r\n\r\n"), "no body after the headers: %q", out)
	})

	t.Run("the first status a handler sets is the answer's", func(t *testing.T) {
		out := rawRequest(t, base, "GET /teapot HTTP/1.1\r\nHost: x\r\n\r\n")
		assert.True(t, strings.HasPrefix(out, "HTTP/1.1 418 I'm a teapot\r\n"), out)
		assert.True(t, strings.HasSuffix(out, "\r\n\r\nshort and stout"), out)
	})

	t.Run("a handler that writes nothing answers 200 with no body", func(t *testing.T) {
		out := rawRequest(t, base, "GET /empty HTTP/1.0\r\n\r\n")
		assert.True(t, strings.HasPrefix(out, "HTTP/1.1 200 OK\r\n"), out)
		assert.Contains(t, out, "Content-Length: 0\r\n")
	})

	t.Run("a handler that panics answers 500 and the server goes on", func(t *testing.T) {
		out := rawRequest(t, base, "GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
		assert.True(t, strings.HasPrefix(out, "HTTP/1.1 500 Internal Server Error\r\n"), out)
		out = rawRequest(t, base, "GET /hello?who=again HTTP/1.1\r\nHost: x\r\n\r\n")
		assert.True(t, strings.HasSuffix(out, "hello again"), out)
	})

	t.Run("another path is 404, whatever the method", func(t *testing.T) {
		for _, m := range []string{"GET", "POST", "DELETE"} {
			out := rawRequest(t, base, m+" /hello/more HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
			assert.True(t, strings.HasPrefix(out, "HTTP/1.1 404 Not Found\r\n"), "%s: %s", m, out)
		}
	})

	t.Run("what is not HTTP gets 400", func(t *testing.T) {
		for _, req := range []string{"hello\r\n\r\n", "GET\r\n\r\n", "GET / HTTP/9\r\n\r\n", "GET / HTTP/1.1\r\nno colon\r\n\r\n"} {
			out := rawRequest(t, base, req)
			assert.True(t, strings.HasPrefix(out, "HTTP/1.1 400 Bad Request\r\n"), "%q: %q", req, out)
		}
	})

	t.Run("a request larger than any probe's is refused", func(t *testing.T) {
		big := "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\n\r\n"
		out := rawRequest(t, base, big)
		assert.True(t, strings.HasPrefix(out, "HTTP/1.1 400 Bad Request\r\n"), "%.60q", out)
	})

	assert.NoError(t, stop())
}

func TestASilentClientIsCutOffAndShutdownWaitsForRequestsInFlight(t *testing.T) {
	defer httpserver.SetTimeouts(200*time.Millisecond, 10*time.Second)()
	release := make(chan struct{})
	entered := make(chan struct{})
	base, stop := serveT(t, map[string]http.Handler{
		"/slow": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(entered)
			<-release
			io.WriteString(w, "done")
		}),
	})

	// A client that connects and says nothing gets its connection closed
	// once the request timeout has passed.
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = io.ReadAll(c)
	require.NoError(t, err, "the server closed the silent connection (EOF) before the client's own deadline")

	answer := make(chan string, 1)
	go func() {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(base + "/slow")
		if err != nil {
			answer <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answer <- string(b)
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	select {
	case err := <-stopped:
		t.Fatalf("Serve returned (%v) with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	assert.Equal(t, "done", <-answer, "the request in flight was answered")
	assert.NoError(t, <-stopped)
}

func TestShutdownCutsARequestThatOutlivesItsTimeout(t *testing.T) {
	defer httpserver.SetTimeouts(30*time.Second, 100*time.Millisecond)()
	entered := make(chan struct{})
	base, stop := serveT(t, map[string]http.Handler{
		"/stuck": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(entered)
			<-r.Context().Done() // ends only when the server gives up on it
		}),
	})
	go func() {
		if resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(base + "/stuck"); err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	err := stop()
	assert.ErrorContains(t, err, "cut short")
}
