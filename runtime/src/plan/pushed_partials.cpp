// SPDX-License-Identifier: MIT
#include "plan/pushed_partials.hpp"

namespace epcomm::detail {

std::vector<int64_t> pushed_partial_bases(int forwarder, const std::vector<const int32_t*>& token_base, int num_nodes) {
  const int R = static_cast<int>(token_base.size());
  std::vector<int64_t> base(static_cast<std::size_t>(num_nodes) * R, 0);
  int64_t at = 0;
  for (int n = 0; n < num_nodes; ++n) {
    const int s = n * R + forwarder;
    for (int ld = 0; ld < R; ++ld) {
      if (ld == forwarder) continue;
      base[static_cast<std::size_t>(n) * R + ld] = at - token_base[ld][s];
      at += token_base[ld][s + 1] - token_base[ld][s];
    }
  }
  return base;
}

}  // namespace epcomm::detail
