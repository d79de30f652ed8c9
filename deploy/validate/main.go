// Command validate checks hl serve's Kubernetes manifests offline and strictly (docs/deploy.md,
// "Validation"): every resource is decoded into the upstream k8s.io/api types with unknown and
// duplicate fields refused (the API server's fieldValidation=Strict), then checked against the
// deployment's rules: the security context (non-root, read-only root, no privilege escalation,
// all capabilities dropped, seccomp RuntimeDefault, no host namespaces or hostPath), a KVM device
// resource, probes on /healthz and /readyz, Prometheus scrape annotations, a grace period that
// covers the drain, and that the Service, HorizontalPodAutoscaler and PodDisruptionBudget point
// at the Deployment.
//
// Usage:
//
//	validate [-k DIR]... [FILE.yaml]...
//
// -k renders a kustomization with the kustomize library (what `kubectl kustomize` runs); a FILE
// is one set of resources (documents separated by ---). Exit 0 when all are valid, 1 with every
// problem found otherwise, 2 on a usage error.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

type dirs []string

func (d *dirs) String() string     { return strings.Join(*d, ",") }
func (d *dirs) Set(v string) error { *d = append(*d, v); return nil }

func main() {
	var kustomizations dirs
	flag.Var(&kustomizations, "k", "a kustomization directory to render and validate (repeatable)")
	flag.Parse()
	if len(kustomizations) == 0 && flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: validate [-k DIR]... [FILE.yaml]...")
		os.Exit(2)
	}
	failed := false
	check := func(what string, objs []Object, err error) {
		if err == nil {
			err = Validate(objs)
		}
		if err != nil {
			failed = true
			fmt.Printf("FAIL %s\n%s\n", what, indent(err.Error()))
			return
		}
		fmt.Printf("ok   %s (%d resources)\n", what, len(objs))
	}
	for _, dir := range kustomizations {
		objs, err := LoadKustomization(dir)
		check(dir, objs, err)
	}
	for _, file := range flag.Args() {
		objs, err := LoadFile(file)
		check(file, objs, err)
	}
	if failed {
		os.Exit(1)
	}
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}
