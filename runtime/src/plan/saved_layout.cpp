// SPDX-License-Identifier: MIT
#include "plan/saved_layout.hpp"

#include <algorithm>
#include <sstream>

namespace epcomm::detail {
namespace {

// "tokens to expert 5: 3, the layout was made for 2" for the first index where the
// counts differ, or empty.
std::string first_difference(const char* what, const std::vector<int32_t>& saved, const int32_t* now) {
  for (std::size_t i = 0; i < saved.size(); ++i) {
    if (saved[i] == now[i]) continue;
    std::ostringstream os;
    os << "this rank's topk_idx sends " << now[i] << " tokens to " << what << " " << i << ", the layout was made for "
       << saved[i];
    return os.str();
  }
  return {};
}

}  // namespace

SavedLayout save_layout(const TokenRoutes& routes, const RecvLayoutView& layout,
                        const std::vector<int32_t>& rail_rows) {
  SavedLayout s;
  s.expert_tokens = routes.expert_tokens;
  s.rank_tokens = routes.rank_tokens;
  const int N = static_cast<int>(routes.node_offset.size()) - 1;
  for (int n = 0; n < N; ++n) s.node_tokens.push_back(routes.node_count(n));
  s.num_sources = layout.num_sources;
  s.num_local_experts = layout.num_local_experts;
  const int S = layout.num_sources, J = layout.num_local_experts;
  s.row_base.assign(layout.row_base, layout.row_base + static_cast<std::size_t>(S) * J);
  s.token_base.assign(layout.token_base, layout.token_base + S + 1);
  s.expert_offset.assign(layout.expert_offset, layout.expert_offset + J + 1);
  s.expert_count.assign(layout.expert_count, layout.expert_count + J);
  s.rail_rows = rail_rows;
  return s;
}

void restore_layout(const SavedLayout& saved, RecvLayoutView& out) {
  out.num_sources = saved.num_sources;
  out.num_local_experts = saved.num_local_experts;
  std::copy(saved.row_base.begin(), saved.row_base.end(), out.row_base);
  std::copy(saved.token_base.begin(), saved.token_base.end(), out.token_base);
  std::copy(saved.expert_offset.begin(), saved.expert_offset.end(), out.expert_offset);
  std::copy(saved.expert_count.begin(), saved.expert_count.end(), out.expert_count);
}

std::string first_count_difference(const SavedLayout& saved, const TokenRoutes& routes) {
  std::string d = first_difference("expert", saved.expert_tokens, routes.expert_tokens.data());
  if (d.empty()) d = first_difference("rank", saved.rank_tokens, routes.rank_tokens.data());
  if (d.empty()) {
    std::vector<int32_t> nodes;
    for (std::size_t n = 0; n < saved.node_tokens.size(); ++n) nodes.push_back(routes.node_count(static_cast<int>(n)));
    d = first_difference("node", saved.node_tokens, nodes.data());
  }
  return d;
}

}  // namespace epcomm::detail
