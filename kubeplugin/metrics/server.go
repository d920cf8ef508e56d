package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Path is where the metrics are served.
const Path = "/metrics"

// ShutdownTimeout bounds how long a stopping server waits for scrapes in
// flight before it drops them.
const ShutdownTimeout = 5 * time.Second

// Server serves a metrics handler at Path. The address is bound by Listen,
// so that a bad or taken address stops start-up instead of failing later.
type Server struct {
	lis net.Listener
	srv *http.Server
}

// Listen binds addr (host:port, such as ":9400" or "127.0.0.1:0") for h.
func Listen(addr string, h http.Handler) (*Server, error) {
	if addr == "" {
		return nil, errors.New("empty metrics address")
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle(Path, h)
	return &Server{
		lis: lis,
		srv: &http.Server{
			Handler: mux,
			// A scraper that never finishes its request must not hold a
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
// ShutdownTimeout for scrapes in flight. It returns nil after a clean
// shutdown; an error when serving failed before ctx ended or the shutdown
// had to cut scrapes short. Either way the listener is closed on return.
func (s *Server) Serve(ctx context.Context) error {
	served := make(chan error, 1)
	go func() { served <- s.srv.Serve(s.lis) }()
	select {
	case err := <-served:
		return fmt.Errorf("serving metrics on %s: %w", s.lis.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if err != nil {
		_ = s.srv.Close()
		err = fmt.Errorf("stopping metrics server on %s: %w", s.lis.Addr(), err)
	}
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, fmt.Errorf("serving metrics on %s: %w", s.lis.Addr(), serr))
	}
	return err
}
