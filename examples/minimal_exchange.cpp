// SPDX-License-Identifier: MIT
// The whole epcomm round trip: route, dispatch, run the experts, combine.
//
//   cmake -S examples -B build/example -DCMAKE_PREFIX_PATH=<epcomm prefix>
//   cmake --build build/example
//   EPCOMM_RANKS_PER_NODE=2 mpirun -np 4 build/example/minimal_exchange  # 2 emulated nodes
#include <epcomm/epcomm.hpp>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

int main(int argc, char** argv) {
  // The caller owns MPI; epcomm never initializes or finalizes it. Its background
  // progress thread calls MPI beside this thread, hence MPI_THREAD_MULTIPLE.
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int status = 1;
  try {
    epcomm::Group group(MPI_COMM_WORLD);  // collective; finds (emulated) nodes
    const int tokens = 64, hidden = 256, topk = 4, experts = 4 * group.size();
    const int experts_per_rank = experts / group.size();

    // 1. Route: node-limited top-k (each token reaches at most 2 nodes) over random
    //    router logits. Expert e lives on epcomm rank e / experts_per_rank.
    epcomm::RouterConfig rc;
    rc.num_experts = experts;
    rc.topk = topk;
    rc.num_nodes = group.num_nodes();
    rc.max_nodes = 2;
    epcomm::NodeLimitedRouter router(rc);
    std::mt19937 rng(group.rank());
    std::normal_distribution<float> normal;
    std::vector<float> logits(tokens * experts), x(tokens * hidden);
    for (float& v : logits) v = normal(rng);
    for (float& v : x) v = normal(rng);
    std::vector<int32_t> idx(tokens * topk);
    std::vector<float> weights(tokens * topk);
    router.route(logits.data(), tokens, /*bias=*/nullptr, idx.data(), weights.data());

    // 2. Dispatch F32 tokens (kept F32 on the wire). Buffers are allocated once,
    //    here, for up to max_tokens_per_rank tokens per dispatch.
    epcomm::ExchangeConfig cfg;
    cfg.num_experts = experts;
    cfg.topk = topk;
    cfg.hidden = hidden;
    cfg.max_tokens_per_rank = tokens;
    cfg.dtype = epcomm::DType::kF32;
    cfg.dispatch_format = cfg.combine_format = epcomm::Format::kF32;
    epcomm::Exchange exchange(group, cfg);
    epcomm::DispatchHandle h = exchange.dispatch({x.data(), idx.data(), weights.data(), tokens});

    // 3. Experts: rows arrive grouped by local expert; local expert j multiplies by
    //    (j + 1) and writes into expert_out_buffer(), where combine reads without a copy.
    const auto* rows = static_cast<const float*>(h.rows());
    auto* y = static_cast<float*>(h.expert_out_buffer());
    for (int j = 0; j < h.num_local_experts(); ++j) {
      for (int64_t r = h.expert_offset(j); r < h.expert_offset(j) + h.expert_count(j); ++r) {
        for (int c = 0; c < hidden; ++c) y[r * hidden + c] = (j + 1) * rows[r * hidden + c];
      }
    }

    // 4. Combine: out[t] = sum_k weight[t][k] * expert_k(x[t]), back on the source rank.
    std::vector<float> out(tokens * hidden);
    exchange.combine(h, y, h.num_rows(), out.data(), tokens);

    // Check against the same sum computed locally; the worst error over all ranks.
    double err = 0;
    for (int t = 0; t < tokens; ++t) {
      for (int c = 0; c < hidden; ++c) {
        double want = 0;
        for (int k = 0; k < topk; ++k) {
          want += weights[t * topk + k] * (idx[t * topk + k] % experts_per_rank + 1) * x[t * hidden + c];
        }
        err = std::max(err, std::fabs(want - out[t * hidden + c]));
      }
    }
    MPI_Allreduce(MPI_IN_PLACE, &err, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (group.rank() == 0) {
      std::printf("epcomm %s: %d ranks, %d node(s), rank 0 received %lld rows, max combine error %.1e\n",
                  EPCOMM_VERSION_STRING, group.size(), group.num_nodes(),
                  static_cast<long long>(h.num_rows()), err);
    }
    status = err < 1e-4 ? 0 : 1;
  } catch (const epcomm::Error& e) {  // every epcomm failure; the message names the rank
    std::fprintf(stderr, "%s\n", e.what());
  }
  MPI_Finalize();
  return status;
}
