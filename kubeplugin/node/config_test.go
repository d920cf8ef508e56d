package node

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/discovery"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/cdi/spec"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin"
)

func validConfig(t *testing.T) Config {
	t.Helper()
	b, err := spec.NewBuilder()
	require.NoError(t, err)
	c := DefaultConfig()
	c.Scanner, c.Builder = discovery.New(), b
	return c
}

func TestValidateNamesTheFieldThatCannotBeUsed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Config)
		field  string
		with   string
		reason string
	}{
		{"no scanner", func(c *Config) { c.Scanner = nil }, "Scanner", "", "is not set"},
		{"no builder", func(c *Config) { c.Builder = nil }, "Builder", "", "is not set"},
		{"an empty spec dir", func(c *Config) { c.CDISpecDir = "" }, "CDISpecDir", "", "must not be empty"},
		{"allow and deny lists together", func(c *Config) { c.AllowIDs, c.DenyIDs = []string{"0x56a0"}, []string{"0x46a6"} }, "AllowIDs", "DenyIDs", "mutually exclusive"},
		{"a malformed allowed ID", func(c *Config) { c.AllowIDs = []string{"0x56a"} }, "AllowIDs", "", `"0x56a"`},
		{"an empty denied ID", func(c *Config) { c.DenyIDs = []string{"0x56a0", ""} }, "DenyIDs", "", `""`},
		{"a negative resync period", func(c *Config) { c.ResyncPeriod = -time.Second }, "ResyncPeriod", "", "-1s is negative"},
		{"a resync period that would keep a core busy", func(c *Config) { c.ResyncPeriod = 10 * time.Millisecond }, "ResyncPeriod", "", "10ms is below 1s"},
		{"a debounce that would delay every hotplug", func(c *Config) { c.Debounce = 2 * time.Second }, "Debounce", "", "2s is not between 0 and 1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig(t)
			tc.change(&c)
			err := c.Validate()
			fe, ok := kubeplugin.AsFieldError(err)
			require.True(t, ok, "want a FieldError, got %v", err)
			assert.Equal(t, tc.field, fe.Field)
			assert.Equal(t, tc.with, fe.With)
			assert.Contains(t, fe.Reason, tc.reason)
		})
	}
	t.Run("the defaults with a scanner and a builder", func(t *testing.T) {
		c := validConfig(t)
		assert.NoError(t, c.Validate())
	})
	t.Run("a resync period of 0 turns it off", func(t *testing.T) {
		c := validConfig(t)
		c.ResyncPeriod = 0
		assert.NoError(t, c.Validate())
	})
}

func TestNewNormalizesDeviceIDsAsSysfsSpellsThem(t *testing.T) {
	c := validConfig(t)
	c.AllowIDs = []string{"56A0", " 0x46a6"}
	n, err := New(c)
	require.NoError(t, err)
	assert.Equal(t, []string{"0x56a0", "0x46a6"}, n.cfg.AllowIDs)
	assert.Equal(t, []string{"56A0", " 0x46a6"}, c.AllowIDs, "the caller's slice is left alone")
}
