package hf

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/expertrt/expertrt-go/internal/bf16"
	"gorgonia.org/tensor"
)

// Hugging Face Mixtral MoE names (relative to an optional prefix such as "model.layers.0."):
//
//	block_sparse_moe.gate.weight            [E,H]  router; logits = x · gateᵀ
//	block_sparse_moe.experts.{e}.w1.weight  [F,H]  gate projection (SiLU branch)
//	block_sparse_moe.experts.{e}.w3.weight  [F,H]  up projection
//	block_sparse_moe.experts.{e}.w2.weight  [H,F]  down projection
//
// HF stores nn.Linear weights as [out,in] (y = x · Wᵀ); this project's layer is input-major
// (y = x · W), so w1, w3 and w2 are transposed on load and save, and the gate is kept as is.
//
// transformers 5 keeps the experts fused in memory (experts.gate_up_proj [E,2F,H] whose first F rows of
// each expert are the gate projection w1 and the last F the up projection w3, experts.down_proj
// [E,H,F]); LoadMixtral also accepts files saved with those names.

// GateName is the router weight name under prefix.
func GateName(prefix string) string { return prefix + "block_sparse_moe.gate.weight" }

// ExpertName is the name of expert e's projection w ("w1", "w2" or "w3") under prefix.
func ExpertName(prefix string, e int, w string) string {
	return prefix + "block_sparse_moe.experts." + strconv.Itoa(e) + "." + w + ".weight"
}

// Fused (transformers 5 in-memory) expert names under prefix.
func fusedGateUpName(prefix string) string { return prefix + "block_sparse_moe.experts.gate_up_proj" }
func fusedDownName(prefix string) string   { return prefix + "block_sparse_moe.experts.down_proj" }

// MixtralNames lists the per-expert HF names of one MoE layer with E experts: the gate, then for each
// expert w1, w3, w2.
func MixtralNames(prefix string, experts int) []string {
	names := []string{GateName(prefix)}
	for e := 0; e < experts; e++ {
		names = append(names, ExpertName(prefix, e, "w1"), ExpertName(prefix, e, "w3"), ExpertName(prefix, e, "w2"))
	}
	return names
}

// LayerWeights holds one MoE layer's weights in this project's input-major layout (the same fields as
// moe.Weights): Router [E,H], W1 and W3 [E,H,F], W2 [E,F,H]; all of one dtype, Float64, Float32 or
// bfloat16 (ops.BFloat16).
type LayerWeights struct {
	Router, W1, W3, W2 *tensor.Dense
}

// Dims returns E, H and F after checking that the four shapes agree.
func (w LayerWeights) Dims() (experts, hidden, ffn int, err error) {
	if w.Router == nil || w.W1 == nil || w.W3 == nil || w.W2 == nil {
		return 0, 0, 0, fmt.Errorf("hf: layer weights: nil tensor")
	}
	r, a, b, c := w.Router.Shape(), w.W1.Shape(), w.W3.Shape(), w.W2.Shape()
	if len(r) != 2 || len(a) != 3 || len(b) != 3 || len(c) != 3 {
		return 0, 0, 0, fmt.Errorf("hf: layer weights: want Router [E,H], W1/W3 [E,H,F], W2 [E,F,H], got %v %v %v %v", r, a, b, c)
	}
	E, H, F := r[0], r[1], a[2]
	if !a.Eq(tensor.Shape{E, H, F}) || !b.Eq(tensor.Shape{E, H, F}) || !c.Eq(tensor.Shape{E, F, H}) {
		return 0, 0, 0, fmt.Errorf("hf: layer weights: inconsistent shapes Router %v W1 %v W3 %v W2 %v (want [E,H], [E,H,F], [E,H,F], [E,F,H])", r, a, b, c)
	}
	dt := w.Router.Dtype()
	if dt != tensor.Float64 && dt != tensor.Float32 && dt != bf16.Dtype {
		return 0, 0, 0, fmt.Errorf("hf: layer weights: dtype %v, want float64, float32 or bfloat16", dt)
	}
	for _, t := range []*tensor.Dense{w.W1, w.W3, w.W2} {
		if t.Dtype() != dt {
			return 0, 0, 0, fmt.Errorf("hf: layer weights: mixed dtypes %v and %v", dt, t.Dtype())
		}
	}
	return E, H, F, nil
}

