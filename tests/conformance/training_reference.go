package conformance

import "math"

// Naive float64 references of the training kernels, written from the PyTorch definitions (independent
// of package ops).

// refMatMul returns op(a)·op(b) for row-major a and b, and for every element the sum of the magnitudes
// of its terms (for tolerances).
func refMatMul(a, b []float64, m, k, n int, transA, transB bool) (out, scale []float64) {
	at := func(i, p int) float64 {
		if transA {
			return a[p*m+i]
		}
		return a[i*k+p]
	}
	bt := func(p, j int) float64 {
		if transB {
			return b[j*k+p]
		}
		return b[p*n+j]
	}
	out, scale = make([]float64, m*n), make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			for p := 0; p < k; p++ {
				out[i*n+j] += at(i, p) * bt(p, j)
				scale[i*n+j] += math.Abs(at(i, p) * bt(p, j))
			}
		}
	}
	return out, scale
}

// transposed returns the [c,r] transpose of a row-major [r,c] matrix.
func transposed(a []float64, r, c int) []float64 {
	t := make([]float64, len(a))
	for i := 0; i < r; i++ {
		for j := 0; j < c; j++ {
			t[j*r+i] = a[i*c+j]
		}
	}
	return t
}

func refMSE(p, q []float64) float64 {
	s := 0.0
	for i := range p {
		s += (p[i] - q[i]) * (p[i] - q[i])
	}
	return s / float64(len(p))
}

func refMSEGrad(p, q []float64, scale float64) []float64 {
	g := make([]float64, len(p))
	for i := range p {
		g[i] = scale * 2 * (p[i] - q[i]) / float64(len(p))
	}
	return g
}

// refCrossEntropy is torch.nn.functional.cross_entropy(logits, labels, ignore_index=-1), 0 when every row
// is ignored.
func refCrossEntropy(logits []float64, labels []int32, c int) float64 {
	s, n := 0.0, 0
	for r, l := range labels {
		if l < 0 {
			continue
		}
		row := logits[r*c : (r+1)*c]
		s += refLogSumExp(row) - row[l]
		n++
	}
	if n == 0 {
		return 0
	}
	return s / float64(n)
}

func refCrossEntropyGrad(logits []float64, labels []int32, c int, scale float64) []float64 {
	g := make([]float64, len(logits))
	n := 0
	for _, l := range labels {
		if l >= 0 {
			n++
		}
	}
	for r, l := range labels {
		if l < 0 {
			continue
		}
		p := refSoftmax(logits[r*c : (r+1)*c])
		p[l]--
		for j := range p {
			g[r*c+j] = scale * p[j] / float64(n)
		}
	}
	return g
}

func refSigmoid(a float64) float64 { return 0.5 * (1 + math.Tanh(a/2)) }

func refSwiGLU(gate, up []float64) []float64 {
	o := make([]float64, len(gate))
	for i, a := range gate {
		o[i] = a * refSigmoid(a) * up[i]
	}
	return o
}

func refSwiGLUGrad(gate, up, dout []float64) (dgate, dup []float64) {
	dgate, dup = make([]float64, len(gate)), make([]float64, len(gate))
	for i, a := range gate {
		s := refSigmoid(a)
		dgate[i] = dout[i] * up[i] * (s + a*s*(1-s))
		dup[i] = dout[i] * a * s
	}
	return dgate, dup
}

func refGradNormScale(grads [][]float64, maxNorm float64) float64 {
	s := 0.0
	for _, g := range grads {
		for _, v := range g {
			s += v * v
		}
	}
	return math.Min(1, maxNorm/(math.Sqrt(s)+1e-6))
}

// adamHP mirrors ops.AdamParams without depending on its field order.
type adamHP struct {
	lr, b1, b2, eps, wd float64
	decoupled           bool
}

// refAdamStep is one step of torch.optim.Adam / AdamW (single-tensor implementation) on float64
// copies, with the gradient scaled by clip first.
func refAdamStep(p, g, m, v []float64, hp adamHP, step int, clip float64) {
	bc1 := 1 - math.Pow(hp.b1, float64(step))
	bc2 := 1 - math.Pow(hp.b2, float64(step))
	for i := range p {
		gr := clip * g[i]
		if hp.decoupled {
			p[i] *= 1 - hp.lr*hp.wd
		} else {
			gr += hp.wd * p[i]
		}
		m[i] = hp.b1*m[i] + (1-hp.b1)*gr
		v[i] = hp.b2*v[i] + (1-hp.b2)*gr*gr
		denom := math.Sqrt(v[i])/math.Sqrt(bc2) + hp.eps
		p[i] -= hp.lr / bc1 * m[i] / denom
	}
}

// refSGDStep is one step of torch.optim.SGD (no dampening) with the gradient scaled by clip first; buf is
// nil without momentum.
func refSGDStep(p, g, buf []float64, lr, momentum, wd float64, nesterov bool, clip float64) {
	for i := range p {
		d := clip*g[i] + wd*p[i]
		if momentum > 0 {
			buf[i] = momentum*buf[i] + d
			if nesterov {
				d += momentum * buf[i]
			} else {
				d = buf[i]
			}
		}
		p[i] -= lr * d
	}
}
