//go:build expertrt_cuda

package cudaops

import (
	"fmt"

	"github.com/expertrt/expertrt-go/ops"
	"gorgonia.org/cu"
	"gorgonia.org/tensor"
)

// The router family (route.cu): the fused router (softmax scorings: route; sigmoid scoring with groups
// and a selection bias: route_sigmoid), the weights of given experts (route_weights) and their gradient
// (route_weights_grad): typed launchers over raw device addresses and the Backend methods over them.

// Route runs the fused router on logits [T,E]: idx [T,K] (int32) gets the K best experts (ties to the
// lower index); w [T,K] (may be 0) gets their weights, times scale. full selects the softmax over all E
// experts (SoftmaxTopK without renormalisation) instead of the softmax over the K selected logits. Rows
// with a NaN or +Inf logit, or all -Inf, raise a device fault (ops.ErrNaN at the next synchronisation).
func (d *Device) Route(dt tensor.Dtype, logits, idx, w cu.DevicePtr, T, E, K int, full bool, scale float64) error {
	if err := checkDims("route", T, E, K); err != nil {
		return err
	}
	if K > E {
		return fmt.Errorf("cudaops: route: K=%d > E=%d: %w", K, E, ops.ErrConfig)
	}
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	return d.launch("route_"+suf, d.warpGrid(T), ptrArg(logits), ptrArg(idx), ptrArg(w), i32(T), i32(E), i32(K), i32(b2i(full)), f64(scale), ptrArg(d.fault))
}

// RouteWeights writes w [T,K] for given experts idx [T,K] (validated on the device: see Synchronize),
// mode as weightMode, times scale.
func (d *Device) RouteWeights(dt tensor.Dtype, logits, idx, w cu.DevicePtr, T, E, K, mode int, scale float64) error {
	if err := checkDims("route weights", T, E, K); err != nil {
		return err
	}
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	cfg := d.warpGrid(T)
	cfg.smem = routeWeightsSmem(cfg.block, K)
	return d.launch("route_weights_"+suf, cfg, ptrArg(logits), ptrArg(idx), ptrArg(w), i32(T), i32(E), i32(K), i32(mode), f64(scale), ptrArg(d.fault))
}

// RouteWeightsGrad writes dlogits [T,E] = d(sum dw*w)/dlogits (mode and scale as in RouteWeights).
func (d *Device) RouteWeightsGrad(dt tensor.Dtype, logits, idx, dw, dlogits cu.DevicePtr, T, E, K, mode int, scale float64) error {
	if err := checkDims("route weights grad", T, E, K); err != nil {
		return err
	}
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	cfg := d.warpGrid(T)
	cfg.smem = routeWeightsGradSmem(cfg.block, K, dt)
	return d.launch("route_weights_grad_"+suf, cfg, ptrArg(logits), ptrArg(idx), ptrArg(dw), ptrArg(dlogits), i32(T), i32(E), i32(K), i32(mode), f64(scale), ptrArg(d.fault))
}

// sigmoidLaunch sizes route_sigmoid on this device (sigmoidLaunchFor).
func (d *Device) sigmoidLaunch(dt tensor.Dtype, T, E, G int) (launchCfg, error) {
	return sigmoidLaunchFor(dt, T, E, G, d.sms, d.maxSmem)
}

// RouteSigmoid runs DeepSeek-V3's router (ops.Sigmoid; see route.cu) on logits [T,E] with an optional
// selection bias [E] (0: none): idx [T,K] and, when w != 0, the weights w [T,K]. cfg was validated.
// NaN logits and non-finite bias entries raise device faults (ops.ErrNaN).
func (d *Device) RouteSigmoid(dt tensor.Dtype, logits, bias, idx, w cu.DevicePtr, T, E int, cfg ops.RouteConfig) error {
	if err := checkDims("sigmoid route", T, E, cfg.K); err != nil {
		return err
	}
	if err := cfg.Validate(E); err != nil {
		return err
	}
	suf, err := suffix(dt)
	if err != nil {
		return err
	}
	G, TG := cfg.Groups, cfg.TopKGroups
	if !cfg.Grouped() {
		G, TG = 0, 0
	}
	lc, err := d.sigmoidLaunch(dt, T, E, G)
	if err != nil {
		return err
	}
	return d.launch("route_sigmoid_"+suf, lc, ptrArg(logits), ptrArg(bias), ptrArg(idx), ptrArg(w), i32(T), i32(E), i32(cfg.K),
		i32(b2i(cfg.Renormalize)), f64(cfg.EffectiveScale()), i32(G), i32(TG), i32(b2i(cfg.GroupMask == ops.GroupMaskExclude)), ptrArg(d.fault))
}

