package cudaops

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// committedPTX reads the committed family modules (the files the tagged build embeds).
func committedPTX(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob("ptx/*.ptx")
	if err != nil || len(files) == 0 {
		t.Fatalf("no committed PTX under cudaops/ptx (%v)", err)
	}
	out := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[f] = string(b)
	}
	return out
}

// TestKernelSigsMatchCommittedPTX: every kernel of the committed PTX is declared in kernel_sigs.go
// with its exact parameter list, and every declared kernel exists (what Open checks on a GPU).
func TestKernelSigsMatchCommittedPTX(t *testing.T) {
	sigs, err := parseKernelSigs(kernelSigs)
	if err != nil {
		t.Fatal(err)
	}
	mods := committedPTX(t)
	if err := checkKernelPTX(sigs, mods); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, src := range mods {
		es, err := parsePTXEntries(src)
		if err != nil {
			t.Fatal(err)
		}
		n += len(es)
	}
	if n != len(sigs) || n < 90 {
		t.Errorf("%d kernels in the PTX, %d declared", n, len(sigs))
	}
}

// TestKernelSigsCatchEditedPTX: the check sees a parameter whose width changed, a parameter added, and a
// kernel renamed, in the real route module, and names kernel and parameter.
func TestKernelSigsCatchEditedPTX(t *testing.T) {
	sigs, err := parseKernelSigs(kernelSigs)
	if err != nil {
		t.Fatal(err)
	}
	base := committedPTX(t)
	route := base["ptx/route.ptx"]
	const p3 = "\t.param .u32 route_f32_param_3,\n"
	if !strings.Contains(route, p3) {
		t.Fatalf("route.ptx no longer has %q", p3)
	}
	for _, c := range []struct {
		name, edited string
		want         []string
	}{
		{"width", strings.Replace(route, p3, "\t.param .u64 route_f32_param_3,\n", 1),
			[]string{"kernel route_f32 (ptx/route.ptx): parameter 3 (numTokens) is declared i32, the PTX has .u64"}},
		{"float class", strings.Replace(route, "\t.param .f64 route_f32_param_7,", "\t.param .u64 route_f32_param_7,", 1),
			[]string{"parameter 7 (scale) is declared f64, the PTX has .u64"}},
		{"count", strings.Replace(route, p3, p3+"\t.param .u32 route_f32_param_extra,\n", 1),
			[]string{"kernel route_f32 (ptx/route.ptx): the PTX has 10 parameters", "the declaration 9"}},
		{"renamed", strings.Replace(route, ".entry route_f32(", ".entry route2_f32(", 1),
			[]string{"route2_f32(p0 ptr, p1 ptr, p2 ptr, p3 i32, p4 i32, p5 i32, p6 i32, p7 f64, p8 ptr)    # ptx/route.ptx",
				"kernel route_f32 is declared but is in no module"}},
	} {
		mods := map[string]string{}
		for k, v := range base {
			mods[k] = v
		}
		mods["ptx/route.ptx"] = c.edited
		err := checkKernelPTX(sigs, mods)
		var me *sigMismatchError
		if !errors.As(err, &me) {
			t.Errorf("%s: got %v, want a mismatch", c.name, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error does not say %q:\n%v", c.name, w, err)
			}
		}
	}
}

// TestCheckKernelPTXListsEveryDifference: one error names every undeclared kernel (with a draft
// declaration) and every other difference.
func TestCheckKernelPTXListsEveryDifference(t *testing.T) {
	sigs, err := parseKernelSigs(`
a(x ptr, n i32, s f64, fault fault)
b(x ptr)
gone(x ptr)
dup(x ptr)
`)
	if err != nil {
		t.Fatal(err)
	}
	m1 := `
.version 7.8
	// .globl	a
.visible .entry a(
	.param .u64 a_param_0,
	.param .u64 a_param_1,
	.param .f64 a_param_2,
	.param .u64 a_param_3
)
{
	ret;
}
.visible .entry new_one(
	.param .u64 .ptr .global .align 4 new_one_param_0,
	.param .u32 new_one_param_1,
	.param .f32 new_one_param_2,
	.param .align 8 .b8 new_one_param_3[24]
)
{
}
.visible .entry dup(
	.param .u64 dup_param_0
)
{
}
`
	m2 := `
.entry b()
{
}
.visible .entry new_two(
	.param .f64 new_two_param_0
)
{
}
.visible .entry dup(
	.param .u64 dup_param_0
)
{
}
`
	err = checkKernelPTX(sigs, map[string]string{"m1.ptx": m1, "m2.ptx": m2})
	var me *sigMismatchError
	if !errors.As(err, &me) {
		t.Fatalf("got %v, want a mismatch", err)
	}
	wantUndeclared := []string{
		"new_one(p0 ptr, p1 i32, p2 f32, p3 ?.b8[24])    # m1.ptx",
		"new_two(p0 f64)    # m2.ptx",
	}
	if !reflect.DeepEqual(me.undeclared, wantUndeclared) {
		t.Errorf("undeclared %q, want %q", me.undeclared, wantUndeclared)
	}
	for _, w := range []string{
		"2 kernel(s) in the PTX are not declared",
		"kernel a (m1.ptx): parameter 1 (n) is declared i32, the PTX has .u64",
		"kernel b (m2.ptx): the PTX has 0 parameters (), the declaration 1: b(x ptr)",
		"kernel dup is defined in m1.ptx and m2.ptx",
		"kernel gone is declared but is in no module",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not say %q:\n%v", w, err)
		}
	}
	if len(me.problems) != 4 {
		t.Errorf("problems %q, want 4", me.problems)
	}
}

