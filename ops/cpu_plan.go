package ops

import (
	"gorgonia.org/tensor"
)

// Plan is a counting sort of the T*K slots by expert. It is sequential: it touches 2*T*K + 2*E ints,
// far less than any row copy that follows it.
func (cpuBackend) Plan(idx *tensor.Dense, numExperts int, plan *tensor.Dense) error {
	sel, err := int32s(idx)
	if err != nil {
		return errorf("plan: indices: %w", err)
	}
	p, err := int32s(plan)
	if err != nil {
		return errorf("plan: %w", err)
	}
	nT, k := idx.Shape()[0], idx.Shape()[1]
	if err := checkSizes("plan", nT, k, numExperts, 1); err != nil {
		return err
	}
	v, err := NewPlanView(p, nT, k, numExperts)
	if err != nil {
		return err
	}
	if err := checkIndices("plan", sel, numExperts); err != nil {
		return err
	}
	clear(v.Counts)
	for _, e := range sel {
		v.Counts[e]++
	}
	v.Offsets[0] = 0
	for e := 0; e < numExperts; e++ {
		v.Offsets[e+1] = v.Offsets[e] + v.Counts[e]
	}
	cursor := make([]int32, numExperts)
	copy(cursor, v.Offsets[:numExperts])
	for s, e := range sel {
		r := cursor[e]
		cursor[e]++
		v.RowOf[s] = r
		v.SlotOf[r] = int32(s)
	}
	return nil
}
