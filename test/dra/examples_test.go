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

// The shipped DRA manifests (deployments/kustomize/dra: the DeviceClasses,
// RBAC, the admission policy) and examples (deployments/examples/dra), read
// where they ship so that one copy exists. These tests keep them true to
// the driver: they decode strictly as the API server's types, and every
// attribute, capacity, taint and driver name they use is one the driver
// publishes. (test/deploy holds the same files to the deployment rules.)

// shippedDRAFiles are the YAML files of the DRA manifests and examples.
func shippedDRAFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, dir := range []string{"kustomize/dra", "examples/dra"} {
		m, err := filepath.Glob(filepath.Join("..", "..", "deployments", filepath.FromSlash(dir), "*.yaml"))
		require.NoError(t, err)
		require.NotEmpty(t, m, "no YAML in deployments/%s", dir)
		files = append(files, m...)
	}
	return files
}

// readObjects decodes every document of a file strictly; kustomization.yaml
// is kustomize's, not the API server's, and is left to test/deploy.
func readObjects(t *testing.T, path string) []runtime.Object {
	t.Helper()
	name := filepath.Base(path)
	if name == "kustomization.yaml" {
		return nil
	}
	data, err := os.ReadFile(path)
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
	var capacityRequests, classNames []string
	claim := func(c resourceapi.DeviceClaim) {
		for _, req := range c.Requests {
			require.NotNil(t, req.Exactly, "request %s", req.Name)
			for _, s := range req.Exactly.Selectors {
				exprs = append(exprs, s.CEL.Expression)
			}
			tolerations = append(tolerations, req.Exactly.Tolerations...)
			if req.Exactly.Capacity != nil {
				for name := range req.Exactly.Capacity.Requests {
					capacityRequests = append(capacityRequests, string(name))
				}
			}
			classNames = append(classNames, req.Exactly.DeviceClassName)
		}
		for _, c := range c.Constraints {
			assert.True(t, published[string(*c.MatchAttribute)], "constraint on %s, which is not published", *c.MatchAttribute)
		}
	}
	kinds := map[string]int{}
	for _, file := range shippedDRAFiles(t) {
		for _, obj := range readObjects(t, file) {
			kinds[obj.GetObjectKind().GroupVersionKind().Kind]++
			switch o := obj.(type) {
			case *resourceapi.DeviceClass:
				classes = append(classes, o)
				for _, s := range o.Spec.Selectors {
					exprs = append(exprs, s.CEL.Expression)
				}
			case *resourceapi.ResourceClaimTemplate:
				claim(o.Spec.Spec.Devices)
			case *resourceapi.ResourceClaim:
				claim(o.Spec.Devices)
			case *rbacv1.ClusterRole:
				assert.Len(t, o.Rules, 3)
			}
		}
	}
	for _, kind := range []string{"DeviceClass", "ResourceClaimTemplate", "ResourceClaim", "Pod", "Namespace", "ClusterRole", "DaemonSet", "ValidatingAdmissionPolicy"} {
		assert.NotZero(t, kinds[kind], "no %s among the shipped DRA files", kind)
	}
	for _, name := range classNames {
		assert.True(t, slices.ContainsFunc(classes, func(c *resourceapi.DeviceClass) bool { return c.Name == name }),
			"a claim asks for DeviceClass %s, which is not shipped", name)
	}
	require.NotEmpty(t, exprs)
	refs := 0
	for _, e := range exprs {
		for _, m := range attrRef.FindAllStringSubmatch(e, -1) {
			refs++
			assert.True(t, published[m[1]+"/"+m[2]], "%q uses %s/%s, which the driver does not publish", e, m[1], m[2])
		}
	}
	// The loops below check what the shipped files hold: none would be
	// no check at all.
	assert.NotZero(t, refs, "no CEL expression reads a device attribute")
	require.NotEmpty(t, tolerations, "no claim tolerates the unhealthy taint")
	for _, tol := range tolerations {
		assert.Equal(t, "gpu.intel.com/unhealthy", tol.Key)
	}
	require.NotEmpty(t, capacityRequests, "no claim asks for capacity")
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
