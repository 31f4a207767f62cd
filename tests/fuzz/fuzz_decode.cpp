// SPDX-License-Identifier: MIT
// Fuzz target: decode and accumulate arbitrary bytes as a row of any format and
// width. The row lives in a heap block of exactly row_bytes(hidden) (and outputs of
// exactly hidden elements), so AddressSanitizer sees any read or write past them.
#include <epcomm/formats.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

#include "epcomm_kernels/codec.hpp"

namespace {

epcomm::Format format_from_byte(uint8_t b) {
  constexpr epcomm::Format kFixed[] = {epcomm::Format::kF32, epcomm::Format::kBF16, epcomm::Format::kFP8,
                                       epcomm::Format::kFP8UE8M0};
  const int pick = b % 18;
  return pick < 4 ? kFixed[pick] : static_cast<epcomm::Format>(static_cast<int>(epcomm::Format::kLogFMT3) + pick - 4);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  const epcomm::Format format = format_from_byte(data[0]);
  const int hidden = 1 + ((data[1] | (data[2] << 8)) % 1024);
  const epcomm::kernels::Codec& codec = epcomm::kernels::codec_for(format);
  const std::size_t row_bytes = codec.row_bytes(hidden);
  auto row = std::make_unique<std::byte[]>(row_bytes);
  const std::size_t given = size - 3 < row_bytes ? size - 3 : row_bytes;
  std::memcpy(row.get(), data + 3, given);
  std::memset(row.get() + given, 0, row_bytes - given);
  auto f32 = std::make_unique<float[]>(static_cast<std::size_t>(hidden));
  auto bf16 = std::make_unique<uint16_t[]>(static_cast<std::size_t>(hidden));
  codec.decode_row(row.get(), hidden, f32.get(), epcomm::DType::kF32);
  codec.decode_row(row.get(), hidden, bf16.get(), epcomm::DType::kBF16);
  codec.accumulate_row(row.get(), hidden, 0.5f, f32.get());
  // Re-encoding what was decoded must stay in bounds too (NaN/Inf may be refused).
  (void)codec.encode_row(f32.get(), epcomm::DType::kF32, hidden, row.get());
  return 0;
}
