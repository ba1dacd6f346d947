// AVX-512 VNNI decode kernels (one token, T = 1): the hot loop of batch-1 decoding, which must
// stream weights at memory speed. For Q8_0 and Q4_0 in the GGUF block layout (mmapped files) and
// for Q4_K; the interleaved in-memory layouts Q8_0R / Q4_0R / Q4_KR have their own kernels in
// qdot_interleaved_avx512.cpp and qdot_q4kr_avx512.cpp.
//
// Why separate kernels from the register-tiled qmatmul: at T = 1 nothing is shared between
// tokens, so all per-block work that depends only on the activation is done once per call
// ("prep"), in a layout that lines up with the weight bytes, and the per-row loop is reduced to
// loads, the integer dot products and one float multiply-add per group:
//   Q4_0: a group is 4 blocks. Their 4 x 16 nibble bytes are two overlapping loads + vpermt2b
//         (72 bytes of GGUF blocks); low/high nibbles are dotted
//         (dpbusd, u8 x s8) with the matching activation halves. The "- 8" of the format is the
//         activation-side term -8 * sum(a), precomputed per int32 lane, so it costs nothing per row.
//   Q8_0: a group is 2 blocks. The weights are made unsigned with w ^ 0x80 (= w + 128) and the
//         +128 * sum(a) this adds is removed by the precomputed per-lane term.
//   Scales: gathered from the same loads with one vpermw.
//   Q4_K: one super-block per step (see q4_k_row).
// Rows are processed one at a time: on Zen 5 a single row's stream ran faster than 2 or 4
// interleaved rows, from L2 and from memory.
//
// Compiled with AVX-512 flags: everything in an anonymous namespace, no std:: containers (see
// qdot_avx2.cpp on weak symbols).
#include "quant/qdot_kernels.h"
#include "quant/qtypes.h"

#if JETMOE_QDOT_AVX512
#include <immintrin.h>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace jetmoe::qdot_detail {
namespace {

// Activation-side data of one group, in the lane order of the weight registers.
struct alignas(64) Q4Group {
  int8_t lo[64];      // elements 0..15 of the group's 4 blocks
  int8_t hi[64];      // elements 16..31
  int32_t corr[16];   // -8 * (sum of the 4 + 4 activation bytes that meet this int32 lane)
  float dx[16];       // block scale of each lane's block
};
struct alignas(64) Q8Group {
  int8_t x[64];       // the 2 blocks' 32 + 32 bytes
  int32_t corr[16];   // -128 * (sum of the 4 activation bytes of this lane)
  float dx[16];
};

// Largest row this kernel preps on the stack (Q4: 2 bytes of prep per element); longer rows
// (none in JetMoE: 5632 at most) use the tiled kernel.
constexpr int64_t kMaxElems = 16384;

// Software prefetch along each Q8_0 / Q4_0 row: every line this far ahead into L1 (two
// prefetches per group, which covers every line of the 68- or 72-byte groups). On Zen 5 (qmatvec
// stream benchmark, one thread) GGUF-layout Q8_0 read 10.8 GB/s without, 13-16 GB/s with 256..4096
// bytes ahead (then one prefetch per group, 2 KiB ahead). On the Ice Lake VM, 24-layer decode of
// GGUF-layout weights (`bench --synth --gguf-layout`, two threads), the plans in turn every 4
// tokens in one process, ms per token: q8_0 120.6 -> 112.7, q4_0 74.6 -> 70.0 (the AVX2 kernels
// of qmatvec_avx2.cpp, which stream this way, had shown it first). The Q4_K kernel measured as fast
// or faster without prefetch on Zen 5 (the machine is shared and noisy: differences under ~15% are
// not resolved), so it takes the per-CPU distance of quant/stream_prefetch.h instead (0 on AMD): on
// the Xeon VM, one thread from memory, 7.0-7.8 GB/s without, 10.9-12.8 prefetching 4 KiB ahead into L2.
constexpr int kPrefetchBytes = 4096;

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

// One leftover block after a row's last full group (rows whose block count is not a multiple of
// the group), for either layout: q = its quant bytes, dw = its fp16 scale.
inline float tail_q8_0(const int8_t* q, uint16_t dw, const BlockQ8_0& x) {
  int s = 0;
  for (int e = 0; e < 32; ++e) s += q[e] * x.qs[e];
  return static_cast<float>(s) * (h2f(dw) * h2f(x.d));
}
inline float tail_q4_0(const uint8_t* q, uint16_t dw, const BlockQ8_0& x) {
  int s = 0;
  for (int e = 0; e < 16; ++e) s += ((q[e] & 0x0f) - 8) * x.qs[e] + ((q[e] >> 4) - 8) * x.qs[e + 16];
  return static_cast<float>(s) * (h2f(dw) * h2f(x.d));
}

// Byte gather of a group's quant bytes from two overlapping 64-byte loads A = p[0..63] and
// B = p[off..off+63]: index < 64 picks A, 64 + i picks B[i].
template <int BlockBytes, int QsBytes, int BOffset>
inline __m512i gather_index() {
  alignas(64) int8_t idx[64];
  for (int j = 0; j < 64; ++j) {
    const int off = BlockBytes * (j / QsBytes) + 2 + j % QsBytes;
    idx[j] = static_cast<int8_t>(off < 64 ? off : 64 + off - BOffset);
  }
  return _mm512_load_si512(idx);
}

// Word index of each int32 lane's block scale (fp16 at byte BlockBytes * k): lanes per block =
// 16 / blocks per group.
template <int BlockBytes, int LanesPerBlock>
inline __m512i scale_index() {
  alignas(64) int16_t idx[32];
  for (int j = 0; j < 32; ++j) idx[j] = static_cast<int16_t>(j < 16 ? (BlockBytes / 2) * (j / LanesPerBlock) : 0);
  return _mm512_load_si512(idx);
}

// ---- Q4_0 ----------------------------------------------------------------------------------
void prep_q4_0(const BlockQ8_0* x, int64_t groups, Q4Group* g) {
  const __m512i k8 = _mm512_set1_epi8(8);
  for (int64_t i = 0; i < groups; ++i) {
    for (int k = 0; k < 4; ++k) {
      const BlockQ8_0& b = x[4 * i + k];
      _mm_store_si128(reinterpret_cast<__m128i*>(g[i].lo + 16 * k), _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs)));
      _mm_store_si128(reinterpret_cast<__m128i*>(g[i].hi + 16 * k), _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs + 16)));
      _mm_store_ps(g[i].dx + 4 * k, _mm_set1_ps(h2f(b.d)));
    }
    const __m512i lo = _mm512_load_si512(g[i].lo), hi = _mm512_load_si512(g[i].hi);
    const __m512i s = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), k8, lo), k8, hi);
    _mm512_store_si512(g[i].corr, _mm512_sub_epi32(_mm512_setzero_si512(), s));
  }
}

