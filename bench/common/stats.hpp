// SPDX-License-Identifier: MIT
// Order statistics of a phase's per-iteration times: min, p10, p50 (median), p90,
// max, by linear interpolation between order statistics (numpy's default), so the
// median of an even count is the mean of the middle two.
#pragma once

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <vector>

namespace epcomm_bench {

struct Spread {
  double min = 0, p10 = 0, p50 = 0, p90 = 0, max = 0;
};

// Quantile q (0..1) of sorted, non-empty values.
inline double sorted_quantile(const std::vector<double>& sorted, double q) {
  const double at = q * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<std::size_t>(at);
  const std::size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (at - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

// Every field multiplied by scale (e.g. 1e6 for seconds to microseconds).
inline Spread spread_of(std::vector<double> values, double scale = 1.0) {
  if (values.empty()) throw std::invalid_argument("spread_of: no values");
  std::sort(values.begin(), values.end());
  return {values.front() * scale, sorted_quantile(values, 0.1) * scale, sorted_quantile(values, 0.5) * scale,
          sorted_quantile(values, 0.9) * scale, values.back() * scale};
}

}  // namespace epcomm_bench
