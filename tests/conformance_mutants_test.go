package tests

import (
	"fmt"
	"github.com/expertrt/expertrt-go/internal/floats"
	"math"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/expertrt/expertrt-go/ops"
	"github.com/expertrt/expertrt-go/tests/conformance"
	"gorgonia.org/tensor"
)

// The conformance suite tests itself: each mutant wraps the CPU backend and injects one realistic bug
// (wrong tie rule, unstable plan, unwritten or accumulated output, out-of-bounds write, clobbered input,
// nondeterminism, a wrong gradient, a missing error, ...). The suite is run against each mutant in a
// subprocess and must fail.

const mutantEnv = "EXPERTRT_CONFORMANCE_MUTANT"

var mutants = []string{
	"tie-high", "plan-unstable", "dispatch-unwritten", "dispatch-ignores-weights", "combine-accumulates",
	"gradw-skips-empty-experts", "route-grad-ignores-renorm", "lbl-divides-by-tk", "gmm-writes-past-end",
	"cgw-clobbers-dy", "combine-nondeterministic", "plan-clamps-bad-indices", "route-accepts-nan",
	"zloss-grad-sign", "route-weights-accept-bad-indices", "combine-drops-kth-term", "plan-unsorted-within-expert",
	"route-accepts-inf", "lbl-ignores-mask", "plan-wrong-sentinel",
	// training kernels
	"matmul-k0-unwritten", "matmul-accumulates", "matmul-ignores-transb", "mse-grad-missing-2", "mse-sums",
	"mse-grad-ignores-upstream", "ce-divides-by-rows", "ce-accepts-bad-labels", "ce-ignored-rows-unwritten",
	"ce-grad-no-onehot", "swiglu-grad-drops-sigmoid-term", "swiglu-up-grad-unwritten", "gradnorm-skips-last-grad",
	"gradnorm-accepts-nan", "gradnorm-no-eps", "adam-no-bias-correction", "adam-decoupled-as-l2",
	"adam-steps-on-nan-scale", "adam-ignores-clip", "sgd-nesterov-ignored", "sgd-momentum-dampened",
	"sgd-steps-on-nan-scale",
	// bfloat16 kernels (conformance_mutants_bf16_test.go)
	"bf16-cast-truncates", "bf16-dispatch-double-rounds", "bf16-combine-rounds-terms", "bf16-cgw-accumulates-bf16",
	"bf16-gradw-rounds-to-bf16", "bf16-swiglu-truncates", "bf16-add-ignores-incr",
	// the fused route of graphs' route nodes
	"fused-route-weights-off", "fused-route-ignores-bias", "viewas-copies",
}

func TestConformanceCatchesMutants(t *testing.T) {
	if os.Getenv(mutantEnv) != "" {
		t.Skip("inside a mutant run")
	}
	if testing.Short() {
		t.Skip("short")
	}
	run := map[string]string{}
	for _, m := range mutants {
		run[m] = "^TestMutantConformance$"
	}
	for _, m := range policyMutants { // the routing-policy bugs: the suite's Policies cases must catch them
		run[m] = "^TestMutantConformance$/^Policies$"
	}
	for _, m := range append(append([]string{}, mutants...), policyMutants...) {
		t.Run(m, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run="+run[m], "-test.count=1")
			cmd.Env = append(os.Environ(), mutantEnv+"="+m)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Errorf("the conformance suite passed a backend with the %q bug", m)
				return
			}
			if !strings.Contains(string(out), "--- FAIL") {
				t.Errorf("mutant %q: subprocess failed without a test failure:\n%s", m, out)
			}
		})
	}
}

// TestMutantConformance is the subprocess half of TestConformanceCatchesMutants.
func TestMutantConformance(t *testing.T) {
	kind := os.Getenv(mutantEnv)
	if kind == "" {
		t.Skip("run by TestConformanceCatchesMutants")
	}
	var b ops.Backend = &mutant{Backend: ops.CPU(), kind: kind}
	if strings.HasPrefix(kind, "bf16-") {
		b = &bf16Mutant{Backend: ops.CPU(), kind: kind}
	}
	conformance.Run(t, b, conformance.Options{
		Short: true, Guard: conformance.HostGuard,
	})
}

