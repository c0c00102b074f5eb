package tests

import (
	"math"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/tensor"
)

// bf16Mutant wraps the CPU backend with one realistic bfloat16 bug (truncation instead of rounding,
// rounding twice, accumulating in bfloat16, a lost incr); the conformance suite must fail on each.
type bf16Mutant struct {
	ops.Backend
	kind string
}

func bf16Data(d *tensor.Dense) []ops.BF16 { return d.Data().([]ops.BF16) }

// truncate is the classic wrong float32 -> bfloat16 conversion: drop the low half.
func truncate(f float32) ops.BF16 { return ops.BF16(math.Float32bits(f) >> 16) }

func (m *bf16Mutant) Cast(src, dst *tensor.Dense) error {
	if m.kind == "bf16-cast-truncates" && src.Dtype() == tensor.Float32 && dst.Dtype() == ops.BFloat16 {
		s, d := src.Data().([]float32), bf16Data(dst)
		for i := range d {
			d[i] = truncate(s[i])
		}
		return nil
	}
	return m.Backend.Cast(src, dst)
}

func (m *bf16Mutant) Dispatch(x, w, plan *tensor.Dense, out *tensor.Dense) error {
	if err := m.Backend.Dispatch(x, w, plan, out); err != nil || m.kind != "bf16-dispatch-double-rounds" {
		return err
	}
	if w == nil || x.Dtype() != ops.BFloat16 {
		return nil
	}
	// Recompute each weighted row through a float32 product: a second rounding.
	T, H := x.Shape()[0], x.Shape()[1]
	K := w.Shape()[1]
	pv, err := ops.NewPlanView(plan.Data().([]int32), T, K, (plan.Shape()[0]-1-2*T*K)/2)
	if err != nil {
		return err
	}
	xs, ws, os := bf16Data(x), w.Data().([]float32), bf16Data(out)
	for s := 0; s < T*K; s++ {
		r := int(pv.RowOf[s])
		for h := 0; h < H; h++ {
			os[r*H+h] = ops.BF16FromFloat32(ws[s] * xs[(s/K)*H+h].Float32())
		}
	}
	return nil
}

func (m *bf16Mutant) Combine(ye, w, plan *tensor.Dense, out *tensor.Dense) error {
	if m.kind != "bf16-combine-rounds-terms" || ye.Dtype() != ops.BFloat16 || w == nil {
		return m.Backend.Combine(ye, w, plan, out)
	}
	// Each weighted term rounded to bfloat16 before the sum.
	T, H := out.Shape()[0], out.Shape()[1]
	K := w.Shape()[1]
	pv, err := ops.NewPlanView(plan.Data().([]int32), T, K, (plan.Shape()[0]-1-2*T*K)/2)
	if err != nil {
		return err
	}
	ys, ws := bf16Data(ye), w.Data().([]float32)
	sums := make([]float64, T*H)
	for t := 0; t < T; t++ {
		for j := 0; j < K; j++ {
			r := int(pv.RowOf[t*K+j])
			for h := 0; h < H; h++ {
				sums[t*H+h] += ops.BF16FromFloat64(float64(ws[t*K+j]) * ys[r*H+h].Float64()).Float64()
			}
		}
	}
	switch o := out.Data().(type) {
	case []float32:
		for i := range o {
			o[i] = float32(sums[i])
		}
	case []ops.BF16:
		for i := range o {
			o[i] = ops.BF16FromFloat64(sums[i])
		}
	}
	return nil
}

func (m *bf16Mutant) CombineGradWeights(dy, ye, plan *tensor.Dense, dw *tensor.Dense) error {
	if m.kind != "bf16-cgw-accumulates-bf16" || ye.Dtype() != ops.BFloat16 {
		return m.Backend.CombineGradWeights(dy, ye, plan, dw)
	}
	T, H := dy.Shape()[0], dy.Shape()[1]
	K := dw.Shape()[1]
	pv, err := ops.NewPlanView(plan.Data().([]int32), T, K, (plan.Shape()[0]-1-2*T*K)/2)
	if err != nil {
		return err
	}
	g := toF64(dy)
	ys, out := bf16Data(ye), dw.Data().([]float32)
	for s := 0; s < T*K; s++ {
		r := int(pv.RowOf[s])
		acc := ops.BF16(0)
		for h := 0; h < H; h++ {
			acc = ops.BF16FromFloat64(acc.Float64() + g[(s/K)*H+h]*ys[r*H+h].Float64())
		}
		out[s] = acc.Float32()
	}
	return nil
}

func (m *bf16Mutant) GroupedMatMulGradW(x, dy, plan *tensor.Dense, dW *tensor.Dense) error {
	if err := m.Backend.GroupedMatMulGradW(x, dy, plan, dW); err != nil || m.kind != "bf16-gradw-rounds-to-bf16" {
		return err
	}
	if x.Dtype() == ops.BFloat16 && dW.Dtype() == tensor.Float32 {
		for i, v := range dW.Data().([]float32) {
			dW.Data().([]float32)[i] = ops.BF16FromFloat32(v).Float32()
		}
	}
	return nil
}

func (m *bf16Mutant) SwiGLU(gate, up *tensor.Dense, out *tensor.Dense) error {
	if m.kind != "bf16-swiglu-truncates" || gate.Dtype() != ops.BFloat16 {
		return m.Backend.SwiGLU(gate, up, out)
	}
	g, u, o := bf16Data(gate), bf16Data(up), bf16Data(out)
	for i := range o {
		a := g[i].Float64()
		o[i] = truncate(float32(a / (1 + math.Exp(-a)) * u[i].Float64()))
	}
	return nil
}

// TensorEngine gives the suite's Add case an engine that ignores WithIncr for bfloat16 (the
// "bf16-add-ignores-incr" bug); other kinds get ops.HostEngine.
func (m *bf16Mutant) TensorEngine() (tensor.Engine, error) {
	if m.kind == "bf16-add-ignores-incr" {
		return incrLosingEngine{ops.HostEngine()}, nil
	}
	return ops.HostEngine(), nil
}

type incrLosingEngine struct{ tensor.Engine }

func (e incrLosingEngine) Add(a, b tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	fo := tensor.ParseFuncOpts(opts...)
	if r, incr := fo.IncrReuse(); incr {
		return e.Engine.(tensor.Adder).Add(a, b, tensor.WithReuse(r))
	}
	return e.Engine.(tensor.Adder).Add(a, b, opts...)
}
