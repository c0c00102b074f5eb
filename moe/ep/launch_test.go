package ep_test

import (
	"errors"
	"testing"

	"github.com/expertrt/expertrt-go/moe/ep"
	"github.com/expertrt/expertrt-go/ops"
)

func TestLaunchFromEnv(t *testing.T) {
	for _, k := range []string{"RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"} {
		t.Setenv(k, "")
	}
	if _, ok, err := ep.LaunchFromEnv(); ok || err != nil {
		t.Fatalf("no variables: ok=%t err=%v", ok, err)
	}
	t.Setenv("RANK", "3")
	t.Setenv("WORLD_SIZE", "8")
	l, ok, err := ep.LaunchFromEnv()
	if !ok || err != nil || l != (ep.Launch{Rank: 3, World: 8, LocalRank: 3}) {
		t.Fatalf("torchrun variables: %+v %t %v", l, ok, err)
	}
	t.Setenv("LOCAL_RANK", "1")
	if l, _, _ := ep.LaunchFromEnv(); l.LocalRank != 1 {
		t.Fatalf("LOCAL_RANK: %+v", l)
	}
	for _, bad := range [][2]string{{"8", "8"}, {"-1", "8"}, {"x", "8"}, {"1", ""}} {
		t.Setenv("RANK", bad[0])
		t.Setenv("WORLD_SIZE", bad[1])
		t.Setenv("LOCAL_RANK", "")
		if _, ok, err := ep.LaunchFromEnv(); !ok || !errors.Is(err, ops.ErrConfig) {
			t.Fatalf("RANK=%s WORLD_SIZE=%s: ok=%t err=%v, want ErrConfig", bad[0], bad[1], ok, err)
		}
	}
	t.Setenv("RANK", "")
	t.Setenv("WORLD_SIZE", "")
	t.Setenv("OMPI_COMM_WORLD_RANK", "1")
	t.Setenv("OMPI_COMM_WORLD_SIZE", "2")
	if l, ok, err := ep.LaunchFromEnv(); !ok || err != nil || l.Rank != 1 || l.World != 2 {
		t.Fatalf("Open MPI variables: %+v %t %v", l, ok, err)
	}
}
