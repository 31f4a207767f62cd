// SPDX-License-Identifier: MIT
// The words and messages of the low-latency exchange, as both its host engine
// (runtime/src/low_latency) and its CUDA kernels (kernels/cuda/low_latency.cu)
// read and write them: arrival words, proxy message headers, the proxy command
// ring's layout. Plain C++ that nvcc compiles for the device as well.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define EPCOMM_WIRE_HD __host__ __device__ inline
#else
#define EPCOMM_WIRE_HD inline
#endif

namespace epcomm::kernels::low_latency {

// The word a writer stores last, after the rows it announces: the round (low 32
// bits), whether the writer rejected the round, and how many rows it wrote.
EPCOMM_WIRE_HD uint64_t pack_word(uint64_t round, bool rejected, uint32_t count) {
  return (round << 32) | (rejected ? uint64_t{1} << 31 : 0) | (count & 0x7fffffffu);
}
EPCOMM_WIRE_HD uint32_t word_round(uint64_t w) { return static_cast<uint32_t>(w >> 32); }
EPCOMM_WIRE_HD bool word_rejected(uint64_t w) { return ((w >> 31) & 1u) != 0; }
EPCOMM_WIRE_HD uint32_t word_count(uint64_t w) { return static_cast<uint32_t>(w & 0x7fffffffu); }

// Every proxy message starts with this header. Dispatch messages: header,
// int32 count per local expert (padded to 8 bytes), (int32 token, int32 k) of each
// row, then the rows, expert by expert. Combine messages: header, (token, k) of
// each row in a space for max_rows_to_rank rows, then the rows.
struct MessageHeader {
  uint64_t seq;
  uint32_t rejected;
  uint32_t rows;
  char reason[240];
};
static_assert(sizeof(MessageHeader) == 256);

EPCOMM_WIRE_HD std::size_t dispatch_meta_offset(int local_experts) {
  return sizeof(MessageHeader) + (sizeof(int32_t) * static_cast<std::size_t>(local_experts) + 7) / 8 * 8;
}
EPCOMM_WIRE_HD std::size_t combine_rows_offset(int64_t max_rows_to_rank) {
  return sizeof(MessageHeader) + 2 * sizeof(int32_t) * static_cast<std::size_t>(max_rows_to_rank);
}

// The device path's messages to a rank on another node, as the send kernels
// write them into pinned host staging and the receiver's proxy copies them into
// GPU memory (docs/low_latency.md, "The device path across nodes"):
//   dispatch: the source's arrival words [J], then (token, k) of slot i of local
//             expert j at [j][i] ([J][T] pairs), then token rows [T] of which the
//             message carries the first num_tokens (its length says how many);
//   combine:  the owner's arrival word, then the rows, in the order both sides
//             compute: by the owner's local expert, then slot.
EPCOMM_WIRE_HD std::size_t round_to_256(std::size_t bytes) { return (bytes + 255) / 256 * 256; }
EPCOMM_WIRE_HD std::size_t device_dispatch_meta_offset(int local_experts) {
  return round_to_256(sizeof(uint64_t) * static_cast<std::size_t>(local_experts));
}
EPCOMM_WIRE_HD std::size_t device_dispatch_rows_offset(int local_experts, int max_tokens) {
  return round_to_256(device_dispatch_meta_offset(local_experts) +
                      2 * sizeof(int32_t) * static_cast<std::size_t>(local_experts) * max_tokens);
}
EPCOMM_WIRE_HD std::size_t device_dispatch_message_bytes(int local_experts, int max_tokens, std::size_t row_bytes) {
  return round_to_256(device_dispatch_rows_offset(local_experts, max_tokens) + row_bytes * max_tokens);
}
inline constexpr std::size_t kDeviceCombineRowsOffset = 256;
EPCOMM_WIRE_HD std::size_t device_combine_message_bytes(int64_t max_rows_to_rank, std::size_t row_bytes) {
  return round_to_256(kDeviceCombineRowsOffset + row_bytes * static_cast<std::size_t>(max_rows_to_rank));
}

enum class ProxyKind : uint32_t { kDispatch = 0, kCombine = 1 };

// "The message of `kind` for rank `peer` of round `seq` is staged, `bytes` long."
struct ProxyCommand {
  ProxyKind kind;
  int32_t peer;
  uint64_t seq;
  uint64_t bytes;
};
static_assert(sizeof(ProxyCommand) == 24);

// The ring: head (commands pushed, written by the producer) and tail (commands
// taken, written by the proxy) on cache lines of their own, then the commands.
inline constexpr std::size_t kRingHeadOffset = 0;
inline constexpr std::size_t kRingTailOffset = 64;
inline constexpr std::size_t kRingCommandsOffset = 128;

}  // namespace epcomm::kernels::low_latency
