package cudaops

import (
	"errors"
	"strings"
	"testing"

	"github.com/expertrt/expertrt-go/ops"
)

// TestOptions: options apply in order over a base, are validated (ops.ErrConfig), and print what
// differs from the defaults.
func TestOptions(t *testing.T) {
	variants := []string{"f32_a", "tf32_b"}
	o, err := Options{}.apply(variants, WithPlanMode(PlanMultiLaunch), WithPlanBlocks(4), WithSyncChecks(true), WithTF32(true),
		WithGemmVariant("tf32_b"), WithStreamingDispatchStores(true), WithGemmSplits(3), WithGemmStreamK(true), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Options{PlanMode: PlanMultiLaunch, PlanBlocks: 4, StreamingDispatchStores: true, SyncChecks: true, TF32: true, GemmVariant: "tf32_b", GemmSplits: 3, GemmStreamK: true}
	if o != want {
		t.Errorf("got %+v, want %+v", o, want)
	}
	if s := o.String(); s != "plan multi-launch, plan blocks 4, streaming dispatch stores, sync checks, tf32, gemm tf32_b, gemm splits 3, gemm stream-K" {
		t.Errorf("String: %q", s)
	}
	if s := (Options{}).String(); s != "defaults" {
		t.Errorf("String of the defaults: %q", s)
	}
	// A derived handle keeps the base's options it does not set; WithOptions replaces all of them.
	if d, err := o.apply(variants, WithGemmVariant(""), WithSyncChecks(false)); err != nil || d.TF32 != true || d.GemmVariant != "" || d.SyncChecks {
		t.Errorf("derived: %+v, %v", d, err)
	}
	if d, err := o.apply(variants, WithOptions(Options{PlanBlocks: 2})); err != nil || d != (Options{PlanBlocks: 2}) {
		t.Errorf("WithOptions: %+v, %v", d, err)
	}
	for _, c := range []struct {
		opt  Option
		want string
	}{
		{WithPlanMode(PlanMode(7)), "unknown plan mode 7"},
		{WithPlanBlocks(-1), "PlanBlocks -1"},
		{WithGemmVariant("nope"), `no GEMM variant "nope" (gemm.variants: f32_a, tf32_b)`},
		{WithGemmSplits(-1), "GemmSplits -1"},
		{WithGemmSplits(65), "GemmSplits 65"},
	} {
		if _, err := (Options{}).apply(variants, c.opt); !errors.Is(err, ops.ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v, want ErrConfig saying %q", err, c.want)
		}
	}
}
