package hf

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/expertrt/expertrt-go/internal/bf16"
	"gorgonia.org/tensor"
)

const fixtures = "../../tests/fixtures"

func openFixture(t *testing.T, rel string) *Checkpoint {
	t.Helper()
	c, err := OpenCheckpoint(filepath.Join(fixtures, rel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// writeTensors writes named float64 tensors to a new file in dir and returns the path.
func writeTensors(t *testing.T, dir, name string, ts []Tensor) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := WriteFile(p, ts, nil); err != nil {
		t.Fatal(err)
	}
	return p
}

// rawTensors reads every tensor of a checkpoint as float64 F64 Tensors (for building variants).
func rawTensors(t *testing.T, c *Checkpoint) map[string]Tensor {
	t.Helper()
	out := map[string]Tensor{}
	for _, n := range c.Names() {
		v, s, err := c.ReadFloat64(n)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = Tensor{Name: n, Shape: s, Values: v, DType: F64}
	}
	return out
}

func TestLoadMixtralTransposes(t *testing.T) {
	c := openFixture(t, "mixtral_e4k2/weights.safetensors")
	w, err := LoadMixtral(c, "", tensor.Float64)
	if err != nil {
		t.Fatal(err)
	}
	E, H, F, err := w.Dims()
	if err != nil || E != 4 || H != 12 || F != 20 {
		t.Fatalf("dims %d %d %d %v", E, H, F, err)
	}
	gate, _, _ := c.ReadFloat64(GateName(""))
	if r := w.Router.Data().([]float64); r[5] != gate[5] || r[E*H-1] != gate[E*H-1] {
		t.Error("router not kept as is")
	}
	for e := 0; e < E; e++ {
		w1, _, _ := c.ReadFloat64(ExpertName("", e, "w1")) // [F,H]
		w3, _, _ := c.ReadFloat64(ExpertName("", e, "w3")) // [F,H]
		w2, _, _ := c.ReadFloat64(ExpertName("", e, "w2")) // [H,F]
		for h := 0; h < H; h++ {
			for f := 0; f < F; f++ {
				a, _ := w.W1.At(e, h, f)
				b, _ := w.W3.At(e, h, f)
				d, _ := w.W2.At(e, f, h)
				if a.(float64) != w1[f*H+h] || b.(float64) != w3[f*H+h] || d.(float64) != w2[h*F+f] {
					t.Fatalf("expert %d (h=%d,f=%d) not transposed correctly", e, h, f)
				}
			}
		}
	}
	// float32 load is the rounded float64 load.
	w32, err := LoadMixtral(c, "", tensor.Float32)
	if err != nil {
		t.Fatal(err)
	}
	a, b := w.W2.Data().([]float64), w32.W2.Data().([]float32)
	for i := range a {
		if float32(a[i]) != b[i] {
			t.Fatalf("float32 load differs at %d", i)
		}
	}
}

func TestLoadBF16Fixture(t *testing.T) {
	w64, err := LoadMixtral(openFixture(t, "mixtral_e4k2/weights.safetensors"), "", tensor.Float64)
	if err != nil {
		t.Fatal(err)
	}
	c := openFixture(t, "mixtral_e4k2/weights_bf16.safetensors")
	if info, _ := c.Info(GateName("")); info.DType != BF16 {
		t.Fatalf("fixture dtype %s", info.DType)
	}
	wbf, err := LoadMixtral(c, "", tensor.Float64)
	if err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]*tensor.Dense{{w64.Router, wbf.Router}, {w64.W1, wbf.W1}, {w64.W3, wbf.W3}, {w64.W2, wbf.W2}} {
		x, y := pair[0].Data().([]float64), pair[1].Data().([]float64)
		for i := range x {
			// bfloat16 keeps 8 significant bits: unit roundoff 2^-8 (round to nearest).
			if math.Abs(x[i]-y[i]) > math.Abs(x[i])/256 {
				t.Fatalf("bf16 value %v vs float64 %v", y[i], x[i])
			}
			if float64(BF16ToFloat32(Float32ToBF16(float32(y[i])))) != y[i] {
				t.Fatalf("widened value %v is not a bfloat16 value", y[i])
			}
		}
	}
}

// TestLoadBF16WithoutWidening loads the BF16 fixture as bfloat16: every element must be the stored bit
// pattern (compared with the file's raw bytes, transposed by hand), the fp32 load must be its exact
// widening, and saving the bfloat16 weights as BF16 must give the same bytes back.
func TestLoadBF16WithoutWidening(t *testing.T) {
	c := openFixture(t, "mixtral_e4k2/weights_bf16.safetensors")
	wb, err := LoadMixtral(c, "", bf16.Dtype)
	if err != nil {
		t.Fatal(err)
	}
	w32, err := LoadMixtral(c, "", tensor.Float32)
	if err != nil {
		t.Fatal(err)
	}
	E, H, F, err := wb.Dims()
	if err != nil || wb.W2.Dtype() != bf16.Dtype {
		t.Fatalf("dims %v, dtype %v", err, wb.W2.Dtype())
	}
	raw, err := c.file(ExpertName("", E-1, "w2"))
	if err != nil {
		t.Fatal(err)
	}
	bytes, _, err := raw.ReadRaw(ExpertName("", E-1, "w2"))
	if err != nil {
		t.Fatal(err)
	}
	w2 := wb.W2.Data().([]bf16.BFloat16)[(E-1)*F*H:]
	for h := 0; h < H; h++ { // HF w2 is [H,F]; ours [F,H]
		for f := 0; f < F; f++ {
			i := h*F + f
			if got, want := uint16(w2[f*H+h]), uint16(bytes[2*i])|uint16(bytes[2*i+1])<<8; got != want {
				t.Fatalf("w2[%d,%d]: %#04x, file %#04x", f, h, got, want)
			}
		}
	}
	for _, pair := range [][2]*tensor.Dense{{wb.Router, w32.Router}, {wb.W1, w32.W1}, {wb.W3, w32.W3}, {wb.W2, w32.W2}} {
		b, f := pair[0].Data().([]bf16.BFloat16), pair[1].Data().([]float32)
		for i := range b {
			if b[i].Float32() != f[i] {
				t.Fatalf("fp32 load %v is not the widened bf16 %v", f[i], b[i])
			}
		}
	}
	p := filepath.Join(t.TempDir(), "back.safetensors")
	if err := SaveMixtral(p, wb, "", BF16); err != nil {
		t.Fatal(err)
	}
	c2, err := OpenCheckpoint(p)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	for _, n := range MixtralNames("", E) {
		a, _, err1 := c.ReadBF16(n)
		b, _, err2 := c2.ReadBF16(n)
		if err1 != nil || err2 != nil || len(a) != len(b) {
			t.Fatalf("%s: %v %v", n, err1, err2)
		}
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("%s[%d]: saved %#04x, loaded %#04x", n, i, uint16(b[i]), uint16(a[i]))
			}
		}
	}
	// Wider files round once: a float64 checkpoint loaded as bfloat16 equals FromFloat64 of each value.
	w64, err := LoadMixtral(openFixture(t, "mixtral_e4k2/weights.safetensors"), "", tensor.Float64)
	if err != nil {
		t.Fatal(err)
	}
	wr, err := LoadMixtral(openFixture(t, "mixtral_e4k2/weights.safetensors"), "", bf16.Dtype)
	if err != nil {
		t.Fatal(err)
	}
	x, y := w64.W1.Data().([]float64), wr.W1.Data().([]bf16.BFloat16)
	for i := range x {
		if y[i] != bf16.FromFloat64(x[i]) {
			t.Fatalf("W1[%d]: %#04x, want FromFloat64(%v) = %#04x", i, uint16(y[i]), x[i], uint16(bf16.FromFloat64(x[i])))
		}
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	src, err := LoadMixtral(openFixture(t, "mixtral_e8k3/weights.safetensors"), "model.layers.3.", tensor.Float64)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, dt := range []DType{F64, F32, BF16} {
		p := filepath.Join(dir, string(dt)+".safetensors")
		if err := SaveMixtral(p, src, "model.layers.7.", dt); err != nil {
			t.Fatal(err)
		}
		c, err := OpenCheckpoint(p)
		if err != nil {
			t.Fatal(err)
		}
		if info, _ := c.Info(ExpertName("model.layers.7.", 7, "w2")); info.DType != dt || info.Shape[0] != 10 || info.Shape[1] != 12 {
			t.Errorf("%s: w2 info %+v", dt, info)
		}
		back, err := LoadMixtral(c, "model.layers.7.", tensor.Float64)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, pair := range [][2]*tensor.Dense{{src.Router, back.Router}, {src.W1, back.W1}, {src.W3, back.W3}, {src.W2, back.W2}} {
			x, y := pair[0].Data().([]float64), pair[1].Data().([]float64)
			for i := range x {
				var want float64
				switch dt {
				case F64:
					want = x[i]
				case F32:
					want = float64(float32(x[i]))
				case BF16:
					want = bf16.FromFloat64(x[i]).Float64() // rounded once, not through float32
				}
				if y[i] != want {
					t.Fatalf("%s: element %d: %v, want %v", dt, i, y[i], want)
				}
			}
		}
	}
	// float32 weights save as float32 exactly.
	w32, _ := LoadMixtral(openFixture(t, "mixtral_e8k3/weights.safetensors"), "model.layers.3.", tensor.Float32)
	ts, err := MixtralTensors(w32, "grad.", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1+3*8 || ts[0].Name != "grad.block_sparse_moe.gate.weight" || ts[0].DType != "" {
		t.Errorf("tensors: %d, first %q", len(ts), ts[0].Name)
	}
}

func TestLoadFusedLayout(t *testing.T) {
	c := openFixture(t, "mixtral_e4k2/weights.safetensors")
	want, err := LoadMixtral(c, "", tensor.Float64)
	if err != nil {
		t.Fatal(err)
	}
	E, H, F, _ := want.Dims()
	gu := make([]float64, 0, E*2*F*H)
	dp := make([]float64, 0, E*H*F)
	for e := 0; e < E; e++ {
		w1, _, _ := c.ReadFloat64(ExpertName("", e, "w1"))
		w3, _, _ := c.ReadFloat64(ExpertName("", e, "w3"))
		w2, _, _ := c.ReadFloat64(ExpertName("", e, "w2"))
		gu = append(append(gu, w1...), w3...)
		dp = append(dp, w2...)
	}
	gate, _, _ := c.ReadFloat64(GateName(""))
	p := writeTensors(t, t.TempDir(), "fused.safetensors", []Tensor{
		{Name: "model.layers.0.block_sparse_moe.gate.weight", Shape: []int{E, H}, Values: gate, DType: F64},
		{Name: "model.layers.0.block_sparse_moe.experts.gate_up_proj", Shape: []int{E, 2 * F, H}, Values: gu, DType: F64},
		{Name: "model.layers.0.block_sparse_moe.experts.down_proj", Shape: []int{E, H, F}, Values: dp, DType: F64},
	})
	fc, err := OpenCheckpoint(p)
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	got, err := LoadMixtral(fc, "model.layers.0.", tensor.Float64)
	if err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]*tensor.Dense{{want.W1, got.W1}, {want.W3, got.W3}, {want.W2, got.W2}} {
		if !pair[0].Shape().Eq(pair[1].Shape()) {
			t.Fatalf("shape %v vs %v", pair[0].Shape(), pair[1].Shape())
		}
		x, y := pair[0].Data().([]float64), pair[1].Data().([]float64)
		for i := range x {
			if x[i] != y[i] {
				t.Fatalf("fused load differs at %d", i)
			}
		}
	}
}