type mutant struct {
	ops.Backend
	kind  string
	calls atomic.Int64
}

// ---- host helpers (the CPU backend owns host tensors) ----

func toF64(d *tensor.Dense) []float64 {
	v, err := floats.Of(d)
	if err != nil {
		panic(err)
	}
	return v
}

func setF64(d *tensor.Dense, i int, x float64) {
	switch v := d.Data().(type) {
	case []float64:
		v[i] = x
	case []float32:
		v[i] = float32(x)
	}
}

func fromF64(dt tensor.Dtype, vals []float64, shape tensor.Shape) *tensor.Dense {
	return floats.Dense(dt, vals, shape...)
}

func (m *mutant) temp(like *tensor.Dense) *tensor.Dense {
	d, err := m.Backend.New(like.Dtype(), like.Shape()...)
	if err != nil {
		panic(err)
	}
	return d
}

// ---- the bugs ----

func (m *mutant) RouteIndices(logits *tensor.Dense, cfg ops.RouteConfig, idx *tensor.Dense) error {
	switch m.kind {
	case "tie-high": // ties go to the higher expert index
		T, E := logits.Shape()[0], logits.Shape()[1]
		v := toF64(logits)
		rev := make([]float64, len(v))
		for t := 0; t < T; t++ {
			for e := 0; e < E; e++ {
				rev[t*E+e] = v[t*E+E-1-e]
			}
		}
		if err := m.Backend.RouteIndices(fromF64(logits.Dtype(), rev, logits.Shape()), cfg, idx); err != nil {
			return err
		}
		d := idx.Data().([]int32)
		for i := range d {
			d[i] = int32(E-1) - d[i]
		}
		return nil
	case "route-accepts-inf": // +Inf silently clamped to a large finite logit
		v := toF64(logits)
		for i := range v {
			if math.IsInf(v[i], 1) {
				v[i] = 1e30
			}
		}
		return m.Backend.RouteIndices(fromF64(logits.Dtype(), v, logits.Shape()), cfg, idx)
	case "route-accepts-nan": // NaN silently treated as a very small logit
		v := toF64(logits)
		for i := range v {
			if math.IsNaN(v[i]) {
				v[i] = -1e30
			}
		}
		return m.Backend.RouteIndices(fromF64(logits.Dtype(), v, logits.Shape()), cfg, idx)
	}
	return m.Backend.RouteIndices(logits, cfg, idx)
}

func clampIdx(idx *tensor.Dense, E int) *tensor.Dense {
	v := append([]int32(nil), idx.Data().([]int32)...)
	for i := range v {
		v[i] = min(max(v[i], 0), int32(E-1))
	}
	return tensor.New(tensor.WithShape(idx.Shape()...), tensor.WithBacking(v))
}

func (m *mutant) RouteWeights(logits, idx *tensor.Dense, cfg ops.RouteConfig, w *tensor.Dense) error {
	cfg = m.policyWeightsConfig(cfg)
	if m.kind == "route-weights-accept-bad-indices" {
		idx = clampIdx(idx, logits.Shape()[1])
	}
	return m.Backend.RouteWeights(logits, idx, cfg, w)
}

// RouteBiased makes every mutant a fused router (ops.FusedRouter): the mutant's own RouteIndices(Bias)
// and RouteWeights, so that their bugs show through it too.
func (m *mutant) RouteBiased(logits, bias *tensor.Dense, cfg ops.RouteConfig, idx, w *tensor.Dense) error {
	if m.kind == "fused-route-ignores-bias" {
		bias = nil
	}
	var err error
	if bias == nil && cfg.Scoring != ops.Sigmoid {
		err = m.RouteIndices(logits, cfg, idx)
	} else {
		err = m.RouteIndicesBias(logits, bias, cfg, idx)
	}
	if err != nil || w == nil {
		return err
	}
	if err := m.RouteWeights(logits, idx, cfg, w); err != nil {
		return err
	}
	if m.kind == "fused-route-weights-off" { // the fused kernel's weights drift from RouteWeights'
		for i, v := range toF64(w) {
			setF64(w, i, v*(1+1e-3))
		}
	}
	return nil
}

