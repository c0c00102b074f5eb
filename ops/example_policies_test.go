package ops_test

import (
	"fmt"
	"log"

	"github.com/expertrt/expertrt-go/ops"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// DeepSeek-V3 routing of four tokens over eight experts in four groups: sigmoid scores plus a
// selection bias choose the experts (two of the four groups per token, then the top 2), the weights are
// the unbiased scores normalised and scaled; a capacity of one slot per expert drops the later slots of busier experts. The
// diagnostics and one step of aux-loss-free balancing follow the run.
func ExampleRouteBiased() {
	g := G.NewGraph()
	logits := G.NewMatrix(g, tensor.Float64, G.WithShape(4, 8), G.WithName("logits"),
		G.WithValue(tensor.New(tensor.WithShape(4, 8), tensor.WithBacking([]float64{
			0, 1, 2, -1, 3, -2, 0.5, 1.5,
			2, 2, 0, 0, -1, -1, 1, 0,
			-1, 0, 3, 1, 0, 2, -2, 1,
			1, 0, 2, 2, 0, 1, 3, -1,
		}))))
	bias := G.NewVector(g, tensor.Float64, G.WithShape(8), G.WithName("bias"),
		G.WithValue(tensor.New(tensor.WithShape(8), tensor.WithBacking([]float64{0, 0, 0, 0, 0, 0, 0.1, 0}))))
	cfg := ops.RouteConfig{K: 2, Scoring: ops.Sigmoid, Renormalize: true, Groups: 4, TopKGroups: 2, Scale: 2.5,
		Capacity: 1, DropPolicy: ops.DropPosition}
	r, err := ops.RouteBiased(logits, bias, cfg)
	if err != nil {
		log.Fatal(err)
	}
	stats, err := ops.RoutingStatsOf(r)
	if err != nil {
		log.Fatal(err)
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := ops.RunAll(m); err != nil {
		log.Fatal(err)
	}
	fmt.Println("experts:", r.Indices.Value().Data())
	fmt.Printf("weights: %.4f\n", r.Weights.Value().Data())
	plan, err := ops.NewPlanView(r.Plan.Value().Data().([]int32), 4, 2, 8)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("dropped slots:", plan.DroppedSlots())
	st, err := ops.ReadRoutingStats(stats.Value(), 4, 2)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("routed per expert:", st.Counts, "kept:", st.Kept)
	if err := r.UpdateBias(0.01); err != nil { // bias[e] += 0.01 * sign(mean load - load)
		log.Fatal(err)
	}
	fmt.Printf("bias: %.2f\n", bias.Value().Data())
	// Output:
	// experts: [7 1 0 1 2 5 6 2]
	// weights: [1.3198 1.1802 1.2500 1.2500 1.2989 1.2011 1.2989 1.2011]
	// dropped slots: 2
	// routed per expert: [1 2 2 0 0 1 1 1] kept: [1 1 1 0 0 1 1 1]
	// bias: [0.00 -0.01 -0.01 0.01 0.01 0.00 0.10 0.00]
}