func TestLoadMixtralErrors(t *testing.T) {
	c := openFixture(t, "mixtral_e8k3/weights.safetensors")
	_, err := LoadMixtral(c, "", tensor.Float64)
	if err == nil || !strings.Contains(err.Error(), `"model.layers.3."`) || !strings.Contains(err.Error(), "-prefix") {
		t.Errorf("wrong prefix: %v", err)
	}
	if _, err := LoadMixtral(c, "model.layers.3.", tensor.Int); err == nil {
		t.Error("int dtype accepted")
	}
	raw := rawTensors(t, openFixture(t, "mixtral_e4k2/weights.safetensors"))
	dir := t.TempDir()
	variant := func(name string, edit func(m map[string]Tensor)) *Checkpoint {
		m := map[string]Tensor{}
		for k, v := range raw {
			m[k] = v
		}
		edit(m)
		var ts []Tensor
		for _, v := range m {
			ts = append(ts, v)
		}
		c, err := OpenCheckpoint(writeTensors(t, dir, name+".safetensors", ts))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	cases := []struct {
		name, want string
		edit       func(m map[string]Tensor)
	}{
		{"missing", `missing tensor "block_sparse_moe.experts.2.w3.weight"`, func(m map[string]Tensor) {
			delete(m, ExpertName("", 2, "w3"))
		}},
		{"nogate", "not a Mixtral MoE checkpoint", func(m map[string]Tensor) { delete(m, GateName("")) }},
		{"extra", "names expert 4", func(m map[string]Tensor) {
			v := m[ExpertName("", 0, "w1")]
			v.Name = ExpertName("", 4, "w1")
			m[v.Name] = v
		}},
		{"w2shape", `"block_sparse_moe.experts.1.w2.weight" has shape [20 12]`, func(m map[string]Tensor) {
			v := m[ExpertName("", 1, "w2")]
			v.Shape = []int{20, 12}
			m[v.Name] = v
		}},
		{"gate3d", "want [E,H]", func(m map[string]Tensor) {
			v := m[GateName("")]
			v.Shape = []int{4, 12, 1}
			m[v.Name] = v
		}},
		{"ffn", "want [20,12]", func(m map[string]Tensor) {
			v := m[ExpertName("", 3, "w1")]
			v.Shape = []int{10, 24}
			m[v.Name] = v
		}},
	}
	for _, tc := range cases {
		_, err := LoadMixtral(variant(tc.name, tc.edit), "", tensor.Float32)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to contain %q", tc.name, err, tc.want)
		}
	}
}
