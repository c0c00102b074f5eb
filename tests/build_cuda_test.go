//go:build expertrt_cuda

package tests

// cudaBuild reports whether this test binary holds the GPU tests (build tag expertrt_cuda).
const cudaBuild = true
