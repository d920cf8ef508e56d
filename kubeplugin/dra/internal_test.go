package dra

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/health"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/node"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLabelValue(t *testing.T) {
	tests := []struct{ reason, want string }{
		{"card left the DRM class; PCI function still present", "card-left-the-DRM-class-PCI-function-still-present"},
		{"/dev/dri/card1 is missing", "dev-dri-card1-is-missing"},
		{"/dev/dri/renderD129: 226:129 expected, found 1:3", "dev-dri-renderD129-226-129-expected-found-1-3"},
		{"_leading.and.trailing_.", "leading.and.trailing"},
		{"", ""},
		{"!!!", ""},
		{strings.Repeat("a", 62) + " b c", strings.Repeat("a", 62)},
		{"ünïcode driver → gone", "n-code-driver-gone"},
	}
	for _, tt := range tests {
		got := labelValue(tt.reason)
		if got != tt.want {
			t.Errorf("labelValue(%q) = %q, want %q", tt.reason, got, tt.want)
		}
		if errs := validation.IsValidLabelValue(got); len(errs) > 0 {
			t.Errorf("labelValue(%q) = %q is not a label value: %v", tt.reason, got, errs)
		}
	}
}

func TestDeviceNameIsADNSLabelThatKeepsTheAddress(t *testing.T) {
	for pci, want := range map[string]string{
		"0000:03:00.0": "gpu-0000-03-00-0",
		"0000:00:02.0": "gpu-0000-00-02-0",
		"10de:ff:1f.7": "gpu-10de-ff-1f-7",
	} {
		got := DeviceName(pci)
		if got != want {
			t.Errorf("DeviceName(%q) = %q, want %q", pci, got, want)
		}
		if errs := validation.IsDNS1123Label(got); len(errs) > 0 {
			t.Errorf("DeviceName(%q) = %q is not a DNS label: %v", pci, got, errs)
		}
	}
}

func validConfig() Config {
	c := DefaultConfig()
	c.NodeName = "node-1"
	c.Client = fake.NewSimpleClientset()
	return c
}

func TestValidateNamesTheField(t *testing.T) {
	long := "/" + strings.Repeat("d", 90)
	tests := []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"a driver name that is not a DNS subdomain", func(c *Config) { c.DriverName = "GPU_Intel" }, "DriverName"},
		{"an empty driver name", func(c *Config) { c.DriverName = "" }, "DriverName"},
		{"no node name", func(c *Config) { c.NodeName = "" }, "NodeName"},
		{"a node name with a slash", func(c *Config) { c.NodeName = "a/b" }, "NodeName"},
		{"an empty registrar dir", func(c *Config) { c.RegistrarDir = "" }, "RegistrarDir"},
		{"a relative registrar dir", func(c *Config) { c.RegistrarDir = "plugins_registry" }, "RegistrarDir"},
		{"a registrar dir too long for the socket", func(c *Config) { c.RegistrarDir = long }, "RegistrarDir"},
		{"a plugins dir too long for the socket", func(c *Config) { c.PluginsDir = long }, "PluginsDir"},
		{"a relative plugins dir", func(c *Config) { c.PluginsDir = "plugins" }, "PluginsDir"},
		{"no sysfs root", func(c *Config) { c.SysfsRoot = "" }, "SysfsRoot"},
		{"no shares", func(c *Config) { c.SharedDevNum = 0 }, "SharedDevNum"},
		{"too many shares", func(c *Config) { c.SharedDevNum = MaxSharedDevNum + 1 }, "SharedDevNum"},
		{"no health resend", func(c *Config) { c.HealthResend = 0 }, "HealthResend"},
		{"a health resend the kubelet would not wait for", func(c *Config) { c.HealthResend = MaxHealthResend + 1 }, "HealthResend"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is refused naming "+tt.field, func(t *testing.T) {
			c := validConfig()
			tt.edit(&c)
			err := c.Validate()
			fe, ok := kubeplugin.AsFieldError(err)
			if !ok || fe.Field != tt.field {
				t.Errorf("Validate() = %v, want a FieldError on %s", err, tt.field)
			}
		})
	}
	t.Run("the defaults with a node and a client are valid", func(t *testing.T) {
		c := validConfig()
		if err := c.Validate(); err != nil {
			t.Error(err)
		}
		if c.DataDir() != "/var/lib/kubelet/plugins/gpu.intel.com" || c.DRASocket() != "/var/lib/kubelet/plugins/gpu.intel.com/dra.sock" ||
			c.RegistrationSocket() != "/var/lib/kubelet/plugins_registry/gpu.intel.com-reg.sock" {
			t.Errorf("paths %s %s %s", c.DataDir(), c.DRASocket(), c.RegistrationSocket())
		}
	})
}

