// Package devengine is the device-independent half of a gorgonia.org/tensor engine over device memory:
// the memory pool (size classes, caching, training-step scopes, reclaiming tensors awaiting the garbage
// collector, generation-tagged addresses) and the engine glue (option parsing, operand checks by
// address, output selection) of tensor's arithmetic interfaces, parameterised by a small Kernels
// interface. The CUDA backend (package cudaops, build tag expertrt_cuda) and the simulated device of the
// tests (package tests/simdevice) run the very same glue over their own kernels; nothing here imports
// gorgonia.org/cu.
//
// # Addresses
//
// Every block the pool hands out for tensors carries a generation tag in the address bits 48..62 (which
// are zero in user-space addresses on every supported platform): address = real | tag<<48. The tag
// changes each time the block is handed out again, so a tensor whose memory was released (freed, or
// its training step ended) is recognised by address alone — it names a block whose tag differs — and
// every operand check reports ErrReleased instead of reading whatever now lives there. A tagged address
// is also never a valid host address: host code that dereferences it faults at once. Kernels get the
// real address (Pool.Resolve strips the tag after checking it). A stale tensor is mistaken for a live
// one only when its block was handed out again a multiple of 32767 times since.
//
// # Memory lifetime
//
// Outside a training step, a tensor made by Engine.NewDense owns its memory until the tensor is
// garbage-collected or freed (Engine.Free, the backends' Free); memory from Engine.Alloc (the tensor
// package's own allocations, e.g. Clone) lives until Free. Between Pool.BeginStep and Pool.EndStep,
// every allocation (NewDense, Alloc, a backend's New and FromHost, the engine's results) belongs to the
// step and goes back to the pool at EndStep, except blocks passed to Persist. When the device runs out
// of memory the pool runs the garbage collector, takes back the blocks of tensors that became
// unreachable, and retries; then it returns its cached blocks to the device and retries once more.
//
// # Arithmetic
//
// Engine implements Add for bfloat16 device tensors (the gradient sums of mixed-precision graphs; each
// sum rounded once, as ops.HostEngine) and, for float32 and float64 device tensors: Adder, Suber,
// Muler, Diver (and their Scalar variants), Neger, Inver, Squarer, Cuber, Exper, Tanher, Loger,
// Log2er, Log10er, Sqrter, Cbrter, InvSqrter, Abser, Signer, Gter, Gteer, Lter, Lteer, ElEqer, Sumer, Transposer, Concater and a
// Mapper that recognises the Go functions Gorgonia applies through Map (sigmoid, softplus, log1p,
// expm1, sin, cos, ceil, floor and the math/math32 functions behind the interfaces above) by name and
// refuses any other function. Options follow tensor's StdEng: WithIncr (adds into the given tensor) takes
// precedence over WithReuse (writes into it), then UseUnsafe (writes into the first operand), else a new
// device tensor; comparisons return Bool tensors unless AsSameType or UseUnsafe asks for 1/0 in the
// operands' dtype. Where StdEng has quirks (Map with a reuse tensor maps the reuse tensor's old
// contents; comparisons treat an incr tensor as a reuse tensor) the documented meaning is implemented:
// see the method docs. Every operand and every reuse/incr tensor must be live memory of this engine's
// device, checked by address; a host buffer (Gorgonia labels its host values with the machine's engine)
// gets an error wrapping ops.ErrMixedBackends and never reaches a kernel.
package devengine
