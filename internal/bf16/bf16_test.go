package bf16

import (
	"math"
	"math/big"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"

	"gorgonia.org/tensor"
)

// value returns the exact value of a bfloat16 bit pattern's magnitude m (sign dropped) as a float64,
// computed from the fields, not by widening: 0x7f80 gives 2^128 (the rounding boundary that stands for
// Inf), NaN patterns are not asked for.
func value(m uint16) float64 {
	exp := uint64(m >> 7)
	man := uint64(m & 0x7f)
	if exp == 0 {
		return float64(man) * 0x1p-133 // subnormal: man * 2^-126 * 2^-7
	}
	return math.Float64frombits((exp-127+1023)<<52 | man<<45) // (1 + man/128) * 2^(exp-127)
}

// reference rounds the float32 of bits u to the nearest bfloat16, ties to even, from exact float64
// distances to the two bfloat16 neighbours of its magnitude (independent of FromFloat32's bit trick).
func reference(u uint32) BFloat16 {
	sign := uint16(u>>16) & 0x8000
	mag := u & 0x7fffffff
	if mag > 0x7f800000 {
		return BFloat16(u>>16 | 0x0040)
	}
	if mag == 0x7f800000 {
		return BFloat16(sign | 0x7f80)
	}
	x := float64(math.Float32frombits(mag))
	lo := uint16(mag >> 16) // magnitude truncated to bfloat16
	hi := lo + 1
	dlo, dhi := x-value(lo), value(hi)-x // exact: both are small multiples of the float32 spacing
	switch {
	case dlo < dhi:
		return BFloat16(sign | lo)
	case dhi < dlo:
		return BFloat16(sign | hi)
	case lo&1 == 0:
		return BFloat16(sign | lo)
	}
	return BFloat16(sign | hi)
}