// Row r of Q4_0 weights (row stride `stride` bytes, `groups` full groups, `tail` blocks after
// them) against the prepped activation.
inline void q4_0_row(const uint8_t* W, size_t stride, int64_t r, const Q4Group* g,
                     int64_t groups, const BlockQ8_0* x, int64_t tail, float* y) {
  const __m512i idx = gather_index<18, 16, 8>();
  const __m512i sidx = scale_index<18, 4>();
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  const uint8_t* p = W + static_cast<size_t>(r) * stride;
  __m512 acc = _mm512_setzero_ps();
  for (int64_t k = 0; k < groups; ++k) {
    const uint8_t* q = p + 72 * k;
    _mm_prefetch(reinterpret_cast<const char*>(q) + kPrefetchBytes, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(q) + kPrefetchBytes + 64, _MM_HINT_T0);
    const __m512i a = _mm512_loadu_si512(q), b = _mm512_loadu_si512(q + 8);
    const __m512i v = _mm512_permutex2var_epi8(a, idx, b);
    const __m512i lo = _mm512_and_si512(v, m4);
    const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    const __m512i s = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_load_si512(g[k].corr), lo, _mm512_load_si512(g[k].lo)),
                                          hi, _mm512_load_si512(g[k].hi));
    const __m512 dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(sidx, a)));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_load_ps(g[k].dx)), acc);
  }
  float sum = _mm512_reduce_add_ps(acc);
  const BlockQ4_0* wb = reinterpret_cast<const BlockQ4_0*>(p);
  for (int64_t b = 4 * groups; b < 4 * groups + tail; ++b) sum += tail_q4_0(wb[b].qs, wb[b].d, x[b]);
  y[r] = sum;
}

