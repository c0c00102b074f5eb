package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"gorgonia.org/tensor"
)

func TestSummarize(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	s := summarize(ms(5, 1, 3, 2, 4))
	if s.Median != 3*time.Millisecond || s.Min != time.Millisecond || s.P90 != 5*time.Millisecond {
		t.Errorf("odd: %+v", s)
	}
	s = summarize(ms(4, 1, 3, 2, 10, 6, 7, 8, 9, 5))
	if s.Median != 5500*time.Microsecond || s.P90 != 9*time.Millisecond {
		t.Errorf("even: %+v", s)
	}
}

// TestByteCounts pins the minimal counts of the routing note: fp32, T=4096, H=4096, k=2 moves
// 201 MB in dispatch and in combine.
func TestByteCounts(t *testing.T) {
	e := &env{s: shape{Tokens: 4096, Hidden: 4096, Experts: 16, TopK: 2, Dtype: tensor.Float32}}
	const th = 4096 * 4096 * 4
	for _, c := range []struct {
		name          string
		wl            *workload
		read, written int64
	}{
		{"dispatch", dispatchCost(e), th, 2 * th},
		{"combine", combineCost(e), 2*th + 4096*2*4, th},
		{"dispatch-bwd", dispatchBwdCost(e), 2 * th, th},
		{"combine-bwd", combineBwdCost(e), th + 4096*2*4 + 2*th, 2*th + 4096*2*4},
		{"route", routeCost(e), 4096 * 16 * 4, 4096 * 2 * 8},
	} {
		if c.wl.read != c.read || c.wl.written != c.written {
			t.Errorf("%s: read %d written %d, want %d and %d", c.name, c.wl.read, c.wl.written, c.read, c.written)
		}
	}
	if got := dispatchCost(e).read + dispatchCost(e).written; got/1e6 != 201 {
		t.Errorf("dispatch moves %d bytes, want 201 MB", got)
	}
}

func TestLookupOp(t *testing.T) {
	for _, c := range []struct {
		name     string
		backward bool
		want     string
	}{{"dispatch", false, "dispatch"}, {"dispatch", true, "dispatch-bwd"}, {"combine-bwd", true, "combine-bwd"}} {
		s, err := lookupOp(c.name, c.backward)
		if err != nil || s.name != c.want {
			t.Errorf("lookupOp(%q, %v) = %q, %v; want %q", c.name, c.backward, s.name, err, c.want)
		}
	}
	if _, err := lookupOp("nope", false); err == nil {
		t.Error("unknown op accepted")
	}
	if _, err := openDevice("nope"); err == nil {
		t.Error("unknown device accepted")
	}
}

