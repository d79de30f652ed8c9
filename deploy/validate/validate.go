package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// KVMResources are the extended resources that put /dev/kvm into a container: KubeVirt's KVM
// device plugin, the generic device plugin (squat/generic-device-plugin) as configured in
// docs/deploy.md, and hyperlight-on-kubernetes' device plugin.
var KVMResources = []corev1.ResourceName{
	"devices.kubevirt.io/kvm",
	"squat.ai/kvm",
	"hyperlight.dev/hypervisor",
}

// The serve config's file name inside its ConfigMap, and the default drain (src/serve/config.ts).
const serveConfigKey = "serve.json"
const defaultDrainMs = 30_000

var scheme = runtime.NewScheme()

func init() {
	for _, add := range []func(*runtime.Scheme) error{
		appsv1.AddToScheme, corev1.AddToScheme, autoscalingv2.AddToScheme,
		policyv1.AddToScheme, networkingv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
}

// strictDecoder decodes YAML into the registered upstream types the way the API server does with
// fieldValidation=Strict: an unknown or duplicated field is an error (case-sensitive field names).
var strictDecoder = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
	kjson.SerializerOptions{Yaml: true, Strict: true})

// Object is one decoded manifest and where it came from.
type Object struct {
	Where string
	Obj   runtime.Object
}

// Problems collects every finding; Validate reports all of them, not only the first.
type Problems []string

func (p *Problems) add(where, format string, args ...any) {
	*p = append(*p, where+": "+fmt.Sprintf(format, args...))
}

// Err is nil when there is no problem.
func (p Problems) Err() error {
	if len(p) == 0 {
		return nil
	}
	return errors.New(strings.Join(p, "\n"))
}

// RenderKustomization builds a kustomization directory with the kustomize library (what
// `kubectl kustomize` runs) and returns each resulting resource as YAML.
func RenderKustomization(dir string) ([][]byte, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var docs [][]byte
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("kustomize build %s: %s: %w", dir, r.CurId(), err)
		}
		docs = append(docs, y)
	}
	return docs, nil
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// SplitYAML splits a multi-document YAML file; empty documents are dropped.
func SplitYAML(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range docSeparator.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// Decode decodes one document strictly into its upstream type. Kinds outside the registered
// groups (apps/v1, v1, autoscaling/v2, policy/v1, networking.k8s.io/v1) are refused.
func Decode(where string, doc []byte) (Object, error) {
	obj, gvk, err := strictDecoder.Decode(doc, nil, nil)
	if err != nil {
		if gvk != nil && gvk.Kind != "" {
			where = fmt.Sprintf("%s (%s)", where, gvk.Kind)
		}
		return Object{}, fmt.Errorf("%s: %w", where, err)
	}
	return Object{Where: where, Obj: obj}, nil
}

// Validate checks a set of decoded objects that are deployed together (one kustomize build).
func Validate(objs []Object) error {
	var p Problems
	byKind := map[string]map[string]Object{}
	for _, o := range objs {
		meta, err := metaOf(o.Obj)
		if err != nil {
			p.add(o.Where, "%v", err)
			continue
		}
		kind := o.Obj.GetObjectKind().GroupVersionKind().Kind
		name := meta.GetName()
		where := fmt.Sprintf("%s %s/%s", o.Where, kind, name)
		for _, msg := range validation.IsDNS1123Subdomain(name) {
			p.add(where, "metadata.name: %s", msg)
		}
		if byKind[kind] == nil {
			byKind[kind] = map[string]Object{}
		}
		if _, dup := byKind[kind][name]; dup {
			p.add(where, "defined twice")
		}
		byKind[kind][name] = Object{Where: where, Obj: o.Obj}
	}
	configMaps := map[string]*corev1.ConfigMap{}
	for name, o := range byKind["ConfigMap"] {
		configMaps[name] = o.Obj.(*corev1.ConfigMap)
	}
	deployments := map[string]*appsv1.Deployment{}
	for _, name := range sortedKeys(byKind["Deployment"]) {
		o := byKind["Deployment"][name]
		d := o.Obj.(*appsv1.Deployment)
		deployments[name] = d
		checkDeployment(&p, o.Where, d, configMaps)
	}
	if len(deployments) == 0 {
		p.add("manifests", "no Deployment")
	}
	for _, name := range sortedKeys(byKind["Service"]) {
		o := byKind["Service"][name]
		checkService(&p, o.Where, o.Obj.(*corev1.Service), deployments)
	}
	for _, name := range sortedKeys(byKind["HorizontalPodAutoscaler"]) {
		o := byKind["HorizontalPodAutoscaler"][name]
		checkHPA(&p, o.Where, o.Obj.(*autoscalingv2.HorizontalPodAutoscaler), deployments)
	}
	for _, name := range sortedKeys(byKind["PodDisruptionBudget"]) {
		o := byKind["PodDisruptionBudget"][name]
		checkPDB(&p, o.Where, o.Obj.(*policyv1.PodDisruptionBudget), deployments)
	}
	for _, name := range sortedKeys(byKind["ServiceAccount"]) {
		o := byKind["ServiceAccount"][name]
		sa := o.Obj.(*corev1.ServiceAccount)
		if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			p.add(o.Where, "automountServiceAccountToken must be false (hl serve needs no API access)")
		}
	}
	return p.Err()
}