// ---- Q8_0 ----------------------------------------------------------------------------------
void prep_q8_0(const BlockQ8_0* x, int64_t groups, Q8Group* g) {
  const __m512i k80 = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t i = 0; i < groups; ++i) {
    for (int k = 0; k < 2; ++k) {
      const BlockQ8_0& b = x[2 * i + k];
      _mm256_store_si256(reinterpret_cast<__m256i*>(g[i].x + 32 * k), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)));
      _mm256_store_ps(g[i].dx + 8 * k, _mm256_set1_ps(h2f(b.d)));
    }
    const __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), k80, _mm512_load_si512(g[i].x));
    _mm512_store_si512(g[i].corr, _mm512_sub_epi32(_mm512_setzero_si512(), s));
  }
}

inline void q8_0_row(const uint8_t* W, size_t stride, int64_t r, const Q8Group* g,
                     int64_t groups, const BlockQ8_0* x, int64_t tail, float* y) {
  const __m512i idx = gather_index<34, 32, 4>();
  const __m512i sidx = scale_index<34, 8>();
  const __m512i k80 = _mm512_set1_epi8(static_cast<char>(0x80));
  const uint8_t* p = W + static_cast<size_t>(r) * stride;
  __m512 acc = _mm512_setzero_ps();
  for (int64_t k = 0; k < groups; ++k) {
    const uint8_t* q = p + 68 * k;
    _mm_prefetch(reinterpret_cast<const char*>(q) + kPrefetchBytes, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(q) + kPrefetchBytes + 64, _MM_HINT_T0);
    const __m512i a = _mm512_loadu_si512(q), b = _mm512_loadu_si512(q + 4);
    const __m512i wu = _mm512_xor_si512(_mm512_permutex2var_epi8(a, idx, b), k80);
    const __m512i s = _mm512_dpbusd_epi32(_mm512_load_si512(g[k].corr), wu, _mm512_load_si512(g[k].x));
    const __m512 dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(sidx, a)));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_load_ps(g[k].dx)), acc);
  }
  float sum = _mm512_reduce_add_ps(acc);
  const BlockQ8_0* wb = reinterpret_cast<const BlockQ8_0*>(p);
  for (int64_t b = 2 * groups; b < 2 * groups + tail; ++b) sum += tail_q8_0(wb[b].qs, wb[b].d, x[b]);
  y[r] = sum;
}

// ---- Q4_K ------------------------------------------------------------------------------------
// One super-block (256 weights, 144 bytes) per step: its 128 quant bytes are two 64-byte loads;
// the low/high nibbles of each are two sub-blocks' 32 + 32 weights, dotted (maddubs) with
// activation halves prepped in the same order, and weighted by the sub-block scales in int16
// (dpwssd). The sub-block mins meet the prepped activation sums of each sub-block once per row.
struct alignas(64) Q4KGroup {
  int8_t x[4][64];    // [a0..31 | a64..95], [a32..63 | a96..127], [a128..159 | a192..223], [a160..191 | a224..255]
  int16_t bsum[8];    // sum of each sub-block's 32 activation bytes
  float dx;
};

void prep_q4_k(const BlockQ8_K* x, int64_t nb, Q4KGroup* g) {
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* a = x[b].qs;
    for (int h = 0; h < 2; ++h)       // h: quant bytes 64h .. 64h + 63 (sub-blocks 4h .. 4h + 3)
      for (int nib = 0; nib < 2; ++nib)  // low nibbles: sub-blocks 4h, 4h + 2; high: 4h + 1, 4h + 3
        for (int half = 0; half < 2; ++half)
          __builtin_memcpy(g[b].x[2 * h + nib] + 32 * half, a + 128 * h + 64 * half + 32 * nib, 32);
    for (int j = 0; j < 8; ++j) g[b].bsum[j] = static_cast<int16_t>(x[b].bsums[2 * j] + x[b].bsums[2 * j + 1]);
    g[b].dx = x[b].d;
  }
}

