package dra_test

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/intel-gpu-cdi/intel-gpu-cdi/kubeplugin/dra"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/dratest"
	"github.com/intel-gpu-cdi/intel-gpu-cdi/test/fakenode"
)

// The objects in testdata are what the manifests need (the DeviceClasses,
// RBAC) and the examples of the README. These tests keep them true to the
// driver: they decode strictly as the API server's types, and every
// attribute, capacity, taint and driver name they use is one the driver
// publishes.

// readObjects decodes every document of a testdata file strictly.
func readObjects(t *testing.T, name string) []runtime.Object {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	strict := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme, json.SerializerOptions{Yaml: true, Strict: true})
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []runtime.Object
	for {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := strict.Decode(doc, nil, nil)
		require.NoError(t, err, "%s:\n%s", name, doc)
		out = append(out, obj)
	}
	return out
}

// attrRef finds device.attributes["<domain>"].<name> in a CEL expression.
var attrRef = regexp.MustCompile(`device\.attributes\["([^"]+)"\]\.(\w+)`)

func TestTheManifestObjectsAndExamplesUseWhatTheDriverPublishes(t *testing.T) {
	// What the driver publishes on a node with every kind of GPU.
	r := startRig(t, []func(*fakenode.Node) error{fakenode.Demo}, dratest.WithSharedDevNum(4))
	devs := r.devices("the Demo GPUs", func(d []resourceapi.Device) bool { return len(d) == 3 })
	published := map[string]bool{}
	capacities := map[string]bool{}
	for _, d := range devs {
		for name := range d.Attributes {
			published[qualify(string(name))] = true
		}
		for name := range d.Capacity {
			capacities[string(name)] = true
		}
	}
	// The VF attributes: sriovPF and type "vf" are published on VFs only.
	published[qualify(string(dra.AttrSRIOVPF))] = true

	var classes []*resourceapi.DeviceClass
	var exprs []string
	var tolerations []resourceapi.DeviceToleration
	var capacityRequests []string
	for _, file := range []string{"deviceclasses.yaml", "rbac.yaml", "examples.yaml"} {
		for _, obj := range readObjects(t, file) {
			switch o := obj.(type) {
			case *resourceapi.DeviceClass:
				classes = append(classes, o)
				for _, s := range o.Spec.Selectors {
					exprs = append(exprs, s.CEL.Expression)
				}
			case *resourceapi.ResourceClaimTemplate:
				for _, req := range o.Spec.Spec.Devices.Requests {
					for _, s := range req.Exactly.Selectors {
						exprs = append(exprs, s.CEL.Expression)
					}
					tolerations = append(tolerations, req.Exactly.Tolerations...)
					if req.Exactly.Capacity != nil {
						for name := range req.Exactly.Capacity.Requests {
							capacityRequests = append(capacityRequests, string(name))
						}
					}
					assert.Contains(t, []string{"gpu.intel.com", "i915.gpu.intel.com", "xe.gpu.intel.com"}, req.Exactly.DeviceClassName)
				}
				for _, c := range o.Spec.Spec.Devices.Constraints {
					assert.True(t, published[string(*c.MatchAttribute)], "constraint on %s, which is not published", *c.MatchAttribute)
				}
			case *rbacv1.ClusterRole:
				assert.Len(t, o.Rules, 3)
			case *corev1.Pod, *corev1.Namespace:
			}
		}
	}
	require.NotEmpty(t, exprs)
	for _, e := range exprs {
		for _, m := range attrRef.FindAllStringSubmatch(e, -1) {
			assert.True(t, published[m[1]+"/"+m[2]], "%q uses %s/%s, which the driver does not publish", e, m[1], m[2])
		}
	}
	for _, tol := range tolerations {
		assert.Equal(t, "gpu.intel.com/unhealthy", tol.Key)
	}
	for _, c := range capacityRequests {
		assert.True(t, capacities[c], "a claim asks for capacity %s, which is not published", c)
	}
	var extended []string
	for _, c := range classes {
		if c.Spec.ExtendedResourceName != nil {
			extended = append(extended, *c.Spec.ExtendedResourceName)
		}
	}
	slices.Sort(extended)
	assert.Equal(t, []string{"gpu.intel.com/i915", "gpu.intel.com/xe"}, extended, "the device plugin's resources")
}

// qualify names an attribute with its domain: unqualified names are in
// the driver's.
func qualify(name string) string {
	if strings.Contains(name, "/") {
		return name
	}
	return dra.DefaultDriverName + "/" + name
}
