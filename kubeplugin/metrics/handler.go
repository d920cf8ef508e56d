package metrics

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// handler serves a registry as promhttp.HandlerFor does with the options
// this package used (errors answered 500 and counted in
// promhttp_metric_handler_errors_total, the format negotiated from Accept,
// gzip when the scraper accepts it), through the same encoder, expfmt's.
// promhttp itself is not imported: its instrumentation of clients and
// servers, which nothing here uses, linked 0.36 MB into every plugin
// binary, metrics on or off, and a binary's pages are resident
// (BENCHMARKS.md, "At the floor").
type handler struct {
	gatherer prometheus.Gatherer
	errors   *prometheus.CounterVec
}

// Causes of promhttp_metric_handler_errors_total, as promhttp names them.
const (
	causeGathering = "gathering"
	causeEncoding  = "encoding"
)

func newHandler(reg *prometheus.Registry) *handler {
	h := &handler{
		gatherer: reg,
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "promhttp_metric_handler_errors_total",
			Help: "Total number of internal errors encountered by the promhttp metric handler.",
		}, []string{"cause"}),
	}
	reg.MustRegister(h.errors)
	// Both series read 0 before anything fails.
	h.errors.WithLabelValues(causeGathering)
	h.errors.WithLabelValues(causeEncoding)
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	families, err := h.gatherer.Gather()
	if err != nil {
		h.fail(w, causeGathering, err)
		return
	}
	format := expfmt.NegotiateAccept(r.Header, expfmt.DefaultAcceptedFormats()...)
	var body bytes.Buffer
	enc := expfmt.NewEncoder(&body, format)
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			h.fail(w, causeEncoding, err)
			return
		}
	}
	if c, ok := enc.(expfmt.Closer); ok {
		if err := c.Close(); err != nil {
			h.fail(w, causeEncoding, err)
			return
		}
	}
	w.Header().Add("Vary", "Accept")
	w.Header().Add("Vary", "Accept-Encoding")
	w.Header().Set("Content-Type", string(format))
	if !acceptsGzip(r.Header.Get("Accept-Encoding")) {
		_, _ = w.Write(body.Bytes())
		return
	}
	w.Header().Set("Content-Encoding", "gzip")
	gz := gzip.NewWriter(w)
	_, _ = gz.Write(body.Bytes())
	_ = gz.Close()
}

func (h *handler) fail(w http.ResponseWriter, cause string, err error) {
	h.errors.WithLabelValues(cause).Inc()
	http.Error(w, "An error has occurred while serving metrics:\n\n"+err.Error(), http.StatusInternalServerError)
}

// acceptsGzip reads an Accept-Encoding header: gzip (or *) listed without
// q=0.
func acceptsGzip(header string) bool {
	for _, item := range strings.Split(header, ",") {
		coding, params, _ := strings.Cut(item, ";")
		coding = strings.ToLower(strings.TrimSpace(coding))
		if coding != "gzip" && coding != "*" {
			continue
		}
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			if k, v, ok := strings.Cut(strings.TrimSpace(p), "="); ok && strings.TrimSpace(k) == "q" {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					q = f
				}
			}
		}
		if q > 0 {
			return true
		}
	}
	return false
}
