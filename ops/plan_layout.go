package ops

// The routing plan is one flat int32 vector of PlanLen(T, K, E) elements, laid out as four sections:
//
//	[0, E)                       counts[e]   slots routed to expert e
//	[E, 2E+1)                    offsets[e]  first expert-major row of expert e; offsets[E] = kept slots
//	[2E+1, 2E+1+T*K)             rowOf[s]    expert-major row of slot s = t*K + j
//	[2E+1+T*K, 2E+1+2*T*K)       slotOf[r]   slot s = t*K + j held by expert-major row r
//
// Rows of one expert are contiguous and in increasing slot order (stable: token order, then j).
// rowOf and slotOf are inverse permutations of [0, T*K).
//
// A dropless plan (PlanOf) keeps every slot: offsets is the exclusive scan of counts and
// offsets[E] = T*K. A capacity plan (CapacityPlanOf) keeps at most C slots per expert: expert e's
// segment [offsets[e], offsets[e+1]) holds its min(counts[e], C) kept slots, offsets[E] is the number of
// kept slots, and the rows [offsets[E], T*K) hold the dropped slots, expert by expert, each expert's in
// increasing slot order. A slot s is dropped exactly when rowOf[s] >= offsets[E]; the kernels give its
// row zeros and leave it out of the combine (and its gradients).

// PlanLen is the number of int32 elements of a plan for T tokens, K experts per token and E experts.
func PlanLen(t, k, e int) int { return 2*e + 1 + 2*t*k }

// PlanView gives named access to the sections of a plan held in host memory.
type PlanView struct {
	T, K, E int
	Counts  []int32 // [E] routed slots per expert
	Offsets []int32 // [E+1] kept segments; Offsets[E] = kept slots
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

// Kept is the number of kept slots of expert e (its segment length).
func (v PlanView) Kept(e int) int { return int(v.Offsets[e+1] - v.Offsets[e]) }

// Dropped reports whether slot s was dropped by a capacity.
func (v PlanView) Dropped(s int) bool { return v.RowOf[s] >= v.Offsets[v.E] }

// DroppedSlots is the number of dropped slots (0 for a dropless plan).
func (v PlanView) DroppedSlots() int { return v.T*v.K - int(v.Offsets[v.E]) }

// DroppedRows returns expert e's rows of dropped slots, [lo, hi) within [Offsets[E], T*K).
func (v PlanView) DroppedRows(e int) (lo, hi int) {
	lo = int(v.Offsets[v.E])
	for i := 0; i < e; i++ {
		lo += int(v.Counts[i]) - v.Kept(i)
	}
	return lo, lo + int(v.Counts[e]) - v.Kept(e)
}
