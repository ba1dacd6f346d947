// The CPU implementation of Backend: OpenMP over output rows, OpenBLAS for float prefill GEMM,
// per-ISA kernels (picked once from CPUID) for matrix-vector products and quantized weights.
#pragma once

#include <string>
#include <vector>

#include "ops/cpu/decode_row_loops.h"
#include "ops/cpu/row_lanes.h"
#include "runtime/backend.h"

namespace jetmoe {

// Below this many multiply-adds an op runs on one thread: waking the team costs more than it saves
// (and spinning threads steal the core from a busy neighbour process).
inline constexpr int64_t kCpuParallelMinWork = 1 << 16;
// From this many tokens on, float weights go through OpenBLAS GEMM (and attention through SGEMM)
// instead of the row kernels.
inline constexpr int64_t kCpuGemmMinTokens = 8;

class CpuBackend : public Backend {
 public:
  CpuBackend();
  std::string name() const override;

  void embed(const int32_t* tokens, int64_t T, const WeightView& table, float* x) override;
  void rms_norm(const float* x, int64_t T, int64_t n, const float* gain, float eps, float* y) override;
  void matmul(const float* x, int64_t T, const WeightView& W, float* y, int64_t ldy) override;
  void matmul_group(const MatmulJob* jobs, size_t n_jobs) override;
  void rope(float* x, int64_t T, int64_t n_heads, int64_t head_dim, int64_t ld, const int32_t* pos,
            float theta) override;
  void attention(const float* q, int64_t T, int64_t slots, const int32_t* slot, const int32_t* first,
                 const KvCache& cache, int layer, float* out) override;
  void silu_mul(const float* z, int64_t T, int64_t F, float* h) override;
  void prepare_cache(KvCache& cache) override;
  void kv_store(KvCache& cache, int layer, const float* k, const float* v, int64_t ld, int64_t T,
                const int32_t* pos) override;
  // ops/cpu/cpu_experts.cpp
  void route_topk(const float* logits, int64_t T, int64_t E, int64_t k, int32_t* experts, float* gates) override;
  void norm_route(const float* x, int64_t T, int64_t n, const float* gain, float eps, const WeightView& router,
                  int64_t k, float* a, float* logits, int32_t* experts, float* gates) override;
  void expert_matmul(const float* x, int64_t T, int64_t k, bool per_slot, const int32_t* experts, const WeightView& W,
                     float* y, const MatmulJob* extra) override;
  void combine_experts(const float* y, const float* gates, int64_t T, int64_t k, int64_t n, const float* bias,
                       float* x) override;
  void expert_mlp(const float* x, int64_t T, int64_t k, const int32_t* experts, const WeightView& w_in,
                  const WeightView& w_out, float* z, float* h, float* y) override;
  void read_soon(const ReadRange* ranges, size_t n) override;
  // A step's one-token weight loops run as DecodeRowLoops (a stopped thread's piece is redone);
  // end_step waits until no thread is left in them.
  void begin_step(const StepShape& step) override;
  void end_step(bool completed) override;
  // Pieces of decode weight loops redone for a stopped thread since this backend was made.
  int64_t redone_pieces() const { return decode_loops_.redone_pieces(); }

 private:
  // Jobs whose rows are split over threads (quantized weights, or few tokens): one parallel
  // region for all of them. ops/cpu/cpu_matmul_rows.cpp.
  void matmul_row_jobs(const MatmulJob* jobs, size_t n_jobs);
  void matmul_float_gemm(const MatmulJob& job);
  void attention_decode(const float* q, int64_t T, int64_t slots, const int32_t* slot, const int32_t* first,
                        const KvCache& cache, int layer, float* out);
  void attention_prefill(const float* q, int64_t T, int64_t slots, const int32_t* slot, const int32_t* first,
                         const KvCache& cache, int layer, float* out);

  // rope's cos/sin table ([T][cos half | sin half]) for the last positions asked, kept between
  // calls: decode asks for the same position 2 x layers times per step. inv_freq belongs to
  // (theta, head_dim) and is computed when they change.
  struct RopeTable {
    float theta = 0.0f;
    int64_t head_dim = 0;
    std::vector<float> inv_freq;
    std::vector<int32_t> pos;
    std::vector<float> cos_sin;
  };
  RopeTable rope_table_;
  const float* rope_table(const int32_t* pos, int64_t T, int64_t head_dim, float theta);

  std::vector<float> widen_;       // float copy of a chunk of weight rows for GEMM (never whole tensors)
  std::vector<uint8_t> act_q_;     // activations quantized for int8/int4 dot products, all jobs
  std::vector<size_t> act_off_;    // offset of each job's quantized activations in act_q_
  // How matmul_row_jobs' threads share the rows (ops/cpu/row_lanes.h): kept between calls, no
  // allocation per decoded token.
  RowLanes lanes_;
  // Inside a step (begin_step .. end_step) one-token quantized loops run here instead; outside a
  // step (a caller's own matmul, whose weights may go away at return) they do not.
  DecodeRowLoops decode_loops_{&decode_rows};
  static void decode_rows(const MatmulJob& j, const uint8_t* xq, int64_t r0, int64_t r1, float* out);
  bool in_step_ = false;
  // read_soon's ranges waiting for the next matmul_row_jobs loop, those of the loop running, and
  // those expert_mlp holds back for its second loop (three buffers that trade places: no
  // allocation per decoded token).
  std::vector<ReadRange> read_soon_, tail_reads_, held_reads_;
  struct QuantPiece {              // a piece of one job's activations to quantize
    int32_t job;
    int64_t t0, t1;                // tokens
    int64_t c0, c1;                // columns (whole activation blocks)
  };
  std::vector<QuantPiece> quant_pieces_;
  std::vector<MatmulJob> gemm_jobs_, row_jobs_;
  // expert_matmul: the items in expert order, where each expert's run starts, and the gathered
  // inputs / outputs of experts that several items chose (kept between calls).
  std::vector<int32_t> order_;
  std::vector<int64_t> expert_begin_, fill_;
  std::vector<float> gx_, gy_;
  std::vector<MatmulJob> expert_jobs_;
  void group_items(const int32_t* experts, int64_t n, int64_t E, const std::string& what);
  void run_grouped(const WeightView& W, const float* xs, float* ys, const MatmulJob* extra);
};

}  // namespace jetmoe