inline void q4_k_row(const uint8_t* W, size_t stride, int64_t r, const Q4KGroup* g, int64_t nb, float* y, size_t pf,
                     size_t pf_l1) {
  const BlockQ4_K* w = reinterpret_cast<const BlockQ4_K*>(W + static_cast<size_t>(r) * stride);
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  // int16 scale lanes for the four products: [sc_a x 16 | sc_b x 16]
  const __m512i sidx[4] = {
      _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(0)), _mm256_set1_epi16(2), 1),
      _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(1)), _mm256_set1_epi16(3), 1),
      _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(4)), _mm256_set1_epi16(6), 1),
      _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(5)), _mm256_set1_epi16(7), 1)};
  __m512 acc = _mm512_setzero_ps();
  __m128 accm = _mm_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    if (pf) {  // the super-block's 144 bytes (3 lines at most), pf bytes ahead (quant/stream_prefetch.h)
      const char* p = reinterpret_cast<const char*>(w + b) + pf;
      _mm_prefetch(p, _MM_HINT_T1);
      _mm_prefetch(p + 64, _MM_HINT_T1);
      _mm_prefetch(p + 143, _MM_HINT_T1);
    }
    if (pf_l1) {  // and again, nearer, into L1 (quant/stream_prefetch.h)
      const char* p = reinterpret_cast<const char*>(w + b) + pf_l1;
      _mm_prefetch(p, _MM_HINT_T0);
      _mm_prefetch(p + 64, _MM_HINT_T0);
      _mm_prefetch(p + 143, _MM_HINT_T0);
    }
    alignas(16) uint8_t sm[16];
    q4k_unpack_scales(w[b].scales, sm);
    const __m128i sm8 = _mm_load_si128(reinterpret_cast<const __m128i*>(sm));
    const __m512i sc = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(sm8));
    const __m512i v0 = _mm512_loadu_si512(w[b].qs), v1 = _mm512_loadu_si512(w[b].qs + 64);
    const __m512i q[4] = {_mm512_and_si512(v0, m4), _mm512_and_si512(_mm512_srli_epi16(v0, 4), m4),
                          _mm512_and_si512(v1, m4), _mm512_and_si512(_mm512_srli_epi16(v1, 4), m4)};
    __m512i isum = _mm512_setzero_si512();
    for (int c = 0; c < 4; ++c)
      isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(q[c], _mm512_load_si512(g[b].x[c])),
                                 _mm512_permutexvar_epi16(sidx[c], sc));
    const __m128i mins = _mm_cvtepu8_epi16(_mm_srli_si128(sm8, 8));
    const __m128i msum = _mm_madd_epi16(mins, _mm_load_si128(reinterpret_cast<const __m128i*>(g[b].bsum)));
    const float dx = g[b].dx;
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(h2f(w[b].d) * dx), acc);
    accm = _mm_fmadd_ps(_mm_cvtepi32_ps(msum), _mm_set1_ps(-h2f(w[b].dmin) * dx), accm);
  }
  const __m128 m2 = _mm_add_ps(accm, _mm_movehl_ps(accm, accm));
  y[r] = _mm512_reduce_add_ps(acc) + _mm_cvtss_f32(_mm_add_ss(m2, _mm_movehdup_ps(m2)));
}

// One row at a time (measured on Zen 5: a single row's stream ran 49 GB/s from L2 where
// interleaving 2 or 4 rows ran 28-34 GB/s, and it is the better stream from memory too).
template <class Group, int BlocksPerGroup, void (*Prep)(const BlockQ8_0*, int64_t, Group*),
          void (*Row)(const uint8_t*, size_t, int64_t, const Group*, int64_t, const BlockQ8_0*, int64_t, float*)>
void matvec(const MatArgs& a) {
  const int64_t groups = a.nb / BlocksPerGroup, tail = a.nb % BlocksPerGroup;
  Group g[kMaxElems / (32 * BlocksPerGroup)];
  const BlockQ8_0* x = reinterpret_cast<const BlockQ8_0*>(a.X);
  Prep(x, groups, g);
  for (int64_t r = a.r0; r < a.r1; ++r) Row(a.W, a.w_stride, r, g, groups, x, tail, a.Y);
}

}  // namespace

int64_t avx512_matvec_max_elems() { return kMaxElems; }

void avx512_matvec_q4_0(const MatArgs& a) { matvec<Q4Group, 4, prep_q4_0, q4_0_row>(a); }

void avx512_matvec_q4_k(const MatArgs& a) {
  Q4KGroup g[kMaxElems / 256];
  prep_q4_k(reinterpret_cast<const BlockQ8_K*>(a.X), a.nb, g);
  for (int64_t r = a.r0; r < a.r1; ++r) q4_k_row(a.W, a.w_stride, r, g, a.nb, a.Y, a.prefetch, a.prefetch_l1);
}

void avx512_matvec_q8_0(const MatArgs& a) { matvec<Q8Group, 2, prep_q8_0, q8_0_row>(a); }

}  // namespace jetmoe::qdot_detail

#endif
