// Package httpserver serves the plugins' small HTTP endpoints (metrics,
// probes): bound at start, so that a bad or taken address stops start-up,
// and shut down gracefully with the context.
//
// It speaks just enough HTTP/1.1 for a kubelet probe and a Prometheus
// scrape: one request per connection, answered whole with its length and
// "Connection: close". It does not use net/http's Server, whose TLS and
// HTTP/2 support linked 1.6 MB more into a binary that runs on every GPU
// node (BENCHMARKS.md, "At the floor"); the handlers are still
// http.Handlers, given an *http.Request that http.ReadRequest parsed.
package httpserver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/retry"
)

// ShutdownTimeout bounds how long a stopping server waits for requests in
// flight before it drops them.
const ShutdownTimeout = 5 * time.Second

// shutdownTimeout is ShutdownTimeout; tests shorten it.
var shutdownTimeout = ShutdownTimeout

// requestTimeout bounds one connection, from accepting it to the last byte
// of the answer: a client that never finishes its request, or never reads
// the answer, must not hold a connection for ever.
var requestTimeout = 30 * time.Second

// maxHeaderBytes bounds what is read of a request: a probe or a scrape
// sends a few hundred bytes.
const maxHeaderBytes = 64 << 10

// Server serves handlers at fixed paths; every other path is 404.
type Server struct {
	what   string
	lis    net.Listener
	routes map[string]http.Handler

	mu sync.Mutex
	// conns holds each open connection with what cancels its request.
	conns map[net.Conn]context.CancelFunc
	wg    sync.WaitGroup
}

// Listen binds addr (host:port, such as ":9400" or "127.0.0.1:0") for the
// handlers of routes, keyed by path. what names the endpoint in errors.
func Listen(what, addr string, routes map[string]http.Handler) (*Server, error) {
	if addr == "" {
		return nil, fmt.Errorf("empty %s address", what)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for %s: %w", what, err)
	}
	return &Server{what: what, lis: lis, routes: routes, conns: map[net.Conn]context.CancelFunc{}}, nil
}

// Addr is the bound address; with port 0 it holds the port picked.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Close releases the address of a server that was never served.
func (s *Server) Close() error { return s.lis.Close() }

// Serve serves until ctx ends, then shuts down gracefully, waiting at most
// ShutdownTimeout for requests in flight. It returns nil after a clean
// shutdown; an error when serving failed before ctx ended or the shutdown
// had to cut requests short. Either way the listener is closed on return.
func (s *Server) Serve(ctx context.Context) error {
	accepted := make(chan error, 1)
	go func() { accepted <- s.accept(ctx) }()
	select {
	case err := <-accepted:
		s.lis.Close()
		s.drop()
		s.wg.Wait()
		return fmt.Errorf("serving %s on %s: %w", s.what, s.lis.Addr(), err)
	case <-ctx.Done():
	}
	s.lis.Close()
	<-accepted
	idle := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(idle)
	}()
	select {
	case <-idle:
		return nil
	case <-time.After(shutdownTimeout):
	}
	s.drop()
	<-idle
	return fmt.Errorf("stopping %s server on %s: requests still in flight after %s were cut short", s.what, s.lis.Addr(), shutdownTimeout)
}

// acceptBackoff paces accepting again after a failure.
var acceptBackoff = retry.Backoff{Duration: 5 * time.Millisecond, Factor: 2, Cap: time.Second}

// accept serves each connection on a goroutine of its own until the
// listener is closed; once ctx has ended, that is the shutdown. Other
// failures (out of file descriptors) pass: it tries again after a wait
// that grows to a second, as net/http's Server does.
func (s *Server) accept(ctx context.Context) error {
	b := acceptBackoff
	for {
		c, err := s.lis.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			select {
			case <-time.After(b.Step()):
			case <-ctx.Done():
			}
			continue
		}
		b = acceptBackoff
		// A request outlives the end of ctx: the shutdown waits for it,
		// and cancels it only when it gives up waiting.
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		s.mu.Lock()
		s.conns[c] = cancel
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			serveConn(rctx, c, s.routes)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			cancel()
			c.Close()
		}()
	}
}

// drop cancels every request in flight and closes its connection.
func (s *Server) drop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, cancel := range s.conns {
		cancel()
		c.Close()
	}
}

// serveConn answers the one request of a connection.
func serveConn(ctx context.Context, c net.Conn, routes map[string]http.Handler) {
	_ = c.SetDeadline(time.Now().Add(requestTimeout))
	defer linger(c)
	req, err := http.ReadRequest(bufio.NewReader(io.LimitReader(c, maxHeaderBytes)))
	if err != nil {
		// Nothing, or not HTTP: say so if the client is still there.
		_ = writeResponse(c, "", &response{status: http.StatusBadRequest, header: http.Header{}})
		return
	}
	req.RemoteAddr = c.RemoteAddr().String()
	req = req.WithContext(ctx)

	w := &response{header: http.Header{}}
	if h, ok := routes[req.URL.Path]; ok {
		serve(h, w, req)
	} else {
		http.NotFound(w, req)
	}
	_ = writeResponse(c, req.Method, w)
}

// linger ends the server's side of a connection and reads what the client
// still sends until it closes its side: closing with unread bytes would
// reset the connection, and the client could lose the answer.
func linger(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok || tc.CloseWrite() != nil {
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(c, 1<<20))
}

// serve runs a handler; one that panics answers 500 and takes down only
// its own request.
func serve(h http.Handler, w *response, req *http.Request) {
	defer func() {
		if recover() != nil {
			*w = response{status: http.StatusInternalServerError, header: http.Header{}}
		}
	}()
	h.ServeHTTP(w, req)
}

// response is an http.ResponseWriter that keeps the whole answer, so that
// it goes out with its length.
type response struct {
	status int
	header http.Header
	body   bytes.Buffer
}

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *response) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}

// writeResponse sends w as the answer to a request of method.
func writeResponse(c net.Conn, method string, w *response) error {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	body := w.body.Bytes()
	h := w.header
	if h.Get("Content-Type") == "" && len(body) > 0 {
		h.Set("Content-Type", http.DetectContentType(body))
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Connection", "close")
	out := bufio.NewWriter(c)
	fmt.Fprintf(out, "HTTP/1.1 %d %s\r\n", w.status, http.StatusText(w.status))
	if err := h.Write(out); err != nil {
		return err
	}
	out.WriteString("\r\n")
	if method != http.MethodHead {
		out.Write(body)
	}
	return out.Flush()
}