// RouteIndices: idx [T,K] int32 = the K best experts of each token (see ops.Scoring), ties to the lower
// index.
func (b *Backend) RouteIndices(logits *tensor.Dense, cfg ops.RouteConfig, idx *tensor.Dense) error {
	return b.Route(logits, cfg, idx, nil)
}

// Route is the fused router: idx [T,K] and (when w is non-nil) w [T,K] in one kernel (RouteBiased
// without a bias).
func (b *Backend) Route(logits *tensor.Dense, cfg ops.RouteConfig, idx, w *tensor.Dense) error {
	return b.RouteBiased(logits, nil, cfg, idx, w)
}

// RouteBiased is the fused router with a selection bias [E] (Sigmoid scoring; nil: none).
func (b *Backend) RouteBiased(logits, bias *tensor.Dense, cfg ops.RouteConfig, idx, w *tensor.Dense) error {
	const what = "route"
	dt, err := floatDtype(what, logits)
	if err != nil {
		return err
	}
	T, E, err := dims2(what, "logits", logits)
	if err != nil {
		return err
	}
	if err := cfg.Validate(E); err != nil {
		return err
	}
	pl, err := b.buf(what, "logits", logits, dt, T, E)
	if err != nil {
		return err
	}
	pi, err := b.buf(what, "idx", idx, tensor.Int32, T, cfg.K)
	if err != nil {
		return err
	}
	var pw, pb cu.DevicePtr
	if w != nil {
		if pw, err = b.buf(what, "w", w, dt, T, cfg.K); err != nil {
			return err
		}
	}
	if cfg.Scoring == ops.Sigmoid {
		if bias != nil {
			if pb, err = b.buf(what, "bias", bias, dt, E); err != nil {
				return err
			}
		}
		if err := b.dev.RouteSigmoid(dt, pl, pb, pi, pw, T, E, cfg); err != nil {
			return err
		}
		return b.faultCheck()
	}
	if bias != nil {
		return fmt.Errorf("cudaops: route: a selection bias needs sigmoid scoring, got %v: %w", cfg.Scoring, ops.ErrConfig)
	}
	if err := b.dev.Route(dt, pl, pi, pw, T, E, cfg.K, !cfg.EffectiveRenormalize(), cfg.EffectiveScale()); err != nil {
		return err
	}
	return b.faultCheck()
}

// logitsIdxArgs validates the logits [T,E] and indices [T,K] operands shared by the route-weight kernels.
func (b *Backend) logitsIdxArgs(what string, logits, idx *tensor.Dense) (dt tensor.Dtype, pl, pi cu.DevicePtr, T, E, K int, err error) {
	if dt, err = floatDtype(what, logits); err != nil {
		return
	}
	if T, E, err = dims2(what, "logits", logits); err != nil {
		return
	}
	if _, K, err = dims2(what, "idx", idx); err != nil {
		return
	}
	if pl, err = b.buf(what, "logits", logits, dt, T, E); err != nil {
		return
	}
	pi, err = b.buf(what, "idx", idx, tensor.Int32, T, K)
	return
}

func (b *Backend) RouteWeights(logits, idx *tensor.Dense, cfg ops.RouteConfig, w *tensor.Dense) error {
	const what = "route weights"
	dt, pl, pi, T, E, K, err := b.logitsIdxArgs(what, logits, idx)
	if err != nil {
		return err
	}
	pw, err := b.buf(what, "w", w, dt, T, K)
	if err != nil {
		return err
	}
	if err := b.dev.RouteWeights(dt, pl, pi, pw, T, E, K, weightMode(cfg), cfg.EffectiveScale()); err != nil {
		return err
	}
	return b.faultCheck()
}

func (b *Backend) RouteWeightsGrad(logits, idx, dw *tensor.Dense, cfg ops.RouteConfig, dlogits *tensor.Dense) error {
	const what = "route weights grad"
	dt, pl, pi, T, E, K, err := b.logitsIdxArgs(what, logits, idx)
	if err != nil {
		return err
	}
	pdw, err := b.buf(what, "dw", dw, dt, T, K)
	if err != nil {
		return err
	}
	pdl, err := b.buf(what, "dlogits", dlogits, dt, T, E)
	if err != nil {
		return err
	}
	if err := b.dev.RouteWeightsGrad(dt, pl, pi, pdw, pdl, T, E, K, weightMode(cfg), cfg.EffectiveScale()); err != nil {
		return err
	}
	return b.faultCheck()
}

// RouteIndicesBias: idx [T,K] int32 with a selection bias [E] (Sigmoid; nil: none).
func (b *Backend) RouteIndicesBias(logits, bias *tensor.Dense, cfg ops.RouteConfig, idx *tensor.Dense) error {
	return b.RouteBiased(logits, bias, cfg, idx, nil)
}