func metaOf(obj runtime.Object) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", obj)
	}
	return m, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func isTrue(b *bool) bool  { return b != nil && *b }
func isFalse(b *bool) bool { return b != nil && !*b }

func checkDeployment(p *Problems, where string, d *appsv1.Deployment, configMaps map[string]*corev1.ConfigMap) {
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	switch {
	case d.Spec.Selector == nil || err != nil || sel.Empty():
		p.add(where, "spec.selector must be a non-empty label selector")
	case !sel.Matches(labels.Set(d.Spec.Template.Labels)):
		p.add(where, "spec.selector does not match the pod template's labels")
	}
	tmpl := &d.Spec.Template
	ann := tmpl.Annotations
	if ann["prometheus.io/scrape"] != "true" {
		p.add(where, `pod template annotation prometheus.io/scrape must be "true"`)
	}
	if ann["prometheus.io/path"] != "/metrics" {
		p.add(where, `pod template annotation prometheus.io/path must be "/metrics"`)
	}
	checkPodSpec(p, where, &tmpl.Spec, ann["prometheus.io/port"], configMaps)
}

// checkPodSpec: the security rules of docs/deploy.md ("Security context") and the serve
// container's contract (KVM device resource, probes, metrics port, grace period >= drain).
func checkPodSpec(p *Problems, where string, spec *corev1.PodSpec, metricsPort string, configMaps map[string]*corev1.ConfigMap) {
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
		p.add(where, "spec.template.spec.securityContext is missing")
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		p.add(where, "hostNetwork, hostPID and hostIPC must be false")
	}
	if !isFalse(spec.AutomountServiceAccountToken) {
		p.add(where, "automountServiceAccountToken must be false (hl serve needs no API access)")
	}
	if psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		p.add(where, "pod securityContext.runAsUser must not be 0")
	}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			p.add(where, "volume %q: hostPath is not allowed (/dev/kvm comes from a device plugin)", v.Name)
		}
	}
	if len(spec.InitContainers) > 0 || len(spec.EphemeralContainers) > 0 {
		for _, c := range spec.InitContainers {
			checkContainer(p, fmt.Sprintf("%s initContainer %q", where, c.Name), &c, psc)
		}
	}
	serve := 0
	for i := range spec.Containers {
		c := &spec.Containers[i]
		cw := fmt.Sprintf("%s container %q", where, c.Name)
		checkContainer(p, cw, c, psc)
		if kvm := kvmResource(c); kvm != "" {
			serve++
			checkServeContainer(p, cw, c, spec, metricsPort, configMaps)
		}
	}
	if serve == 0 {
		names := make([]string, len(KVMResources))
		for i, r := range KVMResources {
			names[i] = string(r)
		}
		p.add(where, "no container has a KVM device resource in resources.limits (one of %s)", strings.Join(names, ", "))
	}
}

func kvmResource(c *corev1.Container) corev1.ResourceName {
	for _, r := range KVMResources {
		if _, ok := c.Resources.Limits[r]; ok {
			return r
		}
	}
	return ""
}

