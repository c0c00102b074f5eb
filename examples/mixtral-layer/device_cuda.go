//go:build expertrt_cuda

package main

// Linking cudaops registers a backend per GPU with ops ("cuda:N"; GPU 0's also "cuda"), so -device cuda
// finds it.
import _ "github.com/expertrt/expertrt-go/cudaops"
