// SPDX-License-Identifier: MIT
#include "plan/node_layout.hpp"

namespace epcomm::detail {

void build_recv_layout(const int32_t* expert_tokens, const int32_t* rank_tokens, int alignment,
                       RecvLayoutView& out) {
  const int S = out.num_sources;
  const int J = out.num_local_experts;
  int64_t row = 0;
  for (int j = 0; j < J; ++j) {
    out.expert_offset[j] = row;
    int64_t count = 0;
    for (int s = 0; s < S; ++s) {
      out.row_base[s * J + j] = static_cast<int32_t>(row + count);
      count += expert_tokens[s * J + j];
    }
    out.expert_count[j] = count;
    row += (count + alignment - 1) / alignment * alignment;
  }
  out.expert_offset[J] = row;

  int32_t tok = 0;
  for (int s = 0; s < S; ++s) {
    out.token_base[s] = tok;
    tok += rank_tokens[s];
  }
  out.token_base[S] = tok;
}

}  // namespace epcomm::detail
