package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The base and every overlay in deploy/k8s are valid.
func TestKustomizationsAreValid(t *testing.T) {
	dirs := []string{"../k8s/base"}
	overlays, _ := filepath.Glob("../k8s/overlays/*")
	dirs = append(dirs, overlays...)
	for _, dir := range dirs {
		t.Run(dir, func(t *testing.T) {
			objs, err := LoadKustomization(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := Validate(objs); err != nil {
				t.Fatal(err)
			}
			kinds := map[string]bool{}
			for _, o := range objs {
				kinds[o.Obj.GetObjectKind().GroupVersionKind().Kind] = true
			}
			for _, k := range []string{"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceAccount"} {
				if !kinds[k] {
					t.Errorf("%s renders no %s", dir, k)
				}
			}
		})
	}
}

// Each negative fixture (the base with one rule broken) is refused, for the reason in want.txt.
func TestBrokenKustomizationsAreRefused(t *testing.T) {
	dirs, _ := filepath.Glob("testdata/bad/*")
	if len(dirs) < 10 {
		t.Fatalf("expected the negative fixtures under testdata/bad, found %d", len(dirs))
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join(dir, "want.txt"))
			if err != nil {
				t.Fatal(err)
			}
			objs, err := LoadKustomization(dir)
			if err == nil {
				err = Validate(objs)
			}
			if err == nil {
				t.Fatalf("%s was accepted", dir)
			}
			if !strings.Contains(err.Error(), strings.TrimSpace(string(want))) {
				t.Fatalf("%s refused for another reason:\n%v\nwant: %s", dir, err, want)
			}
		})
	}
}

// File mode: the rendered base passes; one unknown field, a duplicated field, or an API version
// that Kubernetes removed fails (the wanted message is on the file's first line).
func TestFiles(t *testing.T) {
	if objs, err := LoadFile("testdata/files/good.yaml"); err != nil {
		t.Fatal(err)
	} else if err := Validate(objs); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"unknown-field", "duplicate-field", "removed-api"} {
		t.Run(name, func(t *testing.T) {
			path := "testdata/files/" + name + ".yaml"
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(data), "\n")
			_, want, ok := strings.Cut(first, "want: ")
			if !ok {
				t.Fatalf("%s: first line has no 'want: '", path)
			}
			objs, err := LoadFile(path)
			if err == nil {
				err = Validate(objs)
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("%s: got %v, want an error containing %q", path, err, want)
			}
		})
	}
}

// A kind outside the allowed groups is refused, not skipped.
func TestUnknownKindRefused(t *testing.T) {
	_, err := Decode("x", []byte("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: x}\n"))
	if err == nil || !strings.Contains(err.Error(), "ClusterRole") {
		t.Fatalf("got %v", err)
	}
}
