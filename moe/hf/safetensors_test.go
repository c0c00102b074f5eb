package hf

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustWrite(t *testing.T, ts []Tensor, md map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, ts, md); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	v64 := []float64{1, -2.5, math.Pi, 1e-30, math.Copysign(0, -1), 6} // -0 round-trips bitwise
	v32 := []float32{0.5, -1, 3.25, 7}
	b := mustWrite(t, []Tensor{
		{Name: "b.f64", Shape: []int{2, 3}, Values: v64, DType: F64},
		{Name: "a.f32", Shape: []int{4}, Values: v32}, // default F32
		{Name: "c.bf16", Shape: []int{2, 2}, Values: v32, DType: BF16},
		{Name: "d.f32from64", Shape: []int{3, 2}, Values: v64, DType: F32},
		{Name: "e.scalar", Shape: nil, Values: []float64{42}, DType: F64},
		{Name: "f.empty", Shape: []int{0, 3}, Values: []float32{}, DType: F32},
	}, map[string]string{"format": "pt"})
	hlen := binary.LittleEndian.Uint64(b)
	if hlen%8 != 0 {
		t.Errorf("header length %d not padded to 8", hlen)
	}
	f, err := Parse("mem", b)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(f.Names(), ","); got != "a.f32,b.f64,c.bf16,d.f32from64,e.scalar,f.empty" {
		t.Errorf("names %s", got)
	}
	if f.Metadata()["format"] != "pt" {
		t.Errorf("metadata %v", f.Metadata())
	}
	got64, shape, err := f.ReadFloat64("b.f64")
	if err != nil || len(shape) != 2 || shape[0] != 2 || shape[1] != 3 {
		t.Fatalf("b.f64: %v %v", shape, err)
	}
	for i := range v64 {
		if math.Float64bits(got64[i]) != math.Float64bits(v64[i]) {
			t.Errorf("b.f64[%d] = %v, want %v", i, got64[i], v64[i])
		}
	}
	got32, _, err := f.ReadFloat32("a.f32")
	if err != nil {
		t.Fatal(err)
	}
	for i := range v32 {
		if got32[i] != v32[i] {
			t.Errorf("a.f32[%d] = %v", i, got32[i])
		}
	}
	// These values are exact in bfloat16.
	gotbf, _, err := f.ReadFloat64("c.bf16")
	if err != nil {
		t.Fatal(err)
	}
	for i := range v32 {
		if gotbf[i] != float64(v32[i]) {
			t.Errorf("c.bf16[%d] = %v, want %v", i, gotbf[i], v32[i])
		}
	}
	g, _, _ := f.ReadFloat64("d.f32from64")
	for i := range v64 {
		if g[i] != float64(float32(v64[i])) {
			t.Errorf("d[%d] = %v", i, g[i])
		}
	}
	if s, shape, err := f.ReadFloat64("e.scalar"); err != nil || len(shape) != 0 || s[0] != 42 {
		t.Errorf("scalar %v %v %v", s, shape, err)
	}
	if s, _, err := f.ReadFloat32("f.empty"); err != nil || len(s) != 0 {
		t.Errorf("empty %v %v", s, err)
	}
	if _, _, err := f.ReadFloat64("nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("missing tensor error: %v", err)
	}
}

func TestWriteErrors(t *testing.T) {
	for _, ts := range [][]Tensor{
		{{Name: "x", Shape: []int{3}, Values: []float32{1, 2}}},
		{{Name: "x", Shape: []int{1}, Values: []int{1}}},
		{{Name: "x", Shape: []int{1}, Values: []float32{1}, DType: I32}},
		{{Name: "x", Shape: []int{1}, Values: []float32{1}}, {Name: "x", Shape: []int{1}, Values: []float32{1}}},
		{{Name: "__metadata__", Shape: []int{1}, Values: []float32{1}}},
		{{Name: "", Shape: []int{1}, Values: []float32{1}}},
	} {
		if err := Write(&bytes.Buffer{}, ts, nil); err == nil {
			t.Errorf("Write(%v) succeeded", ts)
		}
	}
}

