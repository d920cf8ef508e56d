package metrics_test

import (
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/metrics"
)

func scrape(t *testing.T, h http.Handler, header http.Header) *http.Response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func parseText(t *testing.T, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r)
	require.NoError(t, err)
	return families
}

func TestTheHandlerServesTheRegistryAsPrometheusAsksForIt(t *testing.T) {
	m := metrics.New()
	m.SpecWrite(nil)
	m.SpecWrite(nil)

	t.Run("text, gzipped when the scraper accepts gzip", func(t *testing.T) {
		resp := scrape(t, m.Handler(), http.Header{"Accept-Encoding": {"gzip"}})
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, "gzip", resp.Header.Get("Content-Encoding"))
		assert.Equal(t, []string{"Accept", "Accept-Encoding"}, resp.Header.Values("Vary"))
		assert.True(t, strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4"), resp.Header.Get("Content-Type"))
		gz, err := gzip.NewReader(resp.Body)
		require.NoError(t, err)
		families := parseText(t, gz)
		assert.Equal(t, 2.0, families["intel_gpu_cdi_spec_writes_total"].GetMetric()[0].GetCounter().GetValue())
		assert.Contains(t, families, "go_goroutines")
		assert.Contains(t, families, "process_start_time_seconds")
	})
	t.Run("plain text when gzip is not accepted", func(t *testing.T) {
		for _, enc := range []string{"", "identity", "gzip;q=0", "br, gzip; q=0.0"} {
			resp := scrape(t, m.Handler(), http.Header{"Accept-Encoding": {enc}})
			require.Equal(t, http.StatusOK, resp.StatusCode, enc)
			assert.Empty(t, resp.Header.Get("Content-Encoding"), "Accept-Encoding %q", enc)
			assert.Contains(t, parseText(t, resp.Body), "intel_gpu_cdi_spec_writes_total", enc)
		}
	})
	t.Run("gzip in any case or as *, with a weight", func(t *testing.T) {
		for _, enc := range []string{"GZIP", "deflate, gzip;q=0.5", "*"} {
			resp := scrape(t, m.Handler(), http.Header{"Accept-Encoding": {enc}})
			assert.Equal(t, "gzip", resp.Header.Get("Content-Encoding"), "Accept-Encoding %q", enc)
		}
	})
	t.Run("delimited protobuf when asked for", func(t *testing.T) {
		proto := `application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited`
		resp := scrape(t, m.Handler(), http.Header{"Accept": {proto + ";q=0.7,text/plain;version=0.0.4;q=0.3"}})
		require.Equal(t, http.StatusOK, resp.StatusCode)
		ct := resp.Header.Get("Content-Type")
		assert.True(t, strings.HasPrefix(ct, "application/vnd.google.protobuf"), ct)
		dec := expfmt.NewDecoder(resp.Body, expfmt.Format(ct))
		found := false
		for {
			var f dto.MetricFamily
			if err := dec.Decode(&f); err != nil {
				require.ErrorIs(t, err, io.EOF)
				break
			}
			if f.GetName() == "intel_gpu_cdi_spec_writes_total" {
				found = true
				assert.Equal(t, 2.0, f.GetMetric()[0].GetCounter().GetValue())
			}
		}
		assert.True(t, found, "intel_gpu_cdi_spec_writes_total is not in the protobuf answer")
	})
}

// failing is a collector whose every collection fails.
type failing struct{ desc *prometheus.Desc }

func (f failing) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }
func (f failing) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(f.desc, errors.New("sysfs went away"))
}

func TestAFailedGatherIsA500AndCounted(t *testing.T) {
	m := metrics.New()
	m.Registry().MustRegister(failing{prometheus.NewDesc("broken", "fails", nil, nil)})
	resp := scrape(t, m.Handler(), http.Header{"Accept-Encoding": {"gzip"}})
	body, _ := io.ReadAll(resp.Body)
	assert.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	assert.Empty(t, resp.Header.Get("Content-Encoding"), "an error is not gzipped")
	assert.Contains(t, string(body), "sysfs went away")

	// Gather fails as a whole while the broken collector is there, and
	// still returns what it could collect.
	families, err := m.Registry().Gather()
	require.Error(t, err)
	counts := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "promhttp_metric_handler_errors_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			counts[s.GetLabel()[0].GetValue()] = s.GetCounter().GetValue()
		}
	}
	assert.Equal(t, map[string]float64{"gathering": 1, "encoding": 0}, counts)
}
