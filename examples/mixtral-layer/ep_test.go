package main

import "testing"

// TestEPTrainingMatchesSingleRank trains with 1, 2 and 4 in-process ranks and -check: the loss curve of
// every step must equal the single-rank layer's on the same batches (float64, 1e-9).
func TestEPTrainingMatchesSingleRank(t *testing.T) {
	for _, w := range []string{"1", "2", "4"} {
		if err := runEP([]string{"-expert-parallel", w, "-steps", "8", "-tokens", "12", "-hidden", "8", "-ffn", "6",
			"-experts", "8", "-dtype", "float64", "-check", "-json"}); err != nil {
			t.Fatalf("%s ranks: %v", w, err)
		}
	}
}

func TestEPRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-expert-parallel", "3"}, {"-expert-parallel", "0"}, {"-top-k", "9"}, {"-recv-rows", "-1"}, {"-steps", "0"}} {
		if err := runEP(append(args, "-json")); err == nil {
			t.Errorf("runEP(%v) succeeded, want an error", args)
		}
	}
	if !epRequested([]string{"-steps", "3", "-expert-parallel=2"}) || epRequested([]string{"-steps", "3"}) {
		t.Error("epRequested misreads the command line")
	}
}
