package cudaops

// kernelSigs declares every kernel of the embedded modules (ptx/*.ptx): one line per kernel, or per
// family of instantiations, with the parameters in the order and with the types of its extern "C"
// signature in the .cu file. Device.Open checks the PTX .entry of every kernel against this list and
// refuses to open on any difference (a kernel in the PTX that is not declared, a declared kernel that
// is missing, a parameter count, order or width that differs); the untagged unit test does the same
// over the committed PTX, so CPU CI sees it. Every launch passes its arguments through the declaration
// (Device.launch): count, order and kind are checked before the driver sees them; an untagged test
// (launchsites_test.go) reads every launch site of the source and checks the same without a GPU.
//
// Syntax: name(param kind, ...). A name part {a,b,...} expands to one kernel per alternative
// (route_{f32,f64} is route_f32 and route_f64); param[N] kind is N parameters param0..param{N-1}.
// Kinds and the C types they stand for:
//
//	ptr    any pointer (T*, const T*, void*)                 PTX .u64
//	fault  unsigned int* fault: the device fault word          PTX .u64 (the launcher passes the kernel's own slot)
//	i32    int                                               PTX .u32/.s32/.b32
//	u32    unsigned int                                      PTX .u32/.s32/.b32
//	i64    long long                                         PTX .u64/.s64/.b64
//	u64    unsigned long long                                PTX .u64/.s64/.b64
//	f32    float                                             PTX .f32
//	f64    double                                            PTX .f64
//
// Adding a kernel to a .cu file means adding its line here (the error of a missing one prints a draft).
const kernelSigs = `
# route.cu
route_{f32,f64}(logits ptr, idx ptr, w ptr, numTokens i32, E i32, K i32, fullSoftmax i32, scale f64, fault fault)
route_sigmoid_{f32,f64}(logits ptr, bias ptr, idx ptr, w ptr, numTokens i32, E i32, K i32, renorm i32, scale f64, G i32, TG i32, exclude i32, fault fault)
route_weights_{f32,f64}(logits ptr, idx ptr, w ptr, numTokens i32, E i32, K i32, mode i32, scale f64, fault fault)
route_weights_grad_{f32,f64}(logits ptr, idx ptr, dw ptr, dlogits ptr, numTokens i32, E i32, K i32, mode i32, scale f64, fault fault)

# plan.cu
plan_count(idx ptr, N i32, E i32, chunk i32, numChunks i32, scratch ptr, fault fault)
plan_scan(scratch ptr, numChunks i32, E i32, N i32, counts ptr, offsets ptr)
plan_scatter(idx ptr, N i32, E i32, chunk i32, numChunks i32, scratch ptr, rowOf ptr, slotOf ptr)
plan_onepass(idx ptr, N i32, E i32, rounds i32, scratch ptr, counts ptr, offsets ptr, rowOf ptr, slotOf ptr, fault fault, bar ptr)

# permute.cu
dispatch_{f32,f32_v4,f64,f64_v2}(x ptr, w ptr, rowOf ptr, kept ptr, out ptr, numTokens i32, K i32, nv i32, keep i32)
combine_{f32,f32_v4,f64,f64_v2}(ye ptr, w ptr, rowOf ptr, kept ptr, out ptr, numTokens i32, K i32, nv i32)
combine_bwd_{f32,f32_v4,f64,f64_v2}(dy ptr, ye ptr, w ptr, rowOf ptr, kept ptr, dw ptr, dye ptr, numTokens i32, K i32, nv i32)

# losses.cu
lbl_counts(planCounts ptr, offsets ptr, slotOf ptr, mask ptr, numTokens i32, K i32, E i32, C ptr)
softmax_stats_{f32,f64}(logits ptr, mask ptr, numTokens i32, E i32, m ptr, s ptr, fault fault)
col_prob_sum_{f32,f64}(logits ptr, m ptr, s ptr, mask ptr, numTokens i32, E i32, P ptr)
lbl_finish_{f32,f64}(P ptr, C ptr, E i32, coef f64, out ptr)
lbl_grad_{f32,f64}(logits ptr, C ptr, mask ptr, numTokens i32, E i32, scale f64, g ptr, dlogits ptr, fault fault)
scaled_mean_{f32,f64}(in ptr, n i64, coef f64, out ptr)
zloss_rows_{f32,f64}(logits ptr, numTokens i32, E i32, sq ptr, fault fault)
zloss_grad_{f32,f64}(logits ptr, numTokens i32, E i32, scale f64, g ptr, dlogits ptr, fault fault)

# policies.cu
cap_offsets(dlCounts ptr, E i32, C i32, counts ptr, offsets ptr, dbase ptr)
cap_scatter_{f32,f64}(dlOffsets ptr, dlSlotOf ptr, w ptr, E i32, C i32, probs i32, offsets ptr, dbase ptr, rowOf ptr, slotOf ptr, fault fault)
clear_rows(rows ptr, kept ptr, N i64, rowWords i64)
balance_bias_{f32,f64}(bias ptr, counts ptr, E i32, slots i64, rate f64)
route_stats_counts(counts ptr, offsets ptr, E i32, N i64, stats ptr)
row_entropy_{f32,f64}(logits ptr, numTokens i32, E i32, sigmoid i32, ent ptr, fault fault)

# task_losses.cu
mse_partial_{f32,f64}(p ptr, t ptr, n i64, partial ptr)
mean_finish_{f32,f64}(partial ptr, parts i32, n i64, loss ptr)
mse_grad_{f32,f64}(p ptr, t ptr, n i64, scale f64, g ptr, dp ptr)
ce_count(labels ptr, N i64, C i32, count ptr)
ce_rows_{f32,f64}(logits ptr, labels ptr, N i64, C i32, rowLoss ptr, rowCount ptr, fault fault)
ce_finish_{f32,f64}(rowLoss ptr, rowCount ptr, N i64, loss ptr)
ce_grad_{f32,f64}(logits ptr, labels ptr, N i64, C i32, scale f64, g ptr, count ptr, dl ptr, fault fault)

# optim.cu
sumsq_partial_{f32,f64}(g ptr, n i64, partial ptr, fault fault)
norm_scale_finish(partial ptr, parts i32, maxNorm f64, scale ptr)
adam_{f32,f64}(p ptr, g ptr, m ptr, v ptr, n i64, lr f64, b1 f64, b2 f64, eps f64, wd f64, decoupled i32, bc1 f64, bc2 f64, clip ptr)
sgd_{f32,f64}(p ptr, g ptr, buf ptr, n i64, lr f64, mom f64, wd f64, nesterov i32, clip ptr)

# elementwise.cu (the tensor engine's kernels, SwiGLU)
ew_{add,sub,mul,div}_{f32,f64}(a ptr, am i32, aimm f64, b ptr, bm i32, bimm f64, out ptr, n i64, incr i32, vec i32)
ew_cmp_{f32,f64}(op i32, a ptr, am i32, aimm f64, b ptr, bm i32, bimm f64, out ptr, n i64, boolOut i32)
ew_unary_{f32,f64}(op i32, a ptr, out ptr, n i64, incr i32, vec i32)
sum_rows_{f32,f64}(a ptr, out ptr, outer i64, mid i64)
sum_inner_{f32,f64}(a ptr, out ptr, outer i64, mid i64, inner i64)
permute_{u8,u16,u32,u64}(dst ptr, src ptr, n i64, nd i32, d[8] i64, s[8] i64)
copy2d_{u8,u16,u32,u64}(dst ptr, dp i64, src ptr, sp i64, rows i64, cols i64)
swiglu_{f32,f64}(gate ptr, up ptr, out ptr, n i64, vec i32)
swiglu_grad_{f32,f64}(gate ptr, up ptr, dout ptr, dgate ptr, dup ptr, n i64, vec i32)

# bf16.cu (bfloat16 storage: casts, engine Add, permutations, SwiGLU)
cast_{f32_bf16,f64_bf16,bf16_f32,bf16_f64,f32_f64,f64_f32}(src ptr, dst ptr, n i64, vec i32)
ew_add_bf16(a ptr, b ptr, out ptr, n i64, incr i32, vec i32)
dispatch_bf16_from_{bf16,bf16_v8,f32,f32_v8}(x ptr, w ptr, rowOf ptr, kept ptr, out ptr, numTokens i32, K i32, H i32, keep i32)
combine_bf16_to_{bf16,bf16_v8,f32,f32_v8}(ye ptr, w ptr, rowOf ptr, kept ptr, out ptr, numTokens i32, K i32, H i32)
combine_gradw_bf16_dy_{bf16,bf16_v8,f32,f32_v8}(dy ptr, ye ptr, rowOf ptr, kept ptr, dw ptr, numTokens i32, K i32, H i32)
swiglu_bf16(gate ptr, up ptr, out ptr, n i64, vec i32)
swiglu_grad_bf16(gate ptr, up ptr, dout ptr, dgate ptr, dup ptr, n i64, vec i32)

# util.cu
fill_u64(p ptr, n i64, v u64)
spin_ns(ns u64)
`
