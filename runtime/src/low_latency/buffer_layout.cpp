// SPDX-License-Identifier: MIT
#include "low_latency/buffer_layout.hpp"

#include <epcomm/formats.hpp>

#include "util/check.hpp"

namespace epcomm::detail {
namespace {

std::size_t round_up(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

// Consecutive regions, each starting on a 256-byte boundary (a cache line for the
// host, a full-width line of GPU stores).
class Offsets {
 public:
  std::size_t take(std::size_t bytes) {
    const std::size_t at = end_;
    end_ = round_up(end_ + bytes);
    return at;
  }
  std::size_t end() const { return end_; }

 private:
  std::size_t end_ = 0;
};

}  // namespace

LowLatencyShape LowLatencyShape::of(const LowLatencyConfig& c, int ranks, int ranks_per_node) {
  EPCOMM_REQUIRE(ranks >= 1 && ranks_per_node >= 1 && ranks % ranks_per_node == 0, kInvalidArgument,
                 "ranks=" << ranks << " is not a multiple of ranks_per_node=" << ranks_per_node);
  EPCOMM_REQUIRE(c.num_experts > 0 && c.num_experts % ranks == 0, kInvalidArgument,
                 "num_experts=" << c.num_experts << " must be a positive multiple of the group size " << ranks);
  EPCOMM_REQUIRE(c.topk >= 1 && c.topk <= c.num_experts, kInvalidArgument,
                 "topk=" << c.topk << " must be in [1, num_experts=" << c.num_experts << "]");
  EPCOMM_REQUIRE(c.hidden >= 1, kInvalidArgument, "hidden=" << c.hidden << " must be positive");
  EPCOMM_REQUIRE(c.max_tokens_per_rank >= 1 && c.max_tokens_per_rank <= (1 << 20), kInvalidArgument,
                 "max_tokens_per_rank=" << c.max_tokens_per_rank << " must be in [1, 2^20]");
  EPCOMM_REQUIRE(c.dtype == DType::kF32 || c.dtype == DType::kBF16, kInvalidArgument,
                 "unknown dtype value " << static_cast<int>(c.dtype));
  const Format d = c.dispatch_format;
  EPCOMM_REQUIRE(d == Format::kBF16 || d == Format::kF32 || d == Format::kFP8 || d == Format::kFP8UE8M0,
                 kInvalidArgument,
                 "dispatch_format " << to_string(d) << " (value " << static_cast<int>(d)
                                    << ") is not one of bf16, f32, fp8, fp8-ue8m0 for the low-latency exchange");
  const Format k = c.combine_format;
  EPCOMM_REQUIRE(k == Format::kBF16 || k == Format::kF32 || logfmt_bits(k) != 0, kInvalidArgument,
                 "combine_format " << to_string(k) << " (value " << static_cast<int>(k)
                                   << ") is not one of bf16, f32, logfmt<n> for the low-latency exchange");
  EPCOMM_REQUIRE(c.memory == MemorySpace::kHost || c.memory == MemorySpace::kDevice, kInvalidArgument,
                 "unknown memory space value " << static_cast<int>(c.memory));
  // The upper bound, the device's SM count, is checked with the device.
  EPCOMM_REQUIRE(c.gpu_sm_budget >= 0, kInvalidArgument,
                 "LowLatencyConfig::gpu_sm_budget=" << c.gpu_sm_budget << " is negative (0 = no bound)");
  LowLatencyShape s;
  s.ranks = ranks;
  s.ranks_per_node = ranks_per_node;
  s.local_experts = c.num_experts / ranks;
  s.max_tokens = c.max_tokens_per_rank;
  s.topk = c.topk;
  s.hidden = c.hidden;
  s.dispatch_row = encoded_row_bytes(d, c.hidden);
  s.combine_row = encoded_row_bytes(k, c.hidden);
  s.out_row = static_cast<std::size_t>(c.hidden) * dtype_size(c.dtype);
  // One proxy message carries everything a rank sends one other rank.
  EPCOMM_REQUIRE(static_cast<double>(s.dispatch_message_bytes()) < 2147483647.0, kInvalidArgument,
                 "max_tokens_per_rank=" << c.max_tokens_per_rank << " x " << s.dispatch_row
                                        << " bytes per row exceeds one MPI message (2 GiB); lower it");
  return s;
}

// Messages lie back to back, one per remote rank: each starts 256-byte aligned
// so its header and (token, k) pairs are aligned too.
std::size_t LowLatencyShape::dispatch_message_bytes() const {
  return round_up(kernels::low_latency::dispatch_meta_offset(local_experts) +
                  static_cast<std::size_t>(max_rows_to_rank()) * (2 * sizeof(int32_t) + dispatch_row));
}

std::size_t LowLatencyShape::combine_message_bytes() const {
  return round_up(kernels::low_latency::combine_rows_offset(max_rows_to_rank()) +
                  static_cast<std::size_t>(max_rows_to_rank()) * combine_row);
}

SharedLayout::SharedLayout(const LowLatencyShape& s) {
  Offsets o;
  const std::size_t slots = static_cast<std::size_t>(s.local_experts) * s.ranks * s.max_tokens;
  dispatch_reject = o.take(sizeof(RejectRecord));
  combine_reject = o.take(sizeof(RejectRecord));
  for (int p = 0; p < 2; ++p) {
    counts[p] = o.take(sizeof(uint64_t) * s.ranks * s.local_experts);
    meta[p] = o.take(2 * sizeof(int32_t) * slots);
    rows[p] = o.take(s.dispatch_row * slots);
  }
  combine_flags = o.take(sizeof(uint64_t) * s.ranks);
  combine_rows = o.take(s.combine_row * static_cast<std::size_t>(s.max_tokens) * s.topk);
  bytes = o.end();
}

PrivateLayout::PrivateLayout(const LowLatencyShape& s) {
  Offsets o;
  const std::size_t out = static_cast<std::size_t>(s.local_experts) * s.rows_per_expert();
  out_rows = o.take(s.dispatch_row * out);
  out_counts = o.take(sizeof(int32_t) * s.local_experts);
  out_src_rank = o.take(sizeof(int32_t) * out);
  out_src_token = o.take(sizeof(int32_t) * out);
  out_k = o.take(sizeof(int32_t) * out);
  const std::size_t remote = static_cast<std::size_t>(s.remote_ranks());
  dispatch_staging = o.take(s.dispatch_message_bytes() * remote);
  dispatch_landing = o.take(s.dispatch_message_bytes() * remote);
  combine_staging = o.take(s.combine_message_bytes() * remote);
  combine_landing = o.take(s.combine_message_bytes() * remote);
  bytes = o.end();
}

}  // namespace epcomm::detail
