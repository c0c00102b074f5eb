package tests

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeCodeIsCompiled: every Go block of the README is a copy of a runnable example (its lines
// appear in the example, in order), named in the prose just before the block (after the previous code
// fence) as "`ExampleX` in path/file.go", so the README's code is compiled and run by go test. Every
// example the README names elsewhere must exist too.
func TestReadmeCodeIsCompiled(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	cite := regexp.MustCompile("`(Example\\w*)` in ([\\w/]+\\.go)")
	for _, c := range cite.FindAllStringSubmatch(text, -1) {
		if src, err := os.ReadFile("../" + c[2]); err != nil || funcBody(string(src), c[1]) == nil {
			t.Errorf("README names %s in %s, which has no such function (%v)", c[1], c[2], err)
		}
	}
	fence := regexp.MustCompile("(?m)^```(\\w*)\n")
	blocks := 0
	prev := 0 // end of the previous code block
	for _, f := range fence.FindAllStringSubmatchIndex(text, -1) {
		if f[0] < prev {
			continue // the closing fence of a block already read
		}
		body := text[f[1]:]
		close := strings.Index(body, "\n```")
		if close < 0 {
			t.Fatalf("unterminated code block at byte %d", f[0])
		}
		code := body[:close+1]
		lang, prose := text[f[2]:f[3]], text[prev:f[0]]
		prev = f[1] + close + len("\n```")
		if lang != "go" {
			continue
		}
		blocks++
		cs := cite.FindAllStringSubmatch(prose, -1)
		if len(cs) == 0 {
			t.Errorf("README Go block at byte %d is not introduced by \"`ExampleX` in path/file.go\"", f[0])
			continue
		}
		name, file := cs[len(cs)-1][1], cs[len(cs)-1][2]
		src, err := os.ReadFile("../" + file)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		fn := funcBody(string(src), name)
		if fn == nil {
			continue // reported above
		}
		i := 0
		for _, line := range strings.Split(code, "\n") {
			line = squash(line)
			if line == "" {
				continue
			}
			for i < len(fn) && fn[i] != line {
				i++
			}
			if i == len(fn) {
				t.Errorf("README block for %s: line %q is not in %s (in this order)", name, line, file)
				break
			}
			i++
		}
	}
	if blocks < 3 {
		t.Errorf("found %d Go blocks in the README, want at least 3 (the layer, the routing ops, GPU training)", blocks)
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
