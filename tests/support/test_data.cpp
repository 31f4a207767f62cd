// SPDX-License-Identifier: MIT
#include "support/test_data.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <set>

namespace epcomm_test {

std::vector<std::byte> to_dtype(const std::vector<float>& v, epcomm::DType t) {
  std::vector<std::byte> out(v.size() * epcomm::dtype_size(t));
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (t == epcomm::DType::kF32) {
      std::memcpy(out.data() + i * 4, &v[i], 4);
    } else {
      uint32_t u;
      std::memcpy(&u, &v[i], 4);
      const uint16_t b = static_cast<uint16_t>(u >> 16);
      std::memcpy(out.data() + i * 2, &b, 2);
    }
  }
  return out;
}

RankInput make_rank_input(const Shape& s, int num_tokens, int max_nodes, double drop_prob, uint64_t seed, int rank) {
  std::mt19937_64 rng(seed * 1000003ull + static_cast<uint64_t>(rank));
  std::uniform_real_distribution<float> value(-4.0f, 4.0f), weight(0.05f, 1.0f), unit(0.0f, 1.0f);
  RankInput in;
  in.num_tokens = num_tokens;
  in.x.resize(static_cast<std::size_t>(num_tokens) * s.hidden);
  for (float& v : in.x) {
    float f = value(rng);
    uint32_t u;
    std::memcpy(&u, &f, 4);
    u &= 0xffff0000u;  // keep 8 mantissa bits: exactly a BF16 value
    std::memcpy(&v, &u, 4);
  }
  const int nodes = s.ranks / s.ranks_per_node;
  const int per_node = s.experts / nodes;
  const int m = std::min(max_nodes, nodes);
  in.topk_idx.assign(static_cast<std::size_t>(num_tokens) * s.topk, -1);
  in.topk_weights.assign(static_cast<std::size_t>(num_tokens) * s.topk, 0.0f);
  std::vector<int> node_order(nodes), pool;
  for (int t = 0; t < num_tokens; ++t) {
    // Candidate experts: all experts of m random nodes, enough to hold topk.
    std::iota(node_order.begin(), node_order.end(), 0);
    std::shuffle(node_order.begin(), node_order.end(), rng);
    pool.clear();
    for (int i = 0; i < nodes && (i < m || static_cast<int>(pool.size()) < s.topk); ++i) {
      for (int e = 0; e < per_node; ++e) pool.push_back(node_order[i] * per_node + e);
    }
    std::shuffle(pool.begin(), pool.end(), rng);
    for (int k = 0; k < s.topk; ++k) {
      if (unit(rng) < drop_prob) continue;
      in.topk_idx[static_cast<std::size_t>(t) * s.topk + k] = pool[k];
      in.topk_weights[static_cast<std::size_t>(t) * s.topk + k] = weight(rng);
    }
  }
  return in;
}

std::vector<RankInput> allgather_inputs(const RankInput& mine, const Shape& s, MPI_Comm comm) {
  int size = 0;
  MPI_Comm_size(comm, &size);
  std::vector<int> counts(size);
  MPI_Allgather(&mine.num_tokens, 1, MPI_INT, counts.data(), 1, MPI_INT, comm);
  std::vector<RankInput> all(size);
  auto gather = [&](const auto& local, auto member, int width, MPI_Datatype type) {
    std::vector<int> n(size), displs(size);
    int total = 0;
    for (int r = 0; r < size; ++r) {
      n[r] = counts[r] * width;
      displs[r] = total;
      total += n[r];
    }
    using T = typename std::decay_t<decltype(local)>::value_type;
    std::vector<T> flat(total);
    MPI_Allgatherv(local.data(), static_cast<int>(local.size()), type, flat.data(), n.data(), displs.data(), type,
                   comm);
    for (int r = 0; r < size; ++r) {
      (all[r].*member).assign(flat.begin() + displs[r], flat.begin() + displs[r] + n[r]);
    }
  };
  gather(mine.x, &RankInput::x, s.hidden, MPI_FLOAT);
  gather(mine.topk_idx, &RankInput::topk_idx, s.topk, MPI_INT32_T);
  gather(mine.topk_weights, &RankInput::topk_weights, s.topk, MPI_FLOAT);
  for (int r = 0; r < size; ++r) all[r].num_tokens = counts[r];
  return all;
}

std::vector<std::vector<ExpectedRow>> expected_dispatch(const std::vector<RankInput>& all, const Shape& s, int rank) {
  const int J = s.experts_per_rank();
  std::vector<std::vector<ExpectedRow>> rows(J);
  for (int j = 0; j < J; ++j) {
    const int e = rank * J + j;
    for (int src = 0; src < static_cast<int>(all.size()); ++src) {
      for (int t = 0; t < all[src].num_tokens; ++t) {
        for (int k = 0; k < s.topk; ++k) {
          const std::size_t at = static_cast<std::size_t>(t) * s.topk + k;
          if (all[src].topk_idx[at] == e) {
            rows[j].push_back({src, t, all[src].topk_weights[at], all[src].x.data() + static_cast<std::size_t>(t) * s.hidden});
          }
        }
      }
    }
  }
  return rows;
}

float expert_fn(int expert, int h, float x) {
  return x * (0.5f + 0.03f * expert) + 0.01f * (expert + 1) * static_cast<float>((h % 7) - 3);
}

void expected_combine(const RankInput& in, const Shape& s, std::vector<double>& out, std::vector<double>& mag) {
  out.assign(static_cast<std::size_t>(in.num_tokens) * s.hidden, 0.0);
  mag.assign(out.size(), 0.0);
  for (int t = 0; t < in.num_tokens; ++t) {
    for (int k = 0; k < s.topk; ++k) {
      const int e = in.topk_idx[static_cast<std::size_t>(t) * s.topk + k];
      if (e < 0) continue;
      const double w = in.topk_weights[static_cast<std::size_t>(t) * s.topk + k];
      for (int h = 0; h < s.hidden; ++h) {
        const std::size_t at = static_cast<std::size_t>(t) * s.hidden + h;
        const double v = w * expert_fn(e, h, in.x[at]);
        out[at] += v;
        mag[at] += std::fabs(v);
      }
    }
  }
}

std::vector<int64_t> remote_node_tokens(const RankInput& in, const Shape& s, int my_node) {
  std::vector<int64_t> tokens(static_cast<std::size_t>(s.ranks / s.ranks_per_node), 0);
  for (int t = 0; t < in.num_tokens; ++t) {
    std::set<int> nodes;
    for (int k = 0; k < s.topk; ++k) {
      const int e = in.topk_idx[static_cast<std::size_t>(t) * s.topk + k];
      if (e >= 0 && s.node_of_expert(e) != my_node) nodes.insert(s.node_of_expert(e));
    }
    for (int n : nodes) ++tokens[static_cast<std::size_t>(n)];
  }
  return tokens;
}

int64_t remote_node_pairs(const RankInput& in, const Shape& s, int my_node) {
  int64_t pairs = 0;
  for (int64_t n : remote_node_tokens(in, s, my_node)) pairs += n;
  return pairs;
}

}  // namespace epcomm_test