func checkContainer(p *Problems, where string, c *corev1.Container, psc *corev1.PodSecurityContext) {
	sc := c.SecurityContext
	if sc == nil {
		p.add(where, "securityContext is missing")
		sc = &corev1.SecurityContext{}
	}
	if isTrue(sc.Privileged) {
		p.add(where, "privileged must not be true")
	}
	if !isFalse(sc.AllowPrivilegeEscalation) {
		p.add(where, "allowPrivilegeEscalation must be false")
	}
	if !isTrue(sc.ReadOnlyRootFilesystem) {
		p.add(where, "readOnlyRootFilesystem must be true")
	}
	if !isTrue(sc.RunAsNonRoot) && !isTrue(psc.RunAsNonRoot) {
		p.add(where, "runAsNonRoot must be true (container or pod securityContext)")
	}
	if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		p.add(where, "runAsUser must not be 0")
	}
	if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount {
		p.add(where, "procMount must be Default")
	}
	caps := sc.Capabilities
	if caps == nil || !containsCap(caps.Drop, "ALL") {
		p.add(where, "capabilities.drop must contain ALL")
	}
	if caps != nil && len(caps.Add) > 0 {
		p.add(where, "capabilities.add must be empty (has %v)", caps.Add)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = psc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		p.add(where, "seccompProfile.type must be RuntimeDefault (container or pod securityContext)")
	}
	if c.Image == "" || strings.HasSuffix(c.Image, ":latest") {
		p.add(where, "image must be pinned (a tag other than latest, or a digest)")
	}
}

func containsCap(caps []corev1.Capability, want corev1.Capability) bool {
	for _, c := range caps {
		if c == want {
			return true
		}
	}
	return false
}

func checkServeContainer(p *Problems, where string, c *corev1.Container, spec *corev1.PodSpec, metricsPort string, configMaps map[string]*corev1.ConfigMap) {
	kvm := kvmResource(c)
	limit := c.Resources.Limits[kvm]
	if limit.Value() < 1 {
		p.add(where, "resources.limits[%s] must be at least 1", kvm)
	}
	if req, ok := c.Resources.Requests[kvm]; ok && req.Cmp(limit) != 0 {
		p.add(where, "resources.requests[%s] must equal its limit (an extended resource)", kvm)
	}
	if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		p.add(where, "resources.limits.memory must be set (guest memory is the container's)")
	}
	checkProbe(p, where+" livenessProbe", c.LivenessProbe, "/healthz", c)
	checkProbe(p, where+" readinessProbe", c.ReadinessProbe, "/readyz", c)
	if metricsPort == "" || !hasPort(c, intstr.Parse(metricsPort)) {
		p.add(where, "pod template annotation prometheus.io/port (%q) must name one of its container ports", metricsPort)
	}
	// The grace period must cover the preStop sleep and the serve config's drain.
	var sleep int64
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		sleep = c.Lifecycle.PreStop.Sleep.Seconds
	}
	drainMs, cfgWhere, err := serveDrain(c, spec, configMaps)
	if err != nil {
		p.add(where, "%v", err)
		return
	}
	grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if spec.TerminationGracePeriodSeconds != nil {
		grace = *spec.TerminationGracePeriodSeconds
	}
	need := sleep + (drainMs+999)/1000
	if grace < need {
		p.add(where, "terminationGracePeriodSeconds %d is shorter than the preStop sleep (%d s) plus the drain (%s drainTimeoutMs %d): at least %d", grace, sleep, cfgWhere, drainMs, need)
	}
}

func checkProbe(p *Problems, where string, probe *corev1.Probe, path string, c *corev1.Container) {
	if probe == nil || probe.HTTPGet == nil {
		p.add(where, "must be an httpGet probe on %s", path)
		return
	}
	if probe.HTTPGet.Path != path {
		p.add(where, "path must be %s (is %q)", path, probe.HTTPGet.Path)
	}
	if !hasPort(c, probe.HTTPGet.Port) {
		p.add(where, "port %s is not one of the container's ports", probe.HTTPGet.Port.String())
	}
}

func hasPort(c *corev1.Container, port intstr.IntOrString) bool {
	for _, cp := range c.Ports {
		if (port.Type == intstr.String && port.StrVal == cp.Name && cp.Name != "") ||
			(port.Type == intstr.Int && port.IntVal == cp.ContainerPort) {
			return true
		}
	}
	return false
}