// TestFromFloat32Exhaustive checks every one of the 2^32 float32 inputs (every 4099th in -short mode)
// against the reference, and that widening the result back is exact for values already representable.
func TestFromFloat32Exhaustive(t *testing.T) {
	stride := uint64(1)
	if testing.Short() {
		stride = 4099
	}
	workers := runtime.GOMAXPROCS(0)
	const total = uint64(1) << 32
	chunk := total / uint64(workers)
	var mu sync.Mutex
	var bad []uint32
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		lo := uint64(w) * chunk
		hi := lo + chunk
		if w == workers-1 {
			hi = total
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []uint32
			for v := lo; v < hi; v += stride {
				u := uint32(v)
				if got, want := FromFloat32(math.Float32frombits(u)), reference(u); got != want && len(mine) < 10 {
					mine = append(mine, u)
				}
			}
			mu.Lock()
			bad = append(bad, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, u := range bad {
		t.Errorf("FromFloat32(%#08x = %v) = %#04x, want %#04x", u, math.Float32frombits(u), FromFloat32(math.Float32frombits(u)), reference(u))
	}
}

func TestFromFloat32Special(t *testing.T) {
	for _, c := range []struct {
		in   float32
		want BFloat16
	}{
		{0, 0}, {float32(math.Copysign(0, -1)), 0x8000}, {1, One}, {-2, 0xc000},
		{float32(math.Inf(1)), PosInf}, {float32(math.Inf(-1)), NegInf},
		{math.MaxFloat32, PosInf},                   // beyond the midpoint to 2^128
		{math.Float32frombits(0x7f7f7fff), MaxBF16}, // just below that midpoint
		{math.Float32frombits(0x7f7f8000), PosInf},  // the midpoint: ties to even (0x7f80)
		{math.Float32frombits(0x3f808000), One},     // tie between 0x3f80 and 0x3f81: even
		{math.Float32frombits(0x3f818000), 0x3f82},  // tie between 0x3f81 and 0x3f82: even
		{math.Float32frombits(0x00008000), 0},       // half the smallest subnormal: ties to 0
		{math.Float32frombits(0x00008001), 1},       // just above: the smallest subnormal
		{math.Float32frombits(0x7fa00000), 0x7fe0},  // signalling NaN is quieted, payload kept
		{math.Float32frombits(0xff800001), 0xffc0},  // NaN whose payload sits below bit 16
	} {
		if got := FromFloat32(c.in); got != c.want {
			t.Errorf("FromFloat32(%#08x) = %#04x, want %#04x", math.Float32bits(c.in), got, c.want)
		}
	}
	for m := 0; m < 1<<16; m++ {
		b := BFloat16(m)
		if b.IsNaN() {
			if !FromFloat32(b.Float32()).IsNaN() || !FromFloat64(b.Float64()).IsNaN() {
				t.Fatalf("NaN %#04x does not stay NaN", m)
			}
			continue
		}
		if FromFloat32(b.Float32()) != b || FromFloat64(b.Float64()) != b {
			t.Fatalf("%#04x does not round-trip: %#04x, %#04x", m, FromFloat32(b.Float32()), FromFloat64(b.Float64()))
		}
		if v := value(uint16(m) & 0x7fff); !b.IsInf() && math.Abs(b.Float64()) != v {
			t.Fatalf("%#04x widens to %v, want %v", m, b.Float64(), v)
		}
	}
}

// bigRound rounds x (finite, non-zero, |x| in the normal range of bfloat16) to 8 significant bits,
// ties to even, exactly.
func bigRound(x float64) float64 {
	f := new(big.Float).SetPrec(8).SetMode(big.ToNearestEven).SetFloat64(x)
	r, _ := f.Float64()
	return r
}

// TestFromFloat64SingleRounding compares FromFloat64 with exact rounding, on N(0, 0.02²) values (the
// initialisation scale of transformer weights), random bit patterns of every exponent, and float64
// values one float64 step either side of every bfloat16 tie of every normal binade, where rounding
// twice through float32 fails.
func TestFromFloat64SingleRounding(t *testing.T) {
	check := func(x float64) {
		t.Helper()
		got := FromFloat64(x).Float64()
		var want float64
		switch ax := math.Abs(x); {
		case ax >= math.Ldexp(1, -126) && ax < value(0x7f7f)+math.Ldexp(1, 127-8):
			want = bigRound(x)
		default:
			return // checked by TestFromFloat64Edges
		}
		if got != want {
			t.Fatalf("FromFloat64(%v = %#016x) = %v, want %v", x, math.Float64bits(x), got, want)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	n := 2_000_000
	if testing.Short() {
		n = 100_000
	}
	for i := 0; i < n; i++ {
		check(rng.NormFloat64() * 0.02)
		check(math.Float64frombits(rng.Uint64()))
	}
	twice := 0
	for exp := -126; exp <= 127; exp++ {
		for man := 0; man < 128; man++ {
			tie := math.Ldexp(float64(256+2*man+1), exp-8) // midpoint between two bfloat16 values
			for _, x := range []float64{math.Nextafter(tie, 0), tie, math.Nextafter(tie, math.Inf(1))} {
				check(x)
				check(-x)
				if FromFloat32(float32(x)) != FromFloat64(x) {
					twice++
				}
			}
		}
	}
	if twice == 0 {
		t.Errorf("rounding through float32 agreed with FromFloat64 at every tie neighbour; the test does not exercise double rounding")
	}
}

func TestFromFloat64Edges(t *testing.T) {
	tiny := math.Ldexp(1, -134) // half the smallest bfloat16 subnormal 2^-133
	for _, c := range []struct {
		in   float64
		want BFloat16
	}{
		{math.NaN(), NaN}, {math.Copysign(math.NaN(), -1), 0xffc0},
		{math.Inf(1), PosInf}, {math.Inf(-1), NegInf},
		{math.MaxFloat64, PosInf}, {-math.MaxFloat64, NegInf},
		{math.MaxFloat32, PosInf},
		{value(0x7f7f) + math.Ldexp(1, 127-8), PosInf},                   // the overflow midpoint ties to even
		{math.Nextafter(value(0x7f7f)+math.Ldexp(1, 127-8), 0), MaxBF16}, // just below it
		{math.SmallestNonzeroFloat64, 0}, {-math.SmallestNonzeroFloat64, 0x8000},
		{tiny, 0},                                   // tie between 0 and the smallest subnormal: even (0)
		{math.Nextafter(tiny, 1), 1},                // just above: the smallest subnormal
		{3 * tiny, 2},                               // tie between subnormals 1 and 2: even
		{math.Nextafter(3*tiny, 0), 1},              // below that tie: float32 would round it up to the tie, then to 2
		{math.Ldexp(1, -126) * (1 - 1e-12), 0x0080}, // rounds up from the subnormal range to the smallest normal
	} {
		if got := FromFloat64(c.in); got != c.want {
			t.Errorf("FromFloat64(%v) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	// Subnormal range: exact rounding against big.Float at a fixed binary point (multiples of 2^-133).
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 200_000; i++ {
		x := (rng.Float64()*2 - 1) * math.Ldexp(1, -126)
		q := x * math.Ldexp(1, 133) // exact: a power-of-two scaling
		r := math.RoundToEven(q)
		want := math.Ldexp(r, -133)
		if got := FromFloat64(x).Float64(); got != want {
			t.Fatalf("FromFloat64(%v) = %v, want %v", x, got, want)
		}
	}
}

func TestString(t *testing.T) {
	for _, c := range []struct {
		b    BFloat16
		want string
	}{{One, "1"}, {0xc000, "-2"}, {FromFloat32(0.1), "0.1"}, {PosInf, "+Inf"}, {NaN, "NaN"}, {0x3f81, "1.01"}} {
		if got := c.b.String(); got != c.want {
			t.Errorf("String(%#04x) = %q, want %q", uint16(c.b), got, c.want)
		}
	}
}

func TestDtype(t *testing.T) {
	if Dtype.Size() != 2 || Dtype.Kind().String() != "uint16" {
		t.Fatalf("Dtype %v: size %d kind %v", Dtype, Dtype.Size(), Dtype.Kind())
	}
	d := tensor.New(tensor.WithShape(2, 3), tensor.WithBacking(FromFloat32s([]float32{1, 2, 3, 4, 5, 6})))
	if d.Dtype() != Dtype {
		t.Fatalf("tensor dtype %v", d.Dtype())
	}
	c := d.Clone().(*tensor.Dense)
	if err := c.T(); err != nil {
		t.Fatal(err)
	}
	m := c.Materialize().(*tensor.Dense)
	got := Float32s(m.Data().([]BFloat16))
	want := []float32{1, 4, 2, 5, 3, 6}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("transposed %v, want %v", got, want)
		}
	}
}