func TestCPUCopier(t *testing.T) {
	dev, err := openDevice("cpu")
	if err != nil {
		t.Fatal(err)
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(3)) // odd split: chunks of unequal size
	for _, byRow := range []bool{false, true} {
		c, err := newCPUCopier(10, 7, 1, byRow)
		if err != nil {
			t.Fatal(err)
		}
		clear(c.dst)
		if err := c.Copy(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(c.src, c.dst) || c.Bytes() != 70 {
			t.Errorf("byRow=%v: copy differs or wrong size %d", byRow, c.Bytes())
		}
	}
	if _, err := dev.NewCopy(0, 4, 1); err == nil {
		t.Error("empty copy accepted")
	}
}

// TestCLI runs every portable op once at a tiny size through the same path as `go run ./bench -json`.
func TestCLI(t *testing.T) {
	args := []string{"-op", strings.Join(portableOps, ","), "-tokens", "16", "-hidden", "8", "-experts", "4",
		"-top-k", "2", "-ffn", "6", "-reps", "2", "-warmup", "1", "-dtype", "float64", "-json", "-rowcopy"}
	c, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(c, &out); err != nil {
		t.Fatal(err)
	}
	var got struct{ Results []result }
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v in %s", err, out.String())
	}
	if len(got.Results) != len(portableOps) || len(portableOps) < 13 {
		t.Fatalf("%d results for %d portable ops", len(got.Results), len(portableOps))
	}
	for _, r := range got.Results {
		if r.MedianMs <= 0 || r.Bytes <= 0 || r.CopyGBps <= 0 || r.RatioToCopy <= 0 || r.Dtype != "float64" {
			t.Errorf("%s: implausible result %+v", r.Op, r)
		}
	}

	// One op prints one flat object; text output names the op.
	c, err = parseFlags([]string{"-op", "combine", "-backward", "-tokens", "8", "-hidden", "4", "-experts", "3",
		"-reps", "1", "-json"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run(c, &out); err != nil {
		t.Fatal(err)
	}
	var one result
	if err := json.Unmarshal(out.Bytes(), &one); err != nil || one.Op != "combine-bwd" {
		t.Fatalf("single op JSON: %v, op %q", err, one.Op)
	}
	c.jsonOut = false
	out.Reset()
	if err := run(c, &out); err != nil || !strings.Contains(out.String(), "combine-bwd") {
		t.Fatalf("text output: %v %q", err, out.String())
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-top-k", "5", "-experts", "4"},
		{"-dtype", "float16"},
		{"-tokens", "0"},
		{"-op", ""},
		{"-reps", "0"},
		{"-scoring", "argmax"},
		{"-scoring", "sigmoid", "-groups", "3", "-topk-groups", "1", "-experts", "16"},
		{"-capacity", "2", "-capacity-factor", "1"},
		{"-drop-policy", "random"},
		{"-group-mask", "none"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// TestSkewedRouting: -skew sends exactly half the tokens to expert 0.
func TestSkewedRouting(t *testing.T) {
	dev, err := openDevice("cpu")
	if err != nil {
		t.Fatal(err)
	}
	s := shape{Tokens: 100, Hidden: 4, Experts: 8, TopK: 3, Skew: true, Dtype: tensor.Float32, Renormalize: true, Seed: 3}
	e, err := newEnv(dev, s)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.routing(); err != nil {
		t.Fatal(err)
	}
	counts := e.plan.Data().([]int32)[:s.Experts]
	if counts[0] != 50 {
		t.Errorf("expert 0 has %d of 100 tokens, want 50 (counts %v)", counts[0], counts)
	}
}

// fakeGemmDevice has fp32 configurations a, b and TF32 configurations t1, t2 (TF32 mode on or off).
type fakeGemmDevice struct {
	tf32 bool
}

func (f *fakeGemmDevice) GemmVariantNames(dt tensor.Dtype) ([]string, error) {
	if f.tf32 {
		return []string{"t1", "t2"}, nil
	}
	return []string{"a", "b"}, nil
}

func (f *fakeGemmDevice) WithGemmVariant(name string) (device, error) {
	switch name {
	case "", "a", "b", "t1", "t2":
		return nil, nil
	}
	return nil, fmt.Errorf("no variant %q", name)
}

// TestGemmVariantList: -gemm-variants keeps the listed configurations of the current class, skips the
// other class's (a list shared by the fp32 and TF32 sweeps), rejects unknown names and lists that leave
// nothing.
func TestGemmVariantList(t *testing.T) {
	f := &fakeGemmDevice{}
	for _, c := range []struct {
		list string
		tf32 bool
		want string
	}{{"all", false, "a,b"}, {"all", true, "t1,t2"}, {"b, t2", false, "b"}, {"b,t2", true, "t2"}, {"a,", false, "a"}} {
		f.tf32 = c.tf32
		got, err := gemmVariantList(f, c.list, tensor.Float32)
		if err != nil || strings.Join(got, ",") != c.want {
			t.Errorf("%q tf32=%t: %v, %v, want %s", c.list, c.tf32, got, err, c.want)
		}
	}
	f.tf32 = false
	for _, bad := range []string{"a,zz", "t1", ""} {
		if got, err := gemmVariantList(f, bad, tensor.Float32); err == nil {
			t.Errorf("%q: accepted, %v", bad, got)
		}
	}
}