func TestBF16(t *testing.T) {
	cases := []struct {
		f    float32
		want uint16
	}{
		{1, 0x3f80},
		{-2, 0xc000},
		{float32(math.Inf(1)), 0x7f80},
		{math.Float32frombits(0x3f808000), 0x3f80}, // exact tie, even stays
		{math.Float32frombits(0x3f818000), 0x3f82}, // exact tie, odd rounds up
		{math.Float32frombits(0x3f808001), 0x3f81}, // above the tie
		{math.Float32frombits(0x7f7fffff), 0x7f80}, // max float32 overflows to +Inf
	}
	for _, c := range cases {
		if got := Float32ToBF16(c.f); got != c.want {
			t.Errorf("Float32ToBF16(%v = %#x) = %#x, want %#x", c.f, math.Float32bits(c.f), got, c.want)
		}
	}
	if nan := Float32ToBF16(float32(math.NaN())); !math.IsNaN(float64(BF16ToFloat32(nan))) {
		t.Errorf("NaN became %#x", nan)
	}
	if nan := Float32ToBF16(math.Float32frombits(0x7f800001)); !math.IsNaN(float64(BF16ToFloat32(nan))) {
		t.Errorf("low-payload NaN became %#x", nan)
	}
	for _, v := range []uint16{0, 0x8000, 0x3f80, 0x0001, 0x7f7f} {
		if got := Float32ToBF16(BF16ToFloat32(v)); got != v {
			t.Errorf("round trip %#x -> %#x", v, got)
		}
	}
}

func TestF16(t *testing.T) {
	cases := map[uint16]float32{
		0x0000: 0, 0x3c00: 1, 0xc000: -2, 0x7bff: 65504, 0x0001: 1.0 / (1 << 24),
		0x0400: 1.0 / (1 << 14), 0x3555: 0.333251953125,
	}
	for h, want := range cases {
		if got := F16ToFloat32(h); got != want {
			t.Errorf("F16ToFloat32(%#x) = %v, want %v", h, got, want)
		}
	}
	if !math.IsInf(float64(F16ToFloat32(0xfc00)), -1) || !math.IsNaN(float64(F16ToFloat32(0x7e00))) {
		t.Error("F16 inf/nan")
	}
	if got := F16ToFloat32(0x8000); got != 0 || !math.Signbit(float64(got)) {
		t.Errorf("negative zero: %v", got)
	}
}

