// SPDX-License-Identifier: MIT
// Where one source's tokens land on the ranks of one node: for each token, the
// owners it reaches (in local-rank order), its entry in each owner's token list,
// and its rows there (in expert order) with their gating weights. The writer of
// that source on the node (the source itself, or its rail peer for a remote
// source) stores the payload once per owner, at the first of its rows, and the
// metadata of every row; combine later sums the rows of a token in exactly this
// order (local rank, then expert), which is what makes it bit-identical run to run.
// Positions come from the owners' receive layouts (node_layout) and the token order
// alone. Pure logic, no I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "plan/node_layout.hpp"
#include "plan/topology.hpp"

namespace epcomm::detail {

// One source's tokens bound for a node, as its writer reads them: the source's own
// input (a token list into [num_tokens, topk] arrays), or a received inter-node
// message (records of token index, topk ids, topk weights, `record_bytes` apart).
struct SourceTokens {
  int32_t count = 0;
  const int32_t* tokens = nullptr;  // own input
  const int32_t* topk_idx = nullptr;
  const float* topk_weights = nullptr;
  const std::byte* records = nullptr;  // message
  std::size_t record_bytes = 0;
};

struct RowPlacement {
  // Token i (index token[i] on its source) reaches the owner visits
  // [visit_begin[i], visit_begin[i + 1]), ascending by local rank.
  std::vector<int32_t> token;        // [count]
  std::vector<int32_t> visit_begin;  // [count + 1]
  // Visit v: the owner's local rank, the token's entry in that owner's token list,
  // and its rows there, [row_begin[v], row_begin[v + 1]), ascending by expert.
  std::vector<int32_t> visit_rank, visit_entry;
  std::vector<int32_t> row_begin;  // [visits + 1]
  // Row r: its index in the owner's expert-major output, and the weight.
  std::vector<int32_t> row;
  std::vector<float> weight;

  int32_t num_tokens() const { return static_cast<int32_t>(token.size()); }
};

// Places the tokens of `source` on the ranks of `node`, whose receive layouts are
// owners[0 .. ranks_per_node). Throws Error(kMismatch) naming the source and the
// owner when the tokens need more rows or token entries than a layout holds for
// the source. Reuses out's storage.
void place_source_rows(const Topology& topo, int node, int source, const SourceTokens& tokens,
                       const RecvLayoutView* owners, RowPlacement& out);

}  // namespace epcomm::detail