func TestParseKernelSigs(t *testing.T) {
	sigs, err := parseKernelSigs(`
# comment
k_{f32,f64}_{v2,v4}(x ptr, n i64, d[3] i32, fault fault)
plain()
`)
	if err != nil {
		t.Fatal(err)
	}
	if got := sigs.names(); !reflect.DeepEqual(got, []string{"k_f32_v2", "k_f32_v4", "k_f64_v2", "k_f64_v4", "plain"}) {
		t.Errorf("names %v", got)
	}
	k := sigs["k_f64_v2"]
	if got := k.String(); got != "k_f64_v2(x ptr, n i64, d0 i32, d1 i32, d2 i32, fault fault)" || k.fault != 5 {
		t.Errorf("%s, fault %d", got, k.fault)
	}
	if p := sigs["plain"]; len(p.params) != 0 || p.fault != -1 {
		t.Errorf("plain: %v", p)
	}
	for _, bad := range []string{
		"k(x ptr",
		"k(x pointer)",
		"k(x)",
		"k(x ptr, x i32)",
		"k(a fault, b fault)",
		"k_{a,}(x ptr)",
		"k_{a(x ptr)",
		"1k(x ptr)",
		"k(x ptr)\nk(y ptr)",
		"k_{f32,f64}(x ptr)\nk_f32(y ptr)",
	} {
		if _, err := parseKernelSigs(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	// Every bad line is reported at once.
	_, err = parseKernelSigs("a(x nope)\nb(y nope)")
	if err == nil || !strings.Contains(err.Error(), "line 1") || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("error %v does not name both lines", err)
	}
}

// TestBindChecksArguments: a launch's arguments are checked against the declaration before the driver
// sees them, and laid out as the driver reads them.
func TestBindChecksArguments(t *testing.T) {
	sigs, err := parseKernelSigs("k(x ptr, n i32, m i64, s f64, h f32, u u32, v u64, fault fault)")
	if err != nil {
		t.Fatal(err)
	}
	k := sigs["k"]
	const base, word = 0x7000, 0x7010
	good := []arg{rawPtrArg(0x1234), i32(-2), i64(-3), f64(1.5), f32(0.25), u32(7), u64(1 << 40), faultArg()}
	words, err := k.bind(good, base, word, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []uint64{0x1234, 0xfffffffe, uint64(math.MaxUint64 - 2), math.Float64bits(1.5), uint64(math.Float32bits(0.25)), 7, 1 << 40, word}
	if !reflect.DeepEqual(words, want) {
		t.Errorf("words %#x, want %#x", words, want)
	}
	// The fault block's address passed as a pointer also gets the kernel's own word.
	withBase := append(append([]arg{}, good[:7]...), rawPtrArg(base))
	if words, err := k.bind(withBase, base, word, words); err != nil || words[7] != word {
		t.Errorf("fault block as a pointer: %#x, %v", words, err)
	}
	for _, c := range []struct {
		name string
		args []arg
		want string
	}{
		{"count", good[:7], "takes 8 parameters, the launcher passed 7"},
		{"kind", []arg{rawPtrArg(1), i64(2), i64(3), f64(1), f32(1), u32(1), u64(1), faultArg()}, "parameter 1 (n i32): the launcher passed i64 2: wrong kind"},
		{"order", []arg{rawPtrArg(1), i32(2), f64(1), i64(3), f32(1), u32(1), u64(1), faultArg()}, "parameter 2 (m i64)"},
		{"range", []arg{rawPtrArg(1), i32(1 << 31), i64(3), f64(1), f32(1), u32(1), u64(1), faultArg()}, "out of the range of int"},
		{"other pointer as fault", append(append([]arg{}, good[:7]...), rawPtrArg(0x1234)), "a pointer other than the fault block"},
		{"fault elsewhere", []arg{faultArg(), i32(2), i64(3), f64(1), f32(1), u32(1), u64(1), faultArg()}, "parameter 0 (x ptr)"},
	} {
		_, err := k.bind(c.args, base, word, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
}
