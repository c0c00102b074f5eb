package tests

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeCodeIsCompiled: every Go block of the README introduced by "`ExampleX` in path/file.go" is a
// copy of that runnable example (its lines appear in the example, in order), so the README's code is
// compiled and run by go test.
func TestReadmeCodeIsCompiled(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)`(Example\\w*)` in ([\\w/]+\\.go)[^`]*?(?:`[^`]*`[^`]*?)*?```go\n(.*?)```")
	blocks := re.FindAllStringSubmatch(string(readme), -1)
	if len(blocks) < 2 {
		t.Fatalf("found %d README blocks tied to examples, want at least 2 (the layer and the routing ops)", len(blocks))
	}
	for _, b := range blocks {
		name, file, code := b[1], b[2], b[3]
		src, err := os.ReadFile("../" + file)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		body := funcBody(string(src), name)
		if body == nil {
			t.Errorf("README cites %s in %s, which has no such function", name, file)
			continue
		}
		i := 0
		for _, line := range strings.Split(code, "\n") {
			line = squash(line)
			if line == "" {
				continue
			}
			for i < len(body) && body[i] != line {
				i++
			}
			if i == len(body) {
				t.Errorf("README block for %s: line %q is not in %s (in this order)", name, line, file)
				break
			}
			i++
		}
	}
}

// funcBody returns the squashed lines of func name in src (nil when absent).
func funcBody(src, name string) []string {
	start := strings.Index(src, "\nfunc "+name+"() {\n")
	if start < 0 {
		return nil
	}
	rest := src[start+len("\nfunc "+name+"() {\n"):]
	end := strings.Index(rest, "\n}\n")
	if end < 0 {
		return nil
	}
	var lines []string
	for _, l := range strings.Split(rest[:end], "\n") {
		lines = append(lines, squash(l))
	}
	return lines
}

// squash trims a line and collapses runs of blanks (gofmt aligns trailing comments).
func squash(s string) string { return strings.Join(strings.Fields(s), " ") }
