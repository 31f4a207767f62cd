#include "epcomm_kernels/codec.hpp"

#include <cstring>

#include "epcomm_kernels/bf16.hpp"

namespace epcomm::kernels {
namespace {

// Converts a row between the plain dtypes; same type is a copy.
void convert_row(const void* src, DType src_type, int n, void* dst, DType dst_type) {
  if (src_type == dst_type) {
    std::memcpy(dst, src, static_cast<std::size_t>(n) * dtype_size(src_type));
  } else if (src_type == DType::kF32) {
    f32_to_bf16_row(static_cast<const float*>(src), n, static_cast<uint16_t*>(dst));
  } else {
    bf16_to_f32_row(static_cast<const uint16_t*>(src), n, static_cast<float*>(dst));
  }
}

// A plain format stores the row as an array of `kType`.
template <DType kType>
struct PlainCodec {
  static std::size_t row_bytes(int hidden) {
    return static_cast<std::size_t>(hidden) * dtype_size(kType);
  }
  static void encode(const void* src, DType src_type, int hidden, void* dst) {
    convert_row(src, src_type, hidden, dst, kType);
  }
  static void decode(const void* src, int hidden, void* dst, DType dst_type) {
    convert_row(src, kType, hidden, dst, dst_type);
  }
  static void accumulate(const void* src, int hidden, float weight, float* acc) {
    if constexpr (kType == DType::kF32) {
      accumulate_f32_row(static_cast<const float*>(src), hidden, weight, acc);
    } else {
      accumulate_bf16_row(static_cast<const uint16_t*>(src), hidden, weight, acc);
    }
  }
  static constexpr Codec table(Format f) {
    return Codec{f, &row_bytes, &encode, &decode, &accumulate};
  }
};

constexpr Codec kF32Codec = PlainCodec<DType::kF32>::table(Format::kF32);
constexpr Codec kBF16Codec = PlainCodec<DType::kBF16>::table(Format::kBF16);

}  // namespace

const Codec& codec_for(Format format) {
  return format == Format::kF32 ? kF32Codec : kBF16Codec;
}

Format plain_format(DType dtype) { return dtype == DType::kF32 ? Format::kF32 : Format::kBF16; }

}  // namespace epcomm::kernels