func TestCheckpoint(t *testing.T) {
	newCkpt := func(t *testing.T) *checkpoint {
		return &checkpoint{path: filepath.Join(t.TempDir(), CheckpointName), driver: "gpu.intel.com", node: "node-1"}
	}
	t.Run("what is saved loads back, and the file is 0600", func(t *testing.T) {
		c := newCkpt(t)
		cs := claims{"uid-1": {Namespace: "ns", Name: "a", Devices: []preparedDevice{{
			Request: "gpu", Pool: "node-1", Device: "gpu-0000-03-00-1", PCIAddress: "0000:03:00.1", PF: "0000:03:00.0",
			CDIDevices: []string{"intel.com/gpu=0000:03:00.1"}, ShareID: ptr.To(types.UID("s1")), Shares: 2, Admin: true,
		}}}}
		if err := c.save(cs); err != nil {
			t.Fatal(err)
		}
		got, note, err := c.load()
		if err != nil || note != "" {
			t.Fatalf("load: %v %q", err, note)
		}
		// Every field set, and compared apart from equal, which is under
		// test too.
		if !reflect.DeepEqual(got, cs) || !got["uid-1"].equal(cs["uid-1"]) {
			t.Errorf("loaded %+v, want %+v", got, cs)
		}
		fi, err := os.Stat(c.path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, %v; want 0600", fi.Mode(), err)
		}
		entries, _ := os.ReadDir(filepath.Dir(c.path))
		if len(entries) != 1 {
			t.Errorf("the directory holds %d entries, want only the checkpoint", len(entries))
		}
	})
	t.Run("a missing file is no claim", func(t *testing.T) {
		got, note, err := newCkpt(t).load()
		if err != nil || note != "" || len(got) != 0 {
			t.Errorf("load = %v %q %v", got, note, err)
		}
	})
	for name, content := range map[string]string{
		"garbage":             "{not json",
		"a truncated file":    `{"version":1,"driver":"gpu.intel.com","node":"node-1","claims":{"u":{"names`,
		"another version":     `{"version":2,"driver":"gpu.intel.com","node":"node-1","claims":{}}`,
		"another node's file": `{"version":1,"driver":"gpu.intel.com","node":"node-2","claims":{"u":{"namespace":"ns","name":"a"}}}`,
	} {
		t.Run(name+" is set aside, and no claim is read", func(t *testing.T) {
			c := newCkpt(t)
			if err := os.WriteFile(c.path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, note, err := c.load()
			if err != nil || len(got) != 0 || !strings.Contains(note, c.path+".unreadable") {
				t.Fatalf("load = %v %q %v", got, note, err)
			}
			if b, err := os.ReadFile(c.path + ".unreadable"); err != nil || string(b) != content {
				t.Errorf("set-aside file holds %q, %v", b, err)
			}
			if _, err := os.Stat(c.path); !os.IsNotExist(err) {
				t.Errorf("the unreadable checkpoint is still in place: %v", err)
			}
		})
	}
	t.Run("a failed save leaves what is there and no temporary file", func(t *testing.T) {
		c := newCkpt(t)
		// A directory in the checkpoint's place makes the rename fail,
		// also for root.
		if err := os.MkdirAll(filepath.Join(c.path, "x"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := c.save(claims{"uid-1": {Namespace: "ns", Name: "a"}}); err == nil {
			t.Fatal("save over a directory succeeded")
		}
		if fi, err := os.Stat(c.path); err != nil || !fi.IsDir() {
			t.Errorf("what was in place changed: %v %v", fi, err)
		}
		entries, _ := os.ReadDir(filepath.Dir(c.path))
		if len(entries) != 1 {
			t.Errorf("the directory holds %d entries, want no temporary file", len(entries))
		}
	})
}

func TestTheTaintValueIsTheHealthReasonATolerationMatches(t *testing.T) {
	wedged := &node.GPU{Reason: "card1 is wedged: the kernel asks for recovery by rebind", Health: &health.Status{Reason: health.ReasonWedged}}
	if got := taintValue(wedged); got != "wedged" {
		t.Errorf("taintValue = %q, want wedged", got)
	}
	plain := &node.GPU{Reason: "/dev/dri/card1 is missing"}
	if got := taintValue(plain); got != "dev-dri-card1-is-missing" {
		t.Errorf("without a health checker taintValue = %q, want the reason as a label value", got)
	}
}
