// How far ahead the one-token (decode) kernels prefetch their weight stream, in bytes: those of
// the interleaved int8/int4 layouts, GGUF-layout Q4_K (mmapped files) and the float
// (F32/BF16/F16) row kernel, and decode attention's KV rows (ops/cpu/kv_rows_simd.h); 0 = no
// software prefetch, the hardware prefetchers alone. (The GGUF-layout Q8_0/Q4_0 kernels keep
// their own: every line 4 KiB ahead into L1, qmatvec_avx512.cpp and qmatvec_avx2.cpp.)
//
// Why it depends on the CPU: one core of a many-core Intel Xeon reads memory at a rate set by how
// many cache-line misses it keeps in flight, and its L2 streamer stops at every 4 KiB boundary;
// a kernel that also does arithmetic between its loads keeps fewer in flight. On the Xeon test VM
// (Emerald Rapids, one thread, 3 x 142-288 MB matrices from huge pages) Q4_0R decode streamed
// 8.7-11.6 GB/s without and 14.3-15.3 GB/s prefetching 4 KiB ahead into L2 (the read probe
// gains 12-15% the same way and has a prefetching loop too); 24-layer decode went from 66-85% to
// 83-98% of that probe, bf16 (8 layers) from 57-60% to 86-89%. On the Zen 4 / Zen 5 test VMs the
// same prefetch made the kernels slower (24 vs 26-28 GB/s), so AMD and other CPUs default to 0,
// except for the Q4_KR kernel, which streamed faster with it on Zen 5, and Q4_0R and Q8_0R, which
// do with demand touches added and their loops rolled (decode_prefetch_default(DType) and
// decode_stream below).
//
// The Intel default was 4 KiB until the int4 loops issued fewer instructions per byte
// (quant/vnni_avx512.h); streaming faster, they need more bytes in flight. Harness as in
// vnni_avx512.h, 11264 x 2048, 2 threads, 4096 -> 8192 bytes: Q4_KR 95.6 -> 100.0% of the probe,
// Q4_0R 97.9 -> 100.1%, Q8_0R 100.0 -> 100.5% (2048 x 5632 Q4_KR 95.8 -> 99.8%); 12288 no better
// at 2 threads. 24-layer decode, distances interleaved in one process: one thread q4_k / q4_0
// 95 -> 97% of the probe, q8_0 98% either way; two threads q4_k +1.5%, q4_0 and q8_0 within
// noise; bf16 (8 layers) 93 -> 96% (one thread), 93 -> 95% (two). The read probe was given the
// longer distance too (cli/cmd_bench_probes.cpp).
//
// JETMOE_PREFETCH=<bytes> (0 .. 65536, a multiple of 64) overrides the default.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ops/cpu/cpu_isa.h"
#include "runtime/dtype.h"

