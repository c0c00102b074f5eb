package ops

// The routing plan is one flat int32 vector of PlanLen(T, K, E) elements, laid out as four sections:
//
//	[0, E)                       counts[e]   rows routed to expert e
//	[E, 2E+1)                    offsets[e]  first expert-major row of expert e; offsets[E] = T*K
//	[2E+1, 2E+1+T*K)             rowOf[s]    expert-major row of slot s = t*K + j
//	[2E+1+T*K, 2E+1+2*T*K)       slotOf[r]   slot s = t*K + j held by expert-major row r
//
// Rows of one expert are contiguous and in increasing slot order (stable: token order, then j).
// rowOf and slotOf are inverse permutations of [0, T*K).

// PlanLen is the number of int32 elements of a plan for T tokens, K experts per token and E experts.
func PlanLen(t, k, e int) int { return 2*e + 1 + 2*t*k }

// PlanView gives named access to the sections of a plan held in host memory.
type PlanView struct {
	T, K, E int
	Counts  []int32 // [E]
	Offsets []int32 // [E+1]
	RowOf   []int32 // [T*K]
	SlotOf  []int32 // [T*K]
}

// NewPlanView splits a host plan vector into its sections.
func NewPlanView(plan []int32, t, k, e int) (PlanView, error) {
	if len(plan) != PlanLen(t, k, e) {
		return PlanView{}, failf(ErrShape, "plan has %d elements, want 2E+1+2TK = %d for T=%d, K=%d, E=%d",
			len(plan), PlanLen(t, k, e), t, k, e)
	}
	n := t * k
	return PlanView{
		T: t, K: k, E: e,
		Counts:  plan[0:e:e],
		Offsets: plan[e : 2*e+1 : 2*e+1],
		RowOf:   plan[2*e+1 : 2*e+1+n : 2*e+1+n],
		SlotOf:  plan[2*e+1+n : 2*e+1+2*n : 2*e+1+2*n],
	}, nil
}