// header builds a file from a raw JSON header and a data section.
func rawFile(header string, data []byte) []byte {
	b := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func TestCorruptHeaders(t *testing.T) {
	eight := make([]byte, 8)
	cases := map[string][]byte{
		"empty":             {},
		"short":             {1, 2, 3},
		"huge header":       append(binary.LittleEndian.AppendUint64(nil, 1<<40), eight...),
		"header past end":   append(binary.LittleEndian.AppendUint64(nil, 100), []byte("{}")...),
		"not json":          rawFile("nonsense", nil),
		"json array":        rawFile("[1,2]", nil),
		"json null":         rawFile("null", nil),
		"trailing garbage":  rawFile(`{} x`, nil),
		"bad utf8":          rawFile("{\"\xff\":1}", nil),
		"unknown dtype":     rawFile(`{"x":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}}`, eight),
		"missing offsets":   rawFile(`{"x":{"dtype":"F32","shape":[1]}}`, eight),
		"size mismatch":     rawFile(`{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, eight),
		"negative dim":      rawFile(`{"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, eight),
		"reversed offsets":  rawFile(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}`, eight),
		"three offsets":     rawFile(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, eight),
		"past data":         rawFile(`{"x":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}`, eight),
		"overlap":           rawFile(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, eight),
		"overflowing shape": rawFile(`{"x":{"dtype":"F64","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}`, eight),
		"bad metadata":      rawFile(`{"__metadata__":{"a":1}}`, nil),
		"entry not object":  rawFile(`{"x":5}`, nil),
		"float shape":       rawFile(`{"x":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}`, eight),
	}
	for name, b := range cases {
		if _, err := Parse(name, b); err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.HasPrefix(err.Error(), "safetensors: "+name+":") {
			t.Errorf("%s: error does not name the file: %v", name, err)
		}
	}
	// A non-float tensor parses but cannot be read as floats.
	f, err := Parse("ints", rawFile(`{"x":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}`, eight))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.ReadFloat64("x"); err == nil {
		t.Error("reading I32 as float succeeded")
	}
}

// TestTruncatedAndCorrupted checks that every truncation of a valid file is rejected at open, and
// that random byte corruption never panics (it may or may not be detected: data bytes are opaque).
func TestTruncatedAndCorrupted(t *testing.T) {
	vals := make([]float64, 24)
	for i := range vals {
		vals[i] = float64(i) - 3.5
	}
	good := mustWrite(t, []Tensor{
		{Name: "w", Shape: []int{4, 6}, Values: vals, DType: F64},
		{Name: "v", Shape: []int{24}, Values: vals, DType: BF16},
	}, map[string]string{"k": "v"})
	for n := 0; n < len(good); n++ {
		if _, err := Parse("trunc", good[:n]); err == nil {
			t.Fatalf("truncated to %d of %d bytes: no error", n, len(good))
		}
	}
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 3000; i++ {
		b := append([]byte(nil), good...)
		for j := 0; j < 1+rng.Intn(4); j++ {
			b[rng.Intn(len(b))] = byte(rng.Intn(256))
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("panic on corrupted input %d: %v", i, r)
				}
			}()
			f, err := Parse("corrupt", b)
			if err != nil {
				return
			}
			for _, n := range f.Names() {
				f.ReadFloat64(n)
				f.ReadFloat32(n)
			}
		}()
	}
}

func TestWriteFileAtomicAndCheckpointIndex(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "model-00001-of-00002.safetensors")
	b := filepath.Join(dir, "model-00002-of-00002.safetensors")
	if err := WriteFile(a, []Tensor{{Name: "x", Shape: []int{2}, Values: []float32{1, 2}}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(b, []Tensor{{Name: "y", Shape: []int{1}, Values: []float64{3}, DType: F64}}, nil); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Fatalf("temporary files left: %v", ents)
	}
	// Folder without index: both files merged.
	c, err := OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Names(), ","); got != "x,y" {
		t.Errorf("names %s", got)
	}
	c.Close()
	// With an index.
	idx, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 12},
		"weight_map": map[string]string{"x": filepath.Base(a), "y": filepath.Base(b)}})
	if err := os.WriteFile(filepath.Join(dir, IndexFileName), idx, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, filepath.Join(dir, IndexFileName)} {
		c, err := OpenCheckpoint(p)
		if err != nil {
			t.Fatal(err)
		}
		y, _, err := c.ReadFloat64("y")
		if err != nil || y[0] != 3 {
			t.Fatalf("y = %v, %v", y, err)
		}
		x, _, err := c.ReadFloat32("x")
		if err != nil || x[1] != 2 {
			t.Fatalf("x = %v, %v", x, err)
		}
		if _, _, err := c.ReadFloat64("z"); err == nil {
			t.Error("missing name read")
		}
		c.Close()
	}
	// An index pointing at a file that lacks the tensor, or outside the folder.
	bad, _ := json.Marshal(map[string]any{"weight_map": map[string]string{"y": filepath.Base(a)}})
	os.WriteFile(filepath.Join(dir, "bad.json"), bad, 0o644)
	c, err = OpenCheckpoint(filepath.Join(dir, "bad.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadFloat64("y"); err == nil {
		t.Error("index mismatch not detected")
	}
	c.Close()
	esc, _ := json.Marshal(map[string]any{"weight_map": map[string]string{"y": "../x.safetensors"}})
	os.WriteFile(filepath.Join(dir, "esc.json"), esc, 0o644)
	if _, err := OpenCheckpoint(filepath.Join(dir, "esc.json")); err == nil {
		t.Error("index escaping its folder accepted")
	}
	if _, err := OpenCheckpoint(filepath.Join(dir, "missing.safetensors")); err == nil {
		t.Error("missing file opened")
	}
}

