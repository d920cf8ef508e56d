package rig

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// fieldManager owns what the suite applies.
const fieldManager = "igc-e2e"

// API is the full-cluster rig's client of its API server, as cluster
// admin. It replaces kubectl: one process fewer to build, and calls whose
// timing is the API server's, not a CLI's start-up.
type API struct {
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	Config  *rest.Config
	mapper  *restmapper.DeferredDiscoveryRESTMapper
}

func newAPI(server, caFile, certFile, keyFile string) (*API, error) {
	cfg := &rest.Config{
		Host: server,
		TLSClientConfig: rest.TLSClientConfig{
			CAFile: caFile, CertFile: certFile, KeyFile: keyFile,
		},
		// The suite's own calls must not queue behind client-go's default
		// 5 requests per second: pod timings would measure the limiter.
		QPS: 100, Burst: 200,
		UserAgent: "igc-e2e",
		Timeout:   30 * time.Second,
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(client.Discovery()))
	return &API{Client: client, Dynamic: dyn, Config: cfg, mapper: mapper}, nil
}

// API returns the admin client of the control plane.
func (r *Rig) API() *API {
	if r.cp == nil {
		return nil
	}
	return r.cp.api
}

// ParseObjects reads YAML (several documents) or JSON, and flattens a
// List into its items.
func ParseObjects(raw []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	var out []*unstructured.Unstructured
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("decoding objects: %w", err)
		}
		if obj == nil {
			continue
		}
		u := &unstructured.Unstructured{Object: obj}
		if u.IsList() {
			list, err := u.ToList()
			if err != nil {
				return nil, err
			}
			for i := range list.Items {
				out = append(out, &list.Items[i])
			}
			continue
		}
		out = append(out, u)
	}
}

// Kustomize renders the kustomization in dir as the kustomize library
// (kubectl kustomize's engine) does.
func Kustomize(dir string) ([]*unstructured.Unstructured, error) {
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	raw, err := res.AsYaml()
	if err != nil {
		return nil, err
	}
	return ParseObjects(raw)
}

// Apply server-side applies each object, in order; a namespaced object
// without a namespace goes to "default".
func (a *API) Apply(ctx context.Context, objs ...*unstructured.Unstructured) error {
	for _, obj := range objs {
		ri, err := a.resource(obj)
		if err != nil {
			return err
		}
		raw, err := obj.MarshalJSON()
		if err != nil {
			return err
		}
		_, err = ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, raw, metav1.PatchOptions{FieldManager: fieldManager, Force: ptr.To(true)})
		if err != nil {
			return fmt.Errorf("applying %s %s: %w", obj.GetKind(), obj.GetName(), err)
		}
	}
	return nil
}

// Delete removes each object and waits until it is gone; one that is
// already gone is no error.
func (a *API) Delete(ctx context.Context, timeout time.Duration, objs ...*unstructured.Unstructured) error {
	var errs []error
	for _, obj := range objs {
		ri, err := a.resource(obj)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = ri.Delete(ctx, obj.GetName(), metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting %s %s: %w", obj.GetKind(), obj.GetName(), err))
			continue
		}
		errs = append(errs, WaitFor(timeout, 200*time.Millisecond, func() (bool, error) {
			_, err := ri.Get(ctx, obj.GetName(), metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return true, nil
			}
			return false, fmt.Errorf("%s %s still exists (%v)", obj.GetKind(), obj.GetName(), err)
		}))
	}
	return errors.Join(errs...)
}

func (a *API) resource(obj *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := obj.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		a.mapper.Reset()
		m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", gvk, obj.GetName(), err)
	}
	if m.Scope.Name() != meta.RESTScopeNameNamespace {
		return a.Dynamic.Resource(m.Resource), nil
	}
	ns := obj.GetNamespace()
	if ns == "" {
		ns = "default"
		obj.SetNamespace(ns)
	}
	return a.Dynamic.Resource(m.Resource).Namespace(ns), nil
}

// CreatePod creates a pod from its manifest (JSON or YAML) and returns the
// time just before the request was sent.
func (a *API) CreatePod(ctx context.Context, manifest []byte) (*corev1.Pod, time.Time, error) {
	var pod corev1.Pod
	if err := utilyaml.Unmarshal(manifest, &pod); err != nil {
		return nil, time.Time{}, fmt.Errorf("decoding pod: %w", err)
	}
	ns := pod.Namespace
	if ns == "" {
		ns = "default"
	}
	start := time.Now()
	created, err := a.Client.CoreV1().Pods(ns).Create(ctx, &pod, metav1.CreateOptions{})
	if err != nil {
		return nil, start, fmt.Errorf("creating pod %s: %w", pod.Name, err)
	}
	return created, start, nil
}