var expertIndexRE = regexp.MustCompile(`^block_sparse_moe\.experts\.(\d+)\.(w1|w2|w3)\.weight$`)

// LoadMixtral reads one Mixtral MoE layer under prefix from c into dtype dt: tensor.Float64 or
// tensor.Float32 (F64, F32, F16 and BF16 files load, narrower types widened exactly: BF16 checkpoints
// give exact fp32 master weights), or bfloat16 (ops.BFloat16, the dtype of package internal/bf16: BF16
// files load their bytes as they are, without widening, at half the memory of float32; wider types are
// rounded once). E, H and F come
// from the shapes. Missing tensors, shape mismatches between the gate and the experts, and expert
// indices outside [0,E) are errors; if nothing is found under prefix the error lists the prefixes under
// which MoE layers do exist.
func LoadMixtral(c *Checkpoint, prefix string, dt tensor.Dtype) (LayerWeights, error) {
	switch dt {
	case tensor.Float64:
		return loadMixtral[float64](c, prefix, dt)
	case tensor.Float32:
		return loadMixtral[float32](c, prefix, dt)
	case bf16.Dtype:
		return loadMixtral[bf16.BFloat16](c, prefix, dt)
	}
	return LayerWeights{}, fmt.Errorf("hf: load: dtype %v, want float64, float32 or bfloat16", dt)
}

func loadMixtral[T elem](c *Checkpoint, prefix string, dt tensor.Dtype) (LayerWeights, error) {
	gateName := GateName(prefix)
	if !c.Has(gateName) {
		return LayerWeights{}, missingGateError(c, prefix)
	}
	gate, gs, err := readAs[T](c, gateName)
	if err != nil {
		return LayerWeights{}, err
	}
	if len(gs) != 2 || gs[0] < 1 || gs[1] < 1 {
		return LayerWeights{}, fmt.Errorf("hf: %s: %q has shape %v, want [E,H]", c.path, gateName, gs)
	}
	E, H := gs[0], gs[1]

	if c.Has(fusedGateUpName(prefix)) && !c.Has(ExpertName(prefix, 0, "w1")) {
		return loadFused[T](c, prefix, dt, gate, E, H)
	}

	// Every per-expert name under the prefix must have an index below E.
	for _, n := range c.Names() {
		rest, ok := strings.CutPrefix(n, prefix)
		if !ok {
			continue
		}
		if m := expertIndexRE.FindStringSubmatch(rest); m != nil {
			if e, _ := strconv.Atoi(m[1]); e >= E {
				return LayerWeights{}, fmt.Errorf("hf: %s: %q names expert %d, but %q has only %d rows (experts)", c.path, n, e, gateName, E)
			}
		}
	}

	F := -1
	w1 := make([]T, 0)
	var w3, w2 []T
	for e := 0; e < E; e++ {
		for _, w := range []string{"w1", "w3", "w2"} {
			name := ExpertName(prefix, e, w)
			if !c.Has(name) {
				return LayerWeights{}, fmt.Errorf("hf: %s: missing tensor %q (the gate has %d experts)", c.path, name, E)
			}
			v, s, err := readAs[T](c, name)
			if err != nil {
				return LayerWeights{}, err
			}
			if len(s) != 2 {
				return LayerWeights{}, fmt.Errorf("hf: %s: %q has shape %v, want 2-D", c.path, name, s)
			}
			// w1, w3: [F,H]; w2: [H,F].
			rows, cols := s[0], s[1]
			f, h := rows, cols
			if w == "w2" {
				f, h = cols, rows
			}
			if F < 0 {
				if f < 1 {
					return LayerWeights{}, fmt.Errorf("hf: %s: %q has shape %v, want a positive FFN size", c.path, name, s)
				}
				F = f
				w1 = make([]T, E*H*F)
				w3 = make([]T, E*H*F)
				w2 = make([]T, E*F*H)
			}
			if h != H || f != F {
				want := fmt.Sprintf("[%d,%d] ([F,H])", F, H)
				if w == "w2" {
					want = fmt.Sprintf("[%d,%d] ([H,F])", H, F)
				}
				return LayerWeights{}, fmt.Errorf("hf: %s: %q has shape %v, want %s from the gate [E=%d,H=%d] and expert 0", c.path, name, s, want, E, H)
			}
			var dst []T
			switch w {
			case "w1":
				dst = w1[e*H*F : (e+1)*H*F]
			case "w3":
				dst = w3[e*H*F : (e+1)*H*F]
			case "w2":
				dst = w2[e*F*H : (e+1)*F*H]
			}
			transposeInto(dst, v, rows, cols)
		}
	}
	return LayerWeights{
		Router: tensor.New(tensor.WithShape(E, H), tensor.WithBacking(gate)),
		W1:     tensor.New(tensor.WithShape(E, H, F), tensor.WithBacking(w1)),
		W3:     tensor.New(tensor.WithShape(E, H, F), tensor.WithBacking(w3)),
		W2:     tensor.New(tensor.WithShape(E, F, H), tensor.WithBacking(w2)),
	}, nil
}

