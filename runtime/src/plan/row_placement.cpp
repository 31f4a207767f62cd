// SPDX-License-Identifier: MIT
#include "plan/row_placement.hpp"

#include "util/check.hpp"

namespace epcomm::detail {

void place_source_rows(const Topology& topo, int node, int source, const SourceTokens& tokens,
                       const RecvLayoutView* owners, RowPlacement& out) {
  const int R = topo.ranks_per_node, J = topo.experts_per_rank(), K = topo.topk;
  const int first_expert = node * R * J;
  out.token.clear();
  out.visit_begin.assign(1, 0);
  out.visit_rank.clear();
  out.visit_entry.clear();
  out.row_begin.assign(1, 0);
  out.row.clear();
  out.weight.clear();

  // Per owner: the next row of each local expert and the next token entry, both
  // counted from the source's base in that owner's layout.
  std::vector<int32_t> row_cursor(static_cast<std::size_t>(R) * J, 0), token_cursor(R, 0);
  struct Pick {
    int rel;  // local rank * J + expert
    float weight;
  };
  std::vector<Pick> picks(K);
  for (int32_t i = 0; i < tokens.count; ++i) {
    int32_t t;
    const int32_t* idx;
    const float* w;
    if (tokens.records) {
      const auto* record = reinterpret_cast<const int32_t*>(tokens.records + i * tokens.record_bytes);
      t = record[0];
      idx = record + 1;
      w = reinterpret_cast<const float*>(record + 1 + K);
    } else {
      t = tokens.tokens[i];
      idx = tokens.topk_idx + static_cast<std::size_t>(t) * K;
      w = tokens.topk_weights + static_cast<std::size_t>(t) * K;
    }
    out.token.push_back(t);
    int n_picks = 0;
    for (int k = 0; k < K; ++k) {
      const int rel = idx[k] - first_expert;
      if (idx[k] < 0 || rel < 0 || rel >= R * J) continue;
      // Insertion keeps picks sorted by (local rank, expert).
      int at = n_picks++;
      while (at > 0 && picks[at - 1].rel > rel) {
        picks[at] = picks[at - 1];
        --at;
      }
      picks[at] = Pick{rel, w[k]};
    }
    for (int a = 0; a < n_picks;) {
      const int ld = picks[a].rel / J;
      const RecvLayoutView& d = owners[ld];
      const int32_t q = d.token_base[source] + token_cursor[ld]++;
      EPCOMM_REQUIRE(q < d.token_base[source + 1], kMismatch,
                     "rank " << source << " sent more tokens to rank " << node * R + ld
                             << " than its layout announced");
      out.visit_rank.push_back(ld);
      out.visit_entry.push_back(q);
      for (; a < n_picks && picks[a].rel / J == ld; ++a) {
        const int j = picks[a].rel % J;
        const int64_t p = d.row_base[source * J + j] + row_cursor[picks[a].rel]++;
        EPCOMM_REQUIRE(p < d.expert_offset[j] + d.expert_count[j], kMismatch,
                       "rank " << source << " sent more rows for expert " << first_expert + picks[a].rel
                               << " than its layout announced");
        out.row.push_back(static_cast<int32_t>(p));
        out.weight.push_back(picks[a].weight);
      }
      out.row_begin.push_back(static_cast<int32_t>(out.row.size()));
    }
    out.visit_begin.push_back(static_cast<int32_t>(out.visit_rank.size()));
  }
}

}  // namespace epcomm::detail
