// SPDX-License-Identifier: MIT
// Random exchange inputs with fixed seeds, and the independent reference exchange
// the multi-rank tests compare against: every rank gathers all ranks' inputs and
// computes, with plain per-(token, expert) loops, what it should receive and what
// combine should return. Nothing here calls epcomm's exchange code.
#pragma once

#include <epcomm/types.hpp>
#include <mpi.h>

#include <cstdint>
#include <vector>

namespace epcomm_test {

struct Shape {
  int ranks = 1;
  int ranks_per_node = 1;
  int experts = 1;
  int topk = 1;
  int hidden = 1;
  int experts_per_rank() const { return experts / ranks; }
  int node_of_expert(int e) const { return e / experts_per_rank() / ranks_per_node; }
};

// One rank's dispatch input. Values of x are exactly representable in BF16, so
// every conversion the exchange may do (f32 <-> bf16) is exact and outputs can be
// compared bit for bit.
struct RankInput {
  int num_tokens = 0;
  std::vector<float> x;  // [num_tokens, hidden]
  std::vector<int32_t> topk_idx;
  std::vector<float> topk_weights;
};

// Random routing: each token picks topk distinct experts (optionally limited to
// `max_nodes` random nodes), then each slot becomes -1 with probability
// `drop_prob`.
RankInput make_rank_input(const Shape& shape, int num_tokens, int max_nodes, double drop_prob, uint64_t seed, int rank);

// Values in the exchange dtype `t`; exact for BF16-representable values such as
// make_rank_input's.
std::vector<std::byte> to_dtype(const std::vector<float>& v, epcomm::DType t);

std::vector<RankInput> allgather_inputs(const RankInput& mine, const Shape& shape, MPI_Comm comm);

// What `rank` must receive: per local expert, rows ordered by (source rank, token).
struct ExpectedRow {
  int src_rank;
  int src_token;
  float weight;
  const float* x;  // the source's row
};
std::vector<std::vector<ExpectedRow>> expected_dispatch(const std::vector<RankInput>& all, const Shape& shape,
                                                        int rank);

// A per-expert function that is not linear in a way a wrong weight or a wrong
// expert could hide: y[h] = x[h] * (0.5 + 0.03 e) + 0.01 (e + 1) * ((h % 7) - 3).
float expert_fn(int expert, int h, float x);

// Reference combine for one rank: out[t][h] = sum_k w_k expert_fn(e_k, h, x[t][h]) in
// double, and the magnitude sum_k |w_k expert_fn| used for tolerances.
void expected_combine(const RankInput& in, const Shape& shape, std::vector<double>& out, std::vector<double>& mag);

// For each node other than `my_node`, the tokens of this input with an expert
// there: how many token rows must cross the network to it (0 for `my_node`).
std::vector<int64_t> remote_node_tokens(const RankInput& in, const Shape& shape, int my_node);
// Their sum: the distinct (token, remote node) pairs.
int64_t remote_node_pairs(const RankInput& in, const Shape& shape, int my_node);

}  // namespace epcomm_test