// loadFused reads transformers 5 fused expert tensors: gate_up_proj [E,2F,H], down_proj [E,H,F].
func loadFused[T elem](c *Checkpoint, prefix string, dt tensor.Dtype, gate []T, E, H int) (LayerWeights, error) {
	gu, gus, err := readAs[T](c, fusedGateUpName(prefix))
	if err != nil {
		return LayerWeights{}, err
	}
	if len(gus) != 3 || gus[0] != E || gus[2] != H || gus[1] < 2 || gus[1]%2 != 0 {
		return LayerWeights{}, fmt.Errorf("hf: %s: %q has shape %v, want [E=%d,2F,H=%d]", c.path, fusedGateUpName(prefix), gus, E, H)
	}
	F := gus[1] / 2
	if !c.Has(fusedDownName(prefix)) {
		return LayerWeights{}, fmt.Errorf("hf: %s: missing tensor %q", c.path, fusedDownName(prefix))
	}
	dp, dps, err := readAs[T](c, fusedDownName(prefix))
	if err != nil {
		return LayerWeights{}, err
	}
	if len(dps) != 3 || dps[0] != E || dps[1] != H || dps[2] != F {
		return LayerWeights{}, fmt.Errorf("hf: %s: %q has shape %v, want [E=%d,H=%d,F=%d]", c.path, fusedDownName(prefix), dps, E, H, F)
	}
	w1 := make([]T, E*H*F)
	w3 := make([]T, E*H*F)
	w2 := make([]T, E*F*H)
	for e := 0; e < E; e++ {
		base := gu[e*2*F*H : (e+1)*2*F*H]
		transposeInto(w1[e*H*F:(e+1)*H*F], base[:F*H], F, H)
		transposeInto(w3[e*H*F:(e+1)*H*F], base[F*H:], F, H)
		transposeInto(w2[e*F*H:(e+1)*F*H], dp[e*H*F:(e+1)*H*F], H, F)
	}
	return LayerWeights{
		Router: tensor.New(tensor.WithShape(E, H), tensor.WithBacking(gate)),
		W1:     tensor.New(tensor.WithShape(E, H, F), tensor.WithBacking(w1)),
		W3:     tensor.New(tensor.WithShape(E, H, F), tensor.WithBacking(w3)),
		W2:     tensor.New(tensor.WithShape(E, F, H), tensor.WithBacking(w2)),
	}, nil
}

// transposeInto writes the transpose of src ([rows,cols] row-major) into dst ([cols,rows]).
func transposeInto[T any](dst, src []T, rows, cols int) {
	for r := 0; r < rows; r++ {
		row := src[r*cols : (r+1)*cols]
		for c, v := range row {
			dst[c*rows+r] = v
		}
	}
}

