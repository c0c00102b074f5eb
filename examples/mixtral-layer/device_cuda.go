//go:build expertrt_cuda

package main

// Linking cudaops registers the "cuda" backend (device 0) with ops, so -device cuda finds it.
import _ "github.com/expertrt/expertrt-go/cudaops"