// TestIntegerTensors: I32 and I64 tensors round-trip through Write and ReadInt64; float values cannot
// be stored as integers, nor integers that do not fit I32.
func TestIntegerTensors(t *testing.T) {
	var buf bytes.Buffer
	ts := []Tensor{
		{Name: "a", Shape: []int{2, 2}, Values: []int32{1, -2, 3, math.MaxInt32}},
		{Name: "b", Shape: []int{3}, Values: []int64{-1 << 40, 0, 7}},
		{Name: "c", Shape: []int{2}, Values: []int64{5, -6}, DType: I32},
	}
	if err := Write(&buf, ts, nil); err != nil {
		t.Fatal(err)
	}
	f, err := Parse("mem", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		dt   DType
		want []int64
	}{{"a", I32, []int64{1, -2, 3, math.MaxInt32}}, {"b", I64, []int64{-1 << 40, 0, 7}}, {"c", I32, []int64{5, -6}}} {
		if info, _ := f.Info(c.name); info.DType != c.dt {
			t.Errorf("%s stored as %s, want %s", c.name, info.DType, c.dt)
		}
		got, _, err := f.ReadInt64(c.name)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("ReadInt64(%s) = %v, %v; want %v", c.name, got, err, c.want)
		}
	}
	for _, bad := range []Tensor{
		{Name: "x", Shape: []int{1}, Values: []int64{1 << 40}, DType: I32},
		{Name: "y", Shape: []int{1}, Values: []float32{1}, DType: I64},
		{Name: "z", Shape: []int{1}, Values: []int32{1}, DType: F32},
	} {
		if err := Write(&bytes.Buffer{}, []Tensor{bad}, nil); err == nil {
			t.Errorf("Write(%+v) succeeded", bad)
		}
	}
	if _, _, err := f.ReadInt64("missing"); err == nil {
		t.Error("ReadInt64 of a missing tensor succeeded")
	}
}

// TestWriteBF16RoundsOnce writes float64 values one float64 step below bfloat16 ties: rounding through
// float32 would land on the tie and round it to even (up, for these), one bfloat16 step off; BF16 files
// must hold the once-rounded values (down).
func TestWriteBF16RoundsOnce(t *testing.T) {
	var vals []float64
	var want []uint16
	for _, m := range []int{1, 3, 5, 127} { // odd lower neighbour: the tie rounds up to the even one
		lo := float64(256+2*m) / 256 // the bfloat16 value 1 + m/128
		tie := lo + 1.0/256
		vals = append(vals, math.Nextafter(tie, 0))
		want = append(want, Float32ToBF16(float32(lo)))
		if Float32ToBF16(float32(math.Nextafter(tie, 0))) == want[len(want)-1] {
			t.Fatalf("m=%d: rounding through float32 gives the right answer; the case does not test double rounding", m)
		}
	}
	var buf bytes.Buffer
	if err := Write(&buf, []Tensor{{Name: "x", Shape: []int{len(vals)}, Values: vals, DType: BF16}}, nil); err != nil {
		t.Fatal(err)
	}
	f, err := Parse("mem", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := f.ReadBF16("x")
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if uint16(got[i]) != want[i] {
			t.Errorf("value %v stored as %#04x, want %#04x", vals[i], uint16(got[i]), want[i])
		}
	}
}