func missingGateError(c *Checkpoint, prefix string) error {
	const suffix = "block_sparse_moe.gate.weight"
	var found []string
	for _, n := range c.Names() {
		if p, ok := strings.CutSuffix(n, suffix); ok {
			found = append(found, p)
		}
	}
	msg := fmt.Sprintf("hf: %s: missing tensor %q", c.path, GateName(prefix))
	if len(found) == 0 {
		return fmt.Errorf("%s (no tensor named *%s: not a Mixtral MoE checkpoint?)", msg, suffix)
	}
	sort.Strings(found)
	for i, p := range found {
		found[i] = strconv.Quote(p)
		if p == "" {
			found[i] = `"" (no prefix)`
		}
	}
	if len(found) > 4 {
		found = append(found[:4], fmt.Sprintf("... (%d in all)", len(found)))
	}
	return fmt.Errorf("%s; MoE layers exist under the prefixes %s: set -prefix to one of them", msg, strings.Join(found, ", "))
}

// MixtralTensors converts w to per-expert HF tensors named under prefix (gate as is; w1, w3, w2
// transposed to [F,H], [F,H], [H,F]) stored as dtype dt (F64, F32 or BF16; F32 when empty).
// Use prefix "grad." + p for gradients of the weights named under p.
func MixtralTensors(w LayerWeights, prefix string, dt DType) ([]Tensor, error) {
	E, H, F, err := w.Dims()
	if err != nil {
		return nil, err
	}
	switch w.Router.Dtype() {
	case tensor.Float64:
		return mixtralTensors[float64](w, prefix, dt, E, H, F)
	case bf16.Dtype:
		return mixtralTensors[bf16.BFloat16](w, prefix, dt, E, H, F)
	}
	return mixtralTensors[float32](w, prefix, dt, E, H, F)
}

func mixtralTensors[T elem](w LayerWeights, prefix string, dt DType, E, H, F int) ([]Tensor, error) {
	data := func(d *tensor.Dense) ([]T, error) {
		if !d.IsMaterializable() && d.DataOrder().IsRowMajor() {
			if v, ok := d.Data().([]T); ok {
				return v, nil
			}
		}
		m, ok := d.Materialize().(*tensor.Dense)
		if !ok {
			return nil, fmt.Errorf("hf: cannot read tensor of shape %v", d.Shape())
		}
		v, ok := m.Data().([]T)
		if !ok {
			return nil, fmt.Errorf("hf: tensor data of type %T", m.Data())
		}
		return v, nil
	}
	router, err := data(w.Router)
	if err != nil {
		return nil, err
	}
	w1, err := data(w.W1)
	if err != nil {
		return nil, err
	}
	w3, err := data(w.W3)
	if err != nil {
		return nil, err
	}
	w2, err := data(w.W2)
	if err != nil {
		return nil, err
	}
	out := []Tensor{{Name: GateName(prefix), Shape: []int{E, H}, Values: append([]T(nil), router...), DType: dt}}
	for e := 0; e < E; e++ {
		a := make([]T, F*H)
		b := make([]T, F*H)
		c := make([]T, H*F)
		transposeInto(a, w1[e*H*F:(e+1)*H*F], H, F)
		transposeInto(b, w3[e*H*F:(e+1)*H*F], H, F)
		transposeInto(c, w2[e*F*H:(e+1)*F*H], F, H)
		out = append(out,
			Tensor{Name: ExpertName(prefix, e, "w1"), Shape: []int{F, H}, Values: a, DType: dt},
			Tensor{Name: ExpertName(prefix, e, "w3"), Shape: []int{F, H}, Values: b, DType: dt},
			Tensor{Name: ExpertName(prefix, e, "w2"), Shape: []int{H, F}, Values: c, DType: dt})
	}
	return out, nil
}

// SaveMixtral writes w to path with per-expert HF names under prefix, stored as dt (F32 when empty).
func SaveMixtral(path string, w LayerWeights, prefix string, dt DType) error {
	ts, err := MixtralTensors(w, prefix, dt)
	if err != nil {
		return err
	}
	return WriteFile(path, ts, map[string]string{"format": "pt"})
}