// ViewAs makes every mutant an ops.Reinterpreter (the CPU's).
func (m *mutant) ViewAs(t *tensor.Dense, dt tensor.Dtype, byteOffset int, shape ...int) (*tensor.Dense, error) {
	v, err := ops.CPU().(ops.Reinterpreter).ViewAs(t, dt, byteOffset, shape...)
	if err == nil && m.kind == "viewas-copies" { // a view that does not share the memory
		v = v.Clone().(*tensor.Dense)
	}
	return v, err
}

func (m *mutant) RouteWeightsGrad(logits, idx, dw *tensor.Dense, cfg ops.RouteConfig, dlogits *tensor.Dense) error {
	cfg = m.policyGradConfig(cfg)
	if m.kind == "route-grad-ignores-renorm" && cfg.Scoring == ops.SoftmaxTopK {
		cfg.Renormalize = false
	}
	if m.kind == "route-weights-accept-bad-indices" {
		idx = clampIdx(idx, logits.Shape()[1])
	}
	return m.Backend.RouteWeightsGrad(logits, idx, dw, cfg, dlogits)
}

func (m *mutant) Plan(idx *tensor.Dense, numExperts int, plan *tensor.Dense) error {
	if m.kind == "plan-clamps-bad-indices" {
		idx = clampIdx(idx, numExperts)
	}
	if err := m.Backend.Plan(idx, numExperts, plan); err != nil {
		if m.kind == "plan-wrong-sentinel" { // the right condition reported with the wrong sentinel
			return fmt.Errorf("plan: %v: %w", err, ops.ErrShape)
		}
		return err
	}
	T, K := idx.Shape()[0], idx.Shape()[1]
	pv, err := ops.NewPlanView(plan.Data().([]int32), T, K, numExperts)
	if err != nil {
		return err
	}
	switch m.kind {
	case "plan-unstable", "plan-unsorted-within-expert":
		// reverse (or rotate) the rows of every expert with more than one row
		for e := 0; e < numExperts; e++ {
			seg := pv.SlotOf[pv.Offsets[e]:pv.Offsets[e+1]]
			if len(seg) < 2 {
				continue
			}
			if m.kind == "plan-unstable" {
				for i, j := 0, len(seg)-1; i < j; i, j = i+1, j-1 {
					seg[i], seg[j] = seg[j], seg[i]
				}
			} else {
				first := seg[0]
				copy(seg, seg[1:])
				seg[len(seg)-1] = first
			}
		}
		for r, s := range pv.SlotOf {
			pv.RowOf[s] = int32(r)
		}
	}
	return nil
}

func (m *mutant) Dispatch(x, w, plan *tensor.Dense, out *tensor.Dense) error {
	if m.kind == "dispatch-copies-dropped" {
		plan = keepAllRows(plan, x.Shape()[0]*out.Shape()[0]/x.Shape()[0])
	}
	switch m.kind {
	case "dispatch-ignores-weights":
		w = nil
	case "dispatch-unwritten": // the last element is never written
		tmp := m.temp(out)
		if err := m.Backend.Dispatch(x, w, plan, tmp); err != nil {
			return err
		}
		v := toF64(tmp)
		for i := 0; i < len(v)-1; i++ {
			setF64(out, i, v[i])
		}
		return nil
	}
	return m.Backend.Dispatch(x, w, plan, out)
}

