// Package httpserver serves the plugins' small HTTP endpoints (metrics,
// probes): bound at start, so that a bad or taken address stops start-up,
// and shut down gracefully with the context.
package httpserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// ShutdownTimeout bounds how long a stopping server waits for requests in
// flight before it drops them.
const ShutdownTimeout = 5 * time.Second

// Server serves handlers at fixed paths; every other path is 404.
type Server struct {
	what string
	lis  net.Listener
	srv  *http.Server
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
	mux := http.NewServeMux()
	for path, h := range routes {
		mux.Handle(path, h)
	}
	return &Server{
		what: what,
		lis:  lis,
		srv: &http.Server{
			Handler: mux,
			// A client that never finishes its request must not hold a
			// connection for ever.
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       2 * time.Minute,
		},
	}, nil
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
	served := make(chan error, 1)
	go func() { served <- s.srv.Serve(s.lis) }()
	select {
	case err := <-served:
		return fmt.Errorf("serving %s on %s: %w", s.what, s.lis.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if err != nil {
		_ = s.srv.Close()
		err = fmt.Errorf("stopping %s server on %s: %w", s.what, s.lis.Addr(), err)
	}
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, fmt.Errorf("serving %s on %s: %w", s.what, s.lis.Addr(), serr))
	}
	return err
}