namespace jetmoe {

// Asks for every cache line of [p, p + bytes) (a hint: never faults, so it may run past the end
// of a buffer). Static: the per-ISA files include this with their own -m flags, and an inline
// function with external linkage could reach portable code compiled with them.
template <int kWrite, int kLocality>
static inline void prefetch_lines(const void* p, size_t bytes) {
  const auto begin = reinterpret_cast<uintptr_t>(p);
  for (uintptr_t a = begin & ~uintptr_t{63}; a < begin + bytes; a += 64)
    __builtin_prefetch(reinterpret_cast<const void*>(a), kWrite, kLocality);
}
// Into L2, for reading: streams whose lines a kernel reads soon after.
static inline void prefetch_lines_l2(const void* p, size_t bytes) { prefetch_lines<0, 2>(p, bytes); }
// Into L1, for reading: streams an Ice Lake Xeon asks for into L1 alone (kv_row_prefetch).
static inline void prefetch_lines_l1(const void* p, size_t bytes) { prefetch_lines<0, 3>(p, bytes); }
// Into L1 with write intent: lines about to be stored to.
static inline void prefetch_lines_for_write(void* p, size_t bytes) { prefetch_lines<1, 3>(p, bytes); }

// A demand load of the line at p whose value nobody uses (an asm statement, so the compiler keeps
// it): unlike a prefetch it faults on unmapped memory, so p must lie inside the buffer.
static inline void touch_line(const void* p) {
#if defined(__x86_64__)
  int v;
  asm volatile("movl %1, %0" : "=r"(v) : "m"(*static_cast<const int*>(p)));
#else
  (void)*static_cast<const volatile char*>(p);
#endif
}

// The one-token kernels of the interleaved int8/int4 layouts (Q8_0R, Q4_0R, Q4_KR), GGUF-layout
// Q4_K and the float row kernel ask for each line a second time, l1_prefetch_bytes() ahead, into
// L1. What kept the int4 kernels from the probe's rate was their arithmetic per byte, not their
// loads: Q4_0R and Q8_0R share one loop and layout, and Q8_0R (half the arithmetic per byte)
// streamed at 97-102% of the probe where Q4_0R made 86-97%; a Q4_0R with half its arithmetic
// (wrong sums, the same loads) made 99% where the real one made 91-93%. With the lines in L1 by
// the time the loads reach them, fewer loads wait at the head of the reorder window and more of
// the arithmetic overlaps the stream. Xeon VM, a harness alternating each kernel with the probe
// in one process (400 MB per pass, median of the per-pass ratios), Q4_0R: 2 threads 87.5 ->
// 91.6-92.6% (L1 distances 512-2048), 88.5 -> 92.2-92.8, 87.6 -> 90.9; one thread 90.4 -> 100.0,
// 88.0 -> 91.8. 24-layer decode with both versions' repetitions interleaved: 2 threads q4_0 93 ->
// 96%, q4_k 91 -> 95%; one thread q4_0 9.88 -> 10.42 tok/s, q4_k 10.10 -> 10.33, q8_0 6.39 ->
// 6.65; bf16 (8 layers) one thread 92 -> 96%, two 89 -> 90%. GGUF-layout Q4_K (mmapped .gguf
// files), kernel bench, one thread from memory, three alternating pairs: 11.5 / 11.2 / 9.0 ->
// 12.4 / 11.0 / 10.9 GB/s.
// (Later the int4 loops issued fewer instructions per byte: quant/vnni_avx512.h.)
// Half the L2 distance, in whole lines (4096 bytes at the Intel default); 0 when that is 0.
// Static for the reason prefetch_lines is.
static inline size_t l1_prefetch_bytes(size_t l2_distance) { return l2_distance / 2 / 64 * 64; }

// The distance in use for the streams that have no default of their own (the float row kernel,
// decode attention's KV rows): the override if one is set (JETMOE_PREFETCH, or
// set_decode_prefetch_bytes), else decode_prefetch_default(). Throws std::runtime_error naming
// the variable when its value is not a valid distance.
size_t decode_prefetch_bytes();

// The distance the one-token kernel of weights of type `weights` uses: the override if one is
// set, else decode_prefetch_default(weights).
size_t decode_prefetch_bytes(DType weights);

// This CPU's default: 8192 on Intel, 0 elsewhere.
size_t decode_prefetch_default();

// This CPU's default for one weight type's one-token kernel: 8192 on Intel (0 for the interleaved
// Q8_0R / Q4_0R / Q4_KR on an Ice Lake Xeon, which prefetch into L1 alone: decode_stream);
// elsewhere 8192 for Q4_KR, 4096 for Q4_0R (with touches and no L1 prefetch: decode_stream) and
// 0 for the rest; where the active ISA is AVX2, 0 for Q8_0R / Q4_0R / Q4_KR (two streams per
// thread: decode_stream) and 8192 for Q4_K (the GGUF-layout kernel of a mmapped file: on the Zen 3 VM,
// 24-layer q4_k decode in the file's layout at two threads, distances in turn in one process,
// 0 / 4 / 8 KiB: 68 / 79 / 86% of the read probe, 5 repetitions, and 72% / 84% at 0 / 4 KiB in
// a 3-repetition run before; kernels bench one thread from memory 10.5-11.3 -> 13.7 GB/s).
// On the Zen 5 VM (AMD EPYC family 26, 2 vCPUs) the Q4_KR kernel alone streamed faster with
// software prefetch (until Q4_0R got touches, decode_stream). Kernel bench, one thread from memory,
// three alternating pairs, 0 -> 8192 bytes: Q4_KR 19.8 / 23.4 / 25.2 -> 37.0 / 26.9 / 32.9 GB/s,
// where Q4_0R went 37.5 / 32.2 / 39.2 -> 30.1 / 23.2 / 25.7, Q8_0R 39.9 / 32.2 / 38.7 -> 29.1 /
// 25.7 / 26.0 and GGUF-layout Q4_K 29.4 / 28.0 / 26.6 -> 23.6 / 23.1 / 19.8 (the GGUF-layout Q8_0 /
// Q4_0 kernels kept their own 2 KiB, since 2026-12-06 4 KiB). Decode, distances interleaved in one process (`bench
// --prefetch`): 24-layer q4_k two threads 28.0 -> 35.6 and 29.7 -> 34.5 tok/s (two runs), one
// thread 12.6 -> 18.0; q4_0 and q8_0 at two threads lost 9% and 24%; f32 (4 layers) 30.0 -> 25.7,
// f16 53.1 -> 52.1; bf16 (8 layers) once 21.9 -> 27.7, then 24.3 -> 23.7 with 5 repetitions (no
// default of its own). Why Q4_KR: not its arithmetic (with chains of 4 instead of 8 it kept its
// speed, 2026-12-05 afternoon); likely its compiled loop's loads of the next super-block's scale
// lines, 2-4 KiB ahead, which act as the demand touches of decode_stream below.
size_t decode_prefetch_default(DType weights);

// Overrides the distance for this process, for every stream and type (benchmarks and tests);
// same range as the variable.
void set_decode_prefetch_bytes(size_t bytes);

// Drops the override set by set_decode_prefetch_bytes: back to JETMOE_PREFETCH if set, else the
// per-stream defaults.
void reset_decode_prefetch_bytes();

// True when an override is in force (JETMOE_PREFETCH or set_decode_prefetch_bytes).
bool decode_prefetch_overridden();

// The distance in use for each weight type that has a one-token kernel reading
// decode_prefetch_bytes(type) (F32, F16, BF16, GGUF-layout Q4_K, Q8_0R, Q4_0R, Q4_KR), in that order.
std::vector<std::pair<DType, size_t>> decode_prefetch_by_type();

// The distances in use, for reports: "8192 bytes", or "0 bytes (Q4_KR weights 8192)" naming each
// weight type whose distance differs from the rest.
std::string decode_prefetch_summary();

// A distance written as decimal bytes ("4096"), as JETMOE_PREFETCH and `bench --prefetch` take
// it. Throws std::runtime_error starting with `what` when it is not one.
size_t parse_decode_prefetch_bytes(const std::string& text, const std::string& what);

// The whole plan of one weight type's one-token stream: its L2 prefetch distance (what
// decode_prefetch_bytes(weights) says), the L1 one and the demand touches (MatArgs::touch: one
// line `touch` bytes ahead every ~2 KiB of weights; the interleaved int8/int4 kernels).
//
// Why Q4_0R touches on AMD: on the Zen 5 test VM a plain read loop that prefetched every line 8 KiB
// ahead into L2 and also loaded one line 2 KiB ahead every 36 lines read 0.95-1.42x as fast as the
// probe's best loop before it (2 threads, 1 GiB of huge pages, median of per-round ratios; the gain
// was largest when the plain loops read slowly), where the same prefetch without those loads read
// 0.92-1.04x (into L2 only) or 0.77-0.78x (with an L1 prefetch). A likely reason: lines that
// software prefetch has already fetched never miss, so the hardware prefetchers, which follow
// misses, fall idle; a few demand loads ahead keep them working. The Q4_0R kernel, same harness at
// decode's shapes, with L2 8 KiB and touches 2-3 KiB ahead: 0.94-1.27x today's kernel without
// prefetch (L2 8 KiB without the touches 0.86-1.02x, with an L1 prefetch too 1.02-1.16x); 24-layer
// q4_0 decode, 2 threads, the two binaries in ABBA order: 27.4-32.2 tok/s against 22.1-27.5
// (medians 31.6 vs 26.6). Q8_0R (touches alone: 1.045x in the harness) and Q4_KR (its 8 / 4 KiB
// prefetch plus touches: 0.96-1.08x) showed no gain end to end (q8_0 16.5-17.3 vs 16.1-17.7 tok/s,
// q4_k 26.3-33.1 vs 29.3-31.9), so they keep their plans. The distances were then shortened to an
// L2 prefetch 4 KiB and touches 1 KiB ahead: in the kernel harness 1.30x (2 threads) and 1.33x
// (one) today's kernel where 8 / 2 KiB made 1.23x and 1.26x (3 / 1 KiB 1.25x / 1.35x, 2 KiB / 512
// 1.17x / 1.33x); end to end, the two plans' binaries alternating, 31.5 / 33.5 / 36.9 tok/s against
// 32.2 / 25.2 / 32.6 (of the probe 73 / 79 / 81% against 74 / 81 / 72%), and 4K / 1K ahead in 5 of
// 6 earlier pairs (one build, the plan from the environment; the loss in a slump of the machine,
// probe 34 against 53 GB/s). Not measured on the Xeon, which keeps its plan (no touches).
//
// Why Q8_0R, Q4_0R and Q4_KR run `rolled` loops on AMD (qdot_interleaved_avx512.cpp): the same
// kernel with its block loop kept rolled (one or two 64-byte lines per iteration, the pair's
// prefetches a loop too) instead of unrolled by the compiler issues more instructions per byte,
// runs alike from L2 (one thread, Zen 5: Q4_0R 90 GB/s, Q8_0R 157 either way), and streams faster
// from memory on the Zen 5 VM, which the plain read probe does not explain (a guess: demand loads
// issued a line at a time, spaced by the arithmetic, leave the prefetchers' requests ahead of
// them). Kernel harness, library kernels at decode's shapes, 2 threads, median of per-round ratios,
// five placements (1 GiB twice, 8 GiB, 256 KiB pieces, 12 GiB at random places): Q4_0R with its 4 /
// 1 KiB plan 1.03-1.38x the unrolled loop; Q8_0R rolled with L2 8 KiB + touches 2 KiB ahead every
// 34 lines 1.15-1.38x today's unrolled loop without prefetch (rolled without prefetch 0.94-1.12x;
// the unrolled loop with any L2 prefetch was 0.57-0.83x, which is why Q8_0R had none). End to end,
// 24-layer decode, 2 threads, plans in turn in one process: q4_0 (both loops) 29.1 -> 34.4 tok/s,
// medians of 8, ahead in 8 of 8; q8_0 18.3 -> 20.0 tok/s (medians of 6; its weight loops 45.4 ->
// 51.3 GB/s). Q4_KR (qdot_q4kr_avx512.cpp) gained nothing with its 8-line chunk loop rolled (loops
// 48.0 vs 47.4 GB/s), but with its loop over the super-block's 4 chunks rolled (each chunk's 8
// lines still unrolled; the sub-block scales from a table made once per super-block): q4_k 34.9 ->
// 37.3 tok/s (medians of 7, ahead in 6 of 7; that and both loops rolled alike). Not measured on the
// Xeon, where the loops' instructions per byte set their speed (quant/vnni_avx512.h): it keeps the
// unrolled loops. JETMOE_PREFETCH / set_decode_prefetch_bytes replace every plan by {distance, half
// of it, no touches, unrolled}.
//
// Why the interleaved types prefetch into L1 alone on an Ice Lake Xeon (family 6, model 106 or
// 108): on that test VM (2 vCPUs at 2.8 GHz, 2026-12-06) the two prefetches per line of the
// Emerald Rapids plan (L2 8 KiB, L1 4 KiB) made two-thread decode slower than one prefetch per
// line into L1, 4 KiB ahead (a guess: on that core a prefetch into L2 holds a line-fill buffer
// too, so two per line leave fewer for the stream). 24-layer decode, two threads, the plans in
// turn every 4 tokens in one process (ms per token, means of 32-48 blocks of 4): q4_0 65.3 ->
// 63.6 and 67.0 -> 65.2 / 64.9 (the new plan twice, as two modes), where L2 16 KiB + L1 4 KiB
// made 67.5 and L1 alone at 2 KiB 66.5, at 8 KiB 64.5; q4_k (Q4_KR and Q8_0R) 67.3 -> 64.6;
// q8_0 110.8 -> 108.3 (6 or 8 KiB the same). One thread, q4_k: 129.2 -> 129.9, within noise.
// Other Intel CPUs keep the L2 + L1 plan: the Emerald Rapids VM streamed faster prefetching into
// L2 than into L1 (qdot_interleaved_avx512.cpp) and then gained from the L1 prefetch added to it.
//
// Why the AVX2 Q8_0R / Q4_0R / Q4_KR kernels read two streams off Intel (MatArgs::two_streams:
// each thread's row range in halves, a block pair (Q4_KR: a quant chunk; Q8_0R: a line) of each in
// turn; Q4_0R also prefetching 1 KiB ahead into L1, the others nothing): the AMD plans above were measured
// with the AVX-512 kernels, and the CPUs that run the AVX2 kernels off Intel are AMD's without
// AVX-512 (Zen 1-3). On a Zen 3 VM
// (AMD EPYC family 25 model 1, 2 vCPUs at 2.45 GHz, 2026-12-07) they left 24-layer decode at two
// threads at 63% (q8_0) and 73% (q4_0) of the read probe, whose fastest loop there is its
// two-stream one (~25 GB/s against 21-22 for its one-stream loops; one thread 15 against 11-12).
// Plans in turn in one process (`bench --prefetch`, medians of 3 and 5 repetitions): q8_0 63% ->
// 81-85% prefetching 2-8 KiB into L1 alone, and 88% / 90% with two streams and no prefetch (82% /
// 80% one stream, L1 4 KiB, in the same runs; two streams with an L1 prefetch 65-72%); q4_0 73% ->
// 82-87% into L1 alone, and 85% / 89% with two streams and L1 1 KiB (80% / 86% one stream, L1 4
// KiB). Q4_KR first kept its one stream with L2 8 KiB + L1 4 KiB, level with or ahead of two
// streams in the kernel of that day; what held its decode below Q4_0R's turned out to be Q4_0R's
// two streams: on the same bytes (bench/kernel_ab.cpp --same-bytes, two threads from memory) Q4_KR
// was 0.85-0.90x Q4_0R reading two streams and 0.95-0.98x Q4_0R reading one. The kernel now reads
// two streams too, a quant chunk of each in turn, without prefetch (0.91-1.05x Q4_0R then; with
// L2 2-8 KiB 0.82-0.97x, with L1 1 KiB 0.60-0.90x); 24-layer q4_k decode at two threads, the two
// binaries in turn, six pairs: median 11.94 -> 12.38 tok/s (ahead in 4 of 6), of the probe 84 ->
// 85.5%; one thread (8 layers) level. Q8_0R's two streams then went from a block pair of each in
// turn to a line of each (qdot_interleaved_avx2.cpp, Q8Format): 1.09-1.19x in the harness (one
// and two threads, from memory and from L2). Intel CPUs without AVX-512 keep the Intel plan (unmeasured
// there); the override replaces this plan as every other.
struct DecodeStream {
  size_t l2 = 0, l1 = 0, touch = 0;
  bool rolled = false;       // Q8_0R / Q4_0R / Q4_KR: the kernel's rolled loop (MatArgs::rolled)
  bool two_streams = false;  // AVX2 Q8_0R / Q4_0R / Q4_KR: two streams per thread (MatArgs::two_streams)
};
// The plan of the kernels of `isa` (the one-token kernels of qmatvec_isa); the first form is that
// of the active ISA.
DecodeStream decode_stream(DType weights);
DecodeStream decode_stream(DType weights, CpuIsa isa);

// The plans of the interleaved types for the active ISA, "Q8_0R L2 8192 L1 0 touch 2048 rolled,
// Q4_0R L2 4096 L1 0 touch 1024 rolled, Q4_KR L2 8192 L1 4096 touch 0 rolled" (AMD with AVX-512),
// "Q8_0R L2 0 L1 0 touch 0 two streams, Q4_0R L2 0 L1 1024 touch 0 two streams, ..." (AMD with
// AVX2), "Q8_0R L2 0 L1 4096 touch 0, ..." (Ice Lake Xeon).
std::string decode_stream_summary();

// Decode attention (CpuBackend::attention_decode) off Intel: before a KV head's keys are scored,
// one demand load every this many bytes of them (touch_lines), and the same for its values before
// they are summed; 0 = none (Intel, which prefetches them decode_prefetch_bytes() ahead instead,
// and whenever JETMOE_PREFETCH / set_decode_prefetch_bytes is in force). A head's rows are short
// streams (128 positions of f32 keys are 64 KB) that the kernels read once; without software
// prefetch (0 on AMD) each started cold. Zen 5 VM, two threads, cycles per layer's attention,
// touches against none in turn in one process (4 tokens each): 24 layers, f32 cache, positions
// 0-127: 148 -> 119 kcyc (-19%); 4 layers, f16 cache at 2048-2111: 1472 -> 1286 kcyc (-13%).
// Touching a head's keys and values together up front was no better, nor was one touch per
// 512 or 2048 bytes; an L2 prefetch of the first 64 KB of both (Intel's way) was 7% faster at
// short contexts and 7% slower at 2048.
size_t kv_touch_bytes();

// How decode attention's kernels (ops/cpu/kv_rows_simd.h) ask for each KV row ahead of reading it:
// `l2` bytes ahead into L2, or `l1` bytes ahead into L1 alone (at most one of the two is non-zero).
// Intel: l2 = decode_prefetch_bytes(), except on an Ice Lake Xeon (the CPUs whose interleaved
// weight types prefetch into L1 alone, decode_stream), where the rows go into L1 alone 4 KiB ahead
// as the weights do; elsewhere neither (kv_touch_bytes instead); under the override (JETMOE_PREFETCH
// / set_decode_prefetch_bytes) l2 = that distance. Ice Lake Xeon VM (2 vCPUs, 2026-12-06), two
// threads, cycles of a layer's attention with the two plans in turn every 4 tokens in one process:
// q4_0, 8 layers at depth 2048 (f32 cache): 4661 -> 4311 and 5156 -> 4787 kcycles (-7%), the token
// 36.1 -> 35.0 and 39.6 -> 38.1 ms; f16 cache at 2048: 2901 -> 2770 (-4.5%); 24 layers, positions
// 0-127: 197 -> 174 (q4_0), 195 -> 188 (q4_k). L1 alone 8 KiB ahead: -5%; 2 KiB: -3%; L1 4 KiB
// without the L2 head start of both streams (CpuBackend::attention_decode): -4%.
struct KvRowPrefetch {
  size_t l2 = 0, l1 = 0;
};
KvRowPrefetch kv_row_prefetch();

// The KV rows' plan for reports: "L2 8192 L1 0".
std::string kv_row_prefetch_summary();

// A demand load (touch_line: 4 bytes) at p, p + every, p + 2 * every, ..., each wholly inside
// [p, p + bytes).
static inline void touch_lines(const void* p, size_t bytes, size_t every) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t o = 0; o + sizeof(int) <= bytes; o += every) touch_line(b + o);
}

}  // namespace jetmoe