func (m *mutant) Combine(ye, w, plan *tensor.Dense, out *tensor.Dense) error {
	if m.kind == "combine-adds-dropped" {
		plan = keepAllRows(plan, ye.Shape()[0])
	}
	switch m.kind {
	case "combine-accumulates": // out += result instead of out = result
		tmp := m.temp(out)
		if err := m.Backend.Combine(ye, w, plan, tmp); err != nil {
			return err
		}
		prev, v := toF64(out), toF64(tmp)
		for i := range v {
			setF64(out, i, prev[i]+v[i])
		}
		return nil
	case "combine-nondeterministic": // every other call perturbs one element by one ulp
		if err := m.Backend.Combine(ye, w, plan, out); err != nil {
			return err
		}
		if m.calls.Add(1)%2 == 0 {
			v := toF64(out)
			if out.Dtype() == tensor.Float32 {
				setF64(out, 0, float64(math.Nextafter32(float32(v[0]), float32(math.Inf(1)))))
			} else {
				setF64(out, 0, math.Nextafter(v[0], math.Inf(1)))
			}
		}
		return nil
	case "combine-drops-kth-term": // drops the last term of every token when K >= 3

		if err := m.Backend.Combine(ye, w, plan, out); err != nil {
			return err
		}
		T, H := out.Shape()[0], out.Shape()[1]
		K := ye.Shape()[0] / T
		if K < 3 {
			return nil
		}
		pv, err := ops.NewPlanView(plan.Data().([]int32), T, K, (plan.Shape().TotalSize()-1-2*T*K)/2)
		if err != nil {
			return err
		}
		o, y := toF64(out), toF64(ye)
		var wv []float64
		if w != nil {
			wv = toF64(w)
		}
		for t := 0; t < T; t++ {
			s := t*K + K - 1
			scale := 1.0
			if wv != nil {
				scale = wv[s]
			}
			for h := 0; h < H; h++ {
				setF64(out, t*H+h, o[t*H+h]-scale*y[int(pv.RowOf[s])*H+h])
			}
		}
		return nil
	}
	return m.Backend.Combine(ye, w, plan, out)
}

func (m *mutant) CombineGradWeights(dy, ye, plan *tensor.Dense, dw *tensor.Dense) error {
	if m.kind == "cgw-dropped-nonzero" {
		plan = keepAllRows(plan, ye.Shape()[0])
	}
	if err := m.Backend.CombineGradWeights(dy, ye, plan, dw); err != nil {
		return err
	}
	if m.kind == "cgw-clobbers-dy" { // uses dy as scratch space
		setF64(dy, 0, 12345)
	}
	return nil
}

func (m *mutant) GroupedMatMul(x, w, plan *tensor.Dense, transposeW bool, out *tensor.Dense) error {
	if err := m.Backend.GroupedMatMul(x, w, plan, transposeW, out); err != nil {
		return err
	}
	if m.kind == "gmm-writes-past-end" {
		// One element beyond the output, as an unchecked device kernel would. The mutant runs only
		// with conformance.HostGuard outputs, so that memory is the guard band, not someone else's.
		switch v := out.Data().(type) {
		case []float64:
			*(*float64)(unsafe.Add(unsafe.Pointer(&v[0]), len(v)*8)) = 0
		case []float32:
			*(*float32)(unsafe.Add(unsafe.Pointer(&v[0]), len(v)*4)) = 0
		}
	}
	return nil
}

func (m *mutant) GroupedMatMulGradW(x, dy, plan *tensor.Dense, dW *tensor.Dense) error {
	if m.kind != "gradw-skips-empty-experts" {
		return m.Backend.GroupedMatMulGradW(x, dy, plan, dW)
	}
	tmp := m.temp(dW)
	if err := m.Backend.GroupedMatMulGradW(x, dy, plan, tmp); err != nil {
		return err
	}
	E := dW.Shape()[0]
	per := dW.Shape().TotalSize() / E
	counts := plan.Data().([]int32)[:E]
	v := toF64(tmp)
	for e := 0; e < E; e++ {
		if counts[e] == 0 {
			continue
		}
		for i := e * per; i < (e+1)*per; i++ {
			setF64(dW, i, v[i])
		}
	}
	return nil
}

func (m *mutant) LoadBalancingLoss(logits, plan, mask *tensor.Dense, coef float64, loss *tensor.Dense) error {
	if m.kind == "lbl-divides-by-tk" {
		T, E := logits.Shape()[0], logits.Shape()[1]
		K := (plan.Shape().TotalSize() - 1 - 2*E) / (2 * T)
		coef /= float64(K)
	}
	if m.kind == "lbl-ignores-mask" {
		mask = nil
	}
	if m.kind == "lbl-counts-kept-only" {
		plan = keptCounts(plan, logits.Shape()[1])
	}
	return m.Backend.LoadBalancingLoss(logits, plan, mask, coef, loss)
}

