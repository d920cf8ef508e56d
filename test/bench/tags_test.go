package bench

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The floor table measures the binary that ships only if the bench builds
// it with the tags the Makefile and the image build it with.
func TestEveryProductBuildHasTheSameTags(t *testing.T) {
	read := func(rel string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join("..", "..", rel))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	m := regexp.MustCompile(`(?m)^TAGS\s*:?=\s*(.*?)\s*$`).FindStringSubmatch(read("Makefile"))
	if m == nil {
		t.Fatal("the Makefile sets no TAGS")
	}
	if m[1] != ProductTags {
		t.Errorf("the Makefile's TAGS are %q, the bench's %q", m[1], ProductTags)
	}
	if !strings.Contains(read("Makefile"), "-tags '$(TAGS)'") {
		t.Error("the Makefile's build does not pass -tags '$(TAGS)'")
	}
	for _, f := range []string{"deployments/image/Dockerfile", "deployments/image/Containerfile.scratch"} {
		if !strings.Contains(read(f), "go build -trimpath -tags "+ProductTags+" ") {
			t.Errorf("%s does not build with -tags %s", f, ProductTags)
		}
	}
}
