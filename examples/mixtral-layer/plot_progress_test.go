package main

import (
	"bytes"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestProgressPlainLines(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, 12)
	p.Update(1, "loss 1.5 aux 2.01")
	p.Update(12, "loss 0.5 aux 2.00")
	p.Finish()
	p.Finish()
	p.Update(13, "ignored after Finish")
	want := "step  1/12 loss 1.5 aux 2.01\nstep 12/12 loss 0.5 aux 2.00\n"
	if buf.String() != want {
		t.Fatalf("got %q, want %q", buf.String(), want)
	}
}

func TestProgressNonTerminalFile(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "progress")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := newProgress(f, 3)
	if p.tty {
		t.Fatal("a regular file must not be treated as a terminal")
	}
	p.Update(3, "done")
	p.Finish()
	b, _ := os.ReadFile(f.Name())
	if strings.Contains(string(b), "\r") || !strings.HasSuffix(string(b), "done\n") {
		t.Fatalf("unexpected output %q", b)
	}
}

func TestProgressTTYDraw(t *testing.T) {
	var buf bytes.Buffer
	p := &progress{w: &buf, total: 4, tty: true, width: 60}
	p.Update(2, "loss 1.0")
	p.Update(4, "loss 0.5")
	p.Finish()
	out := buf.String()
	if !strings.HasPrefix(out, "\r[") || !strings.HasSuffix(out, "\n") || !strings.Contains(out, "4/4") {
		t.Fatalf("unexpected tty output %q", out)
	}
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\r") {
		if n := len([]rune(strings.TrimSuffix(l, "\x1b[K"))); n > 59 {
			t.Fatalf("redraw line of %d runes exceeds width: %q", n, l)
		}
	}
}

func TestBar(t *testing.T) {
	for _, c := range []struct {
		done, total int
		want        string
	}{{0, 10, "     "}, {5, 10, "==>  "}, {10, 10, "====="}, {12, 10, "====="}, {1, 0, "     "}} {
		if got := bar(c.done, c.total, 5); got != c.want {
			t.Errorf("bar(%d,%d) = %q, want %q", c.done, c.total, got, c.want)
		}
	}
}

func TestWriteTrainingPlot(t *testing.T) {
	dir := t.TempDir()
	steps := 30
	loss := make([]float64, steps)
	aux := make([]float64, steps)
	load := make([][]float64, steps)
	for s := range loss {
		loss[s] = 2 * math.Exp(-float64(s)/10)
		aux[s] = 2 + 0.1*math.Sin(float64(s))
		load[s] = []float64{0.25 + 0.01*float64(s%3), 0.25, 0.25, 0.25 - 0.01*float64(s%3)}
	}
	loss[3] = math.NaN() // must be skipped, not fail
	z := make([]float64, steps)
	for s := range z {
		z[s] = 0.01 * float64(s)
	}
	height := func(name string, aux, z []float64, load [][]float64) int {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := writeTrainingPlot(path, loss, aux, z, load); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		img, err := png.Decode(f)
		if err != nil {
			t.Fatalf("not a PNG: %v", err)
		}
		if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
			t.Fatalf("image too small: %v", b)
		}
		return img.Bounds().Dy()
	}
	// The load-balancing loss and the z-loss get one panel each: four panels, then three without z.
	four, three := height("train.png", aux, z, load), height("noz.png", aux, nil, load)
	if 3*four != 4*three {
		t.Errorf("plot heights %d (loss, aux, z, load) and %d (loss, aux, load): want a 4:3 ratio (one panel per curve)", four, three)
	}
	// Without aux, and with only load.
	if err := writeTrainingPlot(filepath.Join(dir, "b.png"), loss, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := writeTrainingPlot(filepath.Join(dir, "c.png"), nil, nil, nil, load); err != nil {
		t.Fatal(err)
	}
	if err := writeTrainingPlot(filepath.Join(dir, "d.png"), nil, nil, nil, nil); err == nil {
		t.Fatal("expected an error for empty input")
	}
	if err := writeTrainingPlot(filepath.Join(dir, "e.png"), loss, nil, nil, [][]float64{{1, 2}, {1}}); err == nil {
		t.Fatal("expected an error for ragged load")
	}
}
