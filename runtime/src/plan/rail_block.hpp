// SPDX-License-Identifier: MIT
// The dispatch block one rank sends to its rail peer on another node: one record
// per token (the token's index, its top-k expert ids, its top-k weights,
// `record_bytes` apart), then the tokens' encoded rows in the same order.
//
// The records' part is padded to a multiple of 16 bytes. With it, a block that
// starts on a 16-byte boundary has its rows start on one too, and with rows whose
// size is a multiple of 16 every block of a buffer does: the GPU then packs and
// places a block's rows 16 bytes a thread. Unpadded, 68-byte records (top-8) left
// the rows of most blocks unaligned and those copies ran a byte at a time. The
// padding costs at most 15 bytes a block on the wire, against a row of kilobytes.
// Pure arithmetic, shared by the sender, the receiver and the GPU placement.
#pragma once

#include <cstddef>

namespace epcomm::detail {

constexpr std::size_t kRailBlockAlign = 16;

// Bytes of the records of `tokens` tokens, padding included.
constexpr std::size_t rail_records_bytes(std::size_t tokens, std::size_t record_bytes) {
  return (tokens * record_bytes + kRailBlockAlign - 1) / kRailBlockAlign * kRailBlockAlign;
}

// Bytes of a whole block of `tokens` tokens.
constexpr std::size_t rail_block_bytes(std::size_t tokens, std::size_t record_bytes, std::size_t row_bytes) {
  return rail_records_bytes(tokens, record_bytes) + tokens * row_bytes;
}

}  // namespace epcomm::detail
