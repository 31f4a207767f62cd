// Route, dispatch, run the experts, combine: the whole epcomm round trip.
//   mpirun -np 4 ./minimal_exchange      (EPCOMM_RANKS_PER_NODE=2 for 2 emulated nodes)
#include <epcomm/epcomm.hpp>
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);  // the caller owns MPI; epcomm never finalizes it
  int status = 0;
  try {
    epcomm::Group group(MPI_COMM_WORLD);
    const int tokens = 64, hidden = 256, topk = 4, experts = 4 * group.size();

    // 1. Route: node-limited top-k over random router logits.
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
    std::vector<int32_t> topk_idx(tokens * topk);
    std::vector<float> topk_weights(tokens * topk);
    router.route(logits.data(), tokens, nullptr, topk_idx.data(), topk_weights.data());

    // 2. Dispatch: rows arrive grouped by local expert.
    epcomm::ExchangeConfig cfg;
    cfg.num_experts = experts;
    cfg.topk = topk;
    cfg.hidden = hidden;
    cfg.max_tokens_per_rank = tokens;
    cfg.dtype = epcomm::DType::kF32;
    cfg.dispatch_format = epcomm::Format::kF32;
    cfg.combine_format = epcomm::Format::kF32;
    epcomm::Exchange exchange(group, cfg);
    epcomm::DispatchInput in;
    in.x = x.data();
    in.topk_idx = topk_idx.data();
    in.topk_weights = topk_weights.data();
    in.num_tokens = tokens;
    epcomm::DispatchHandle handle = exchange.dispatch(in);

    // 3. Experts: local expert j scales its rows by (j + 1), written straight into
    //    the shared buffer combine reads from.
    const auto* rows = static_cast<const float*>(handle.rows());
    auto* y = static_cast<float*>(handle.expert_out_buffer());
    for (int j = 0; j < handle.num_local_experts(); ++j) {
      for (int64_t r = handle.expert_offset(j); r < handle.expert_offset(j) + handle.expert_count(j); ++r) {
        for (int h = 0; h < hidden; ++h) y[r * hidden + h] = (j + 1) * rows[r * hidden + h];
      }
    }

    // 4. Combine: out[t] = sum_k w_k * expert_k(x_t).
    std::vector<float> out(tokens * hidden);
    exchange.combine(handle, y, handle.num_rows(), out.data(), tokens);

    double max_err = 0;
    const int per_rank = experts / group.size();
    for (int t = 0; t < tokens; ++t) {
      for (int h = 0; h < hidden; ++h) {
        double want = 0;
        for (int k = 0; k < topk; ++k) {
          want += topk_weights[t * topk + k] * (topk_idx[t * topk + k] % per_rank + 1) * x[t * hidden + h];
        }
        max_err = std::fmax(max_err, std::fabs(want - out[t * hidden + h]));
      }
    }
    double worst = 0;
    MPI_Allreduce(&max_err, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (group.rank() == 0) {
      std::printf("epcomm %s: %d ranks, %d nodes, %lld rows received on rank 0, max combine error %.2e\n",
                  EPCOMM_VERSION_STRING, group.size(), group.num_nodes(), static_cast<long long>(handle.num_rows()),
                  worst);
    }
    status = worst < 1e-4 ? 0 : 1;
  } catch (const epcomm::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    status = 1;
  }
  MPI_Finalize();
  return status;
}