func (m *mutant) ZLossGrad(logits *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error {
	if m.kind == "zloss-grad-sign" {
		scale = -scale
	}
	return m.Backend.ZLossGrad(logits, scale, g, dlogits)
}

// ---- bugs in the training kernels ----

func (m *mutant) MatMul(a, b *tensor.Dense, transA, transB bool, out *tensor.Dense) error {
	switch m.kind {
	case "matmul-k0-unwritten": // an empty inner dimension leaves the output as it was
		k := a.Shape()[1]
		if transA {
			k = a.Shape()[0]
		}
		if k == 0 {
			return nil
		}
	case "matmul-accumulates": // out += a·b
		tmp := m.temp(out)
		if err := m.Backend.MatMul(a, b, transA, transB, tmp); err != nil {
			return err
		}
		prev, v := toF64(out), toF64(tmp)
		for i := range v {
			setF64(out, i, prev[i]+v[i])
		}
		return nil
	case "matmul-ignores-transb": // reads a transposed b as if it were [K,N] (only square b has the right shape)
		if transB && b.Shape()[0] == b.Shape()[1] {
			transB = false
		}
	}
	return m.Backend.MatMul(a, b, transA, transB, out)
}

func (m *mutant) MSELoss(pred, target *tensor.Dense, loss *tensor.Dense) error {
	if err := m.Backend.MSELoss(pred, target, loss); err != nil {
		return err
	}
	if m.kind == "mse-sums" { // forgets the mean
		setF64(loss, 0, toF64(loss)[0]*float64(pred.Shape().TotalSize()))
	}
	return nil
}

func (m *mutant) MSELossGrad(pred, target *tensor.Dense, scale float64, g, dpred *tensor.Dense) error {
	switch m.kind {
	case "mse-grad-missing-2":
		scale /= 2
	case "mse-grad-ignores-upstream":
		g = nil
	}
	return m.Backend.MSELossGrad(pred, target, scale, g, dpred)
}

func (m *mutant) SoftmaxCrossEntropy(logits, labels *tensor.Dense, loss *tensor.Dense) error {
	if m.kind == "ce-accepts-bad-labels" {
		labels = ignoreBadLabels(labels, logits.Shape()[1])
	}
	if err := m.Backend.SoftmaxCrossEntropy(logits, labels, loss); err != nil {
		return err
	}
	if m.kind == "ce-divides-by-rows" { // mean over all rows instead of the counted ones
		lab := labels.Data().([]int32)
		counted := 0
		for _, l := range lab {
			if l >= 0 {
				counted++
			}
		}
		setF64(loss, 0, toF64(loss)[0]*float64(counted)/float64(len(lab)))
	}
	return nil
}

func (m *mutant) SoftmaxCrossEntropyGrad(logits, labels *tensor.Dense, scale float64, g, dlogits *tensor.Dense) error {
	if m.kind == "ce-accepts-bad-labels" {
		labels = ignoreBadLabels(labels, logits.Shape()[1])
	}
	if m.kind == "ce-ignored-rows-unwritten" { // computes into a temporary and copies counted rows only
		tmp := m.temp(dlogits)
		if err := m.Backend.SoftmaxCrossEntropyGrad(logits, labels, scale, g, tmp); err != nil {
			return err
		}
		c := logits.Shape()[1]
		v := toF64(tmp)
		for r, l := range labels.Data().([]int32) {
			if l < 0 {
				continue
			}
			for j := 0; j < c; j++ {
				setF64(dlogits, r*c+j, v[r*c+j])
			}
		}
		return nil
	}
	if err := m.Backend.SoftmaxCrossEntropyGrad(logits, labels, scale, g, dlogits); err != nil {
		return err
	}
	if m.kind == "ce-grad-no-onehot" { // forgets to subtract the one-hot label
		up := scale
		if g != nil {
			up *= toF64(g)[0]
		}
		lab := labels.Data().([]int32)
		counted := 0
		for _, l := range lab {
			if l >= 0 {
				counted++
			}
		}
		c := logits.Shape()[1]
		v := toF64(dlogits)
		for r, l := range lab {
			if l >= 0 {
				setF64(dlogits, r*c+int(l), v[r*c+int(l)]+up/float64(counted))
			}
		}
	}
	return nil
}

// ignoreBadLabels turns labels outside [0,c) into -1 (a kernel that skips what it should reject).
func ignoreBadLabels(labels *tensor.Dense, c int) *tensor.Dense {
	v := append([]int32(nil), labels.Data().([]int32)...)
	for i := range v {
		if v[i] < -1 || v[i] >= int32(c) {
			v[i] = -1
		}
	}
	return tensor.New(tensor.WithShape(labels.Shape()...), tensor.WithBacking(v))
}

func (m *mutant) SwiGLUGrad(gate, up, dout *tensor.Dense, dgate, dup *tensor.Dense) error {
	switch m.kind {
	case "swiglu-grad-drops-sigmoid-term": // dgate = dout * up * sigmoid(gate), forgetting a*s*(1-s)
		if err := m.Backend.SwiGLUGrad(gate, up, dout, dgate, dup); err != nil {
			return err
		}
		gv, uv, dv := toF64(gate), toF64(up), toF64(dout)
		for i, a := range gv {
			setF64(dgate, i, dv[i]*uv[i]/(1+math.Exp(-a)))
		}
		return nil
	case "swiglu-up-grad-unwritten":
		return m.Backend.SwiGLUGrad(gate, up, dout, dgate, m.temp(dup))
	}
	return m.Backend.SwiGLUGrad(gate, up, dout, dgate, dup)
}

func (m *mutant) GradNormScale(grads []*tensor.Dense, maxNorm float64, scale *tensor.Dense) error {
	switch m.kind {
	case "gradnorm-skips-last-grad":
		if len(grads) > 1 {
			grads = grads[:len(grads)-1]
		}
	case "gradnorm-accepts-nan": // treats non-finite values as zero
		clean := make([]*tensor.Dense, len(grads))
		for i, g := range grads {
			v := toF64(g)
			for j := range v {
				if math.IsNaN(v[j]) || math.IsInf(v[j], 0) {
					v[j] = 0
				}
			}
			clean[i] = fromF64(g.Dtype(), v, g.Shape())
		}
		grads = clean
	case "gradnorm-no-eps": // maxNorm / norm: exact for nonzero norms, but the documented +1e-6 is missing
		s := 0.0
		for _, g := range grads {
			for _, v := range toF64(g) {
				s += v * v
			}
		}
		if err := m.Backend.GradNormScale(grads, maxNorm, scale); err != nil {
			return err
		}
		setF64(scale, 0, math.Min(1, maxNorm/math.Sqrt(s)))
		return nil
	}
	return m.Backend.GradNormScale(grads, maxNorm, scale)
}

func (m *mutant) AdamStep(p, g, mm, v *tensor.Dense, hp ops.AdamParams, clipScale *tensor.Dense) error {
	switch m.kind {
	case "adam-no-bias-correction": // as if every step were late in training
		hp.Step = 1 << 20
	case "adam-decoupled-as-l2":
		hp.DecoupledWeightDecay = false
	case "adam-ignores-clip":
		if clipScale != nil && !math.IsNaN(toF64(clipScale)[0]) {
			clipScale = nil
		}
	case "adam-steps-on-nan-scale":
		if clipScale != nil && math.IsNaN(toF64(clipScale)[0]) {
			clipScale = nil
			hp.LR *= 1.5
		}
	}
	return m.Backend.AdamStep(p, g, mm, v, hp, clipScale)
}

func (m *mutant) SGDStep(p, g, buf *tensor.Dense, hp ops.SGDParams, clipScale *tensor.Dense) error {
	switch m.kind {
	case "sgd-nesterov-ignored":
		hp.Nesterov = false
	case "sgd-momentum-dampened": // buf = momentum*buf + (1-momentum)*g
		if hp.Momentum > 0 {
			scaled := fromF64(g.Dtype(), scaleF64(toF64(g), 1-hp.Momentum), g.Shape())
			return m.Backend.SGDStep(p, scaled, buf, hp, clipScale)
		}
	case "sgd-steps-on-nan-scale":
		if clipScale != nil && math.IsNaN(toF64(clipScale)[0]) {
			clipScale = nil
		}
	}
	return m.Backend.SGDStep(p, g, buf, hp, clipScale)
}

func scaleF64(v []float64, c float64) []float64 {
	for i := range v {
		v[i] *= c
	}
	return v
}
