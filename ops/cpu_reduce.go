package ops

// reduceBlock is the number of elements of one partial sum. The block sizes of blockSum are fixed by the
// sizes of the data, so a sum's rounding never depends on GOMAXPROCS or scheduling.
const reduceBlock = 1 << 14

// blockSum returns the sum over the blocks [lo, hi) of [0, n) (each block long, the last one shorter)
// of part(lo, hi), adding the partial sums in block order. Blocks run on up to GOMAXPROCS goroutines.
func blockSum(n, block int, part func(lo, hi int) float64) float64 {
	if n <= 0 {
		return 0
	}
	block = max(block, 1)
	blocks := (n + block - 1) / block
	partial := make([]float64, blocks)
	eachTask(blocks, func(b int) { partial[b] = part(b*block, min((b+1)*block, n)) })
	s := 0.0
	for _, p := range partial {
		s += p
	}
	return s
}