// DeletePods deletes the pods the selector matches in ns (grace period 0:
// the suite's containers exit on SIGTERM at once anyway) and waits until
// the API server no longer has them, which the kubelet allows only once
// their containers are gone.
func (a *API) DeletePods(ctx context.Context, ns, selector string, timeout time.Duration) error {
	pods := a.Client.CoreV1().Pods(ns)
	err := pods.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return fmt.Errorf("deleting pods %q in %s: %w", selector, ns, err)
	}
	return WaitFor(timeout, 200*time.Millisecond, func() (bool, error) {
		list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err
		}
		if len(list.Items) == 0 {
			return true, nil
		}
		var names []string
		for _, p := range list.Items {
			names = append(names, p.Name)
		}
		return false, fmt.Errorf("pods still there: %v", names)
	})
}

// DeletePod deletes one pod and waits until it is gone.
func (a *API) DeletePod(ctx context.Context, ns, name string, timeout time.Duration) error {
	pods := a.Client.CoreV1().Pods(ns)
	if err := pods.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting pod %s/%s: %w", ns, name, err)
	}
	return WaitFor(timeout, 200*time.Millisecond, func() (bool, error) {
		_, err := pods.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, fmt.Errorf("pod %s/%s still there (%v)", ns, name, err)
	})
}

// WaitPod waits until the pod satisfies ok, which says why not otherwise.
func (a *API) WaitPod(ctx context.Context, ns, name string, timeout time.Duration, ok func(*corev1.Pod) error) (*corev1.Pod, error) {
	var pod *corev1.Pod
	err := WaitFor(timeout, 250*time.Millisecond, func() (bool, error) {
		p, err := a.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		pod = p
		err = ok(p)
		return err == nil, err
	})
	return pod, err
}

// PodCondition returns the pod's condition of type typ, or nil.
func PodCondition(p *corev1.Pod, typ corev1.PodConditionType) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == typ {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// Describe tells what the API server knows of a pod, for a failure
// message: its phase, conditions, container states and events.
func (a *API) Describe(ctx context.Context, ns, name string) string {
	var b strings.Builder
	p, err := a.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		fmt.Fprintf(&b, "pod %s/%s: %v\n", ns, name, err)
	} else {
		fmt.Fprintf(&b, "pod %s/%s on %q: phase %s %s %s\n", ns, name, p.Spec.NodeName, p.Status.Phase, p.Status.Reason, p.Status.Message)
		for _, c := range p.Status.Conditions {
			fmt.Fprintf(&b, "  condition %s=%s %s %s\n", c.Type, c.Status, c.Reason, c.Message)
		}
		for _, c := range p.Status.ContainerStatuses {
			fmt.Fprintf(&b, "  container %s: ready=%v restarts=%d state=%+v\n", c.Name, c.Ready, c.RestartCount, c.State)
		}
	}
	ev, err := a.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err == nil {
		sort.Slice(ev.Items, func(i, j int) bool { return ev.Items[i].LastTimestamp.Before(&ev.Items[j].LastTimestamp) })
		for _, e := range ev.Items {
			fmt.Fprintf(&b, "  event %s %s: %s\n", e.Type, e.Reason, e.Message)
		}
	}
	return b.String()
}

// Logs returns the last lines of each pod's first container that the
// selector matches in ns.
func (a *API) Logs(ctx context.Context, ns, selector string, tail int64) string {
	list, err := a.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range list.Items {
		raw, err := a.Client.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{TailLines: &tail}).DoRaw(ctx)
		fmt.Fprintf(&b, "---- %s (%v)\n%s\n", p.Name, err, raw)
	}
	return b.String()
}

// ServiceAccountKubeconfig writes a kubeconfig that acts as the service
// account ns/name with a token bound to this node, as the kubelet gives a
// pod of that account on this node: the API server sees the same user,
// groups and node name (authentication.kubernetes.io/node-name), so the
// account's RBAC and any policy on the node name apply as they would to
// the pod.
func (r *Rig) ServiceAccountKubeconfig(ctx context.Context, ns, name string) (string, error) {
	a := r.API()
	if a == nil {
		return "", errors.New("no control plane")
	}
	node, err := a.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	tr, err := a.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr.To[int64](3600),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Node", APIVersion: "v1", Name: node.Name, UID: node.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("requesting a token of %s/%s: %w", ns, name, err)
	}
	path := filepath.Join(r.Dir, "sa-"+ns+"-"+name+".kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: e2e
  context: {cluster: e2e, user: %s}
current-context: e2e
`, r.cp.server, r.cp.pki.CACert, name, tr.Status.Token, name)
	return path, os.WriteFile(path, []byte(cfg), 0o600)
}