// serveDrain finds the serve config the container reads (--config FILE, default
// /etc/hl/serve.json) in the ConfigMap mounted there and returns its drainTimeoutMs.
func serveDrain(c *corev1.Container, spec *corev1.PodSpec, configMaps map[string]*corev1.ConfigMap) (int64, string, error) {
	path := "/etc/hl/serve.json"
	args := append(append([]string{}, c.Command...), c.Args...)
	for i, a := range args {
		if a == "--config" && i+1 < len(args) {
			path = args[i+1]
		} else if strings.HasPrefix(a, "--config=") {
			path = strings.TrimPrefix(a, "--config=")
		}
	}
	for _, m := range c.VolumeMounts {
		dir := strings.TrimSuffix(m.MountPath, "/") + "/"
		if !strings.HasPrefix(path, dir) {
			continue
		}
		key := strings.TrimPrefix(path, dir)
		if m.SubPath != "" {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			cm, ok := configMaps[v.ConfigMap.Name]
			if !ok {
				return 0, "", fmt.Errorf("the serve config %s is in ConfigMap %q, which is not among the manifests", path, v.ConfigMap.Name)
			}
			text, ok := cm.Data[key]
			if !ok {
				return 0, "", fmt.Errorf("ConfigMap %q has no key %q (the serve config %s)", cm.Name, key, path)
			}
			var cfg struct {
				DrainTimeoutMs *int64 `json:"drainTimeoutMs"`
			}
			dec := json.NewDecoder(bytes.NewReader([]byte(text)))
			if err := dec.Decode(&cfg); err != nil {
				return 0, "", fmt.Errorf("ConfigMap %q key %q is not JSON: %v", cm.Name, key, err)
			}
			drain := int64(defaultDrainMs)
			if cfg.DrainTimeoutMs != nil {
				drain = *cfg.DrainTimeoutMs
			}
			return drain, fmt.Sprintf("ConfigMap %s %s", cm.Name, key), nil
		}
	}
	return 0, "", fmt.Errorf("the serve config %s is not mounted from a ConfigMap", path)
}

func podsSelected(sel labels.Selector, deployments map[string]*appsv1.Deployment) bool {
	for _, d := range deployments {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			return true
		}
	}
	return false
}

func checkService(p *Problems, where string, s *corev1.Service, deployments map[string]*appsv1.Deployment) {
	if len(s.Spec.Selector) == 0 {
		p.add(where, "spec.selector is empty")
		return
	}
	var target *appsv1.Deployment
	for _, name := range sortedKeys(deployments) {
		if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(deployments[name].Spec.Template.Labels)) {
			target = deployments[name]
			break
		}
	}
	if target == nil {
		p.add(where, "spec.selector matches no Deployment's pods")
		return
	}
	for _, port := range s.Spec.Ports {
		tp := port.TargetPort
		if tp.Type == intstr.Int && tp.IntVal == 0 {
			tp = intstr.FromInt32(port.Port)
		}
		found := false
		for i := range target.Spec.Template.Spec.Containers {
			if hasPort(&target.Spec.Template.Spec.Containers[i], tp) {
				found = true
			}
		}
		if !found {
			p.add(where, "port %q: targetPort %s is not a port of Deployment %s", port.Name, tp.String(), target.Name)
		}
	}
}

func checkHPA(p *Problems, where string, h *autoscalingv2.HorizontalPodAutoscaler, deployments map[string]*appsv1.Deployment) {
	ref := h.Spec.ScaleTargetRef
	if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" {
		p.add(where, "scaleTargetRef must be an apps/v1 Deployment")
	} else if _, ok := deployments[ref.Name]; !ok {
		p.add(where, "scaleTargetRef names Deployment %q, which is not among the manifests", ref.Name)
	}
	if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 {
		p.add(where, "minReplicas must be at least 2 (one replica can be drained at a time)")
	}
	if h.Spec.MinReplicas != nil && h.Spec.MaxReplicas < *h.Spec.MinReplicas {
		p.add(where, "maxReplicas is below minReplicas")
	}
	if len(h.Spec.Metrics) == 0 {
		p.add(where, "spec.metrics is empty")
	}
}

func checkPDB(p *Problems, where string, b *policyv1.PodDisruptionBudget, deployments map[string]*appsv1.Deployment) {
	if (b.Spec.MinAvailable == nil) == (b.Spec.MaxUnavailable == nil) {
		p.add(where, "exactly one of minAvailable and maxUnavailable must be set")
	}
	sel, err := metav1.LabelSelectorAsSelector(b.Spec.Selector)
	if b.Spec.Selector == nil || err != nil || sel.Empty() || !podsSelected(sel, deployments) {
		p.add(where, "spec.selector must select a Deployment's pods")
	}
}

// LoadKustomization renders and decodes a kustomization directory.
func LoadKustomization(dir string) ([]Object, error) {
	docs, err := RenderKustomization(dir)
	if err != nil {
		return nil, err
	}
	return decodeAll(dir, docs)
}

// LoadFile decodes every document of a YAML file.
func LoadFile(path string) ([]Object, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return decodeAll(path, SplitYAML(data))
}

func decodeAll(where string, docs [][]byte) ([]Object, error) {
	var objs []Object
	var errs []string
	for i, d := range docs {
		o, err := Decode(where+" document "+strconv.Itoa(i+1), d)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		objs = append(objs, o)
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "\n"))
	}
	return objs, nil
}
