// SPDX-License-Identifier: MIT
// The host row mover: the CPU codecs (SIMD, epcomm_kernels) run each batch at once.
#include <algorithm>
#include <cstring>

#include "epcomm_kernels/codec.hpp"
#include "exchange/row_mover.hpp"

namespace epcomm::detail {
namespace {

class HostRowMover final : public RowMover {
 public:
  void after(void*) override {}
  void copy(const RowCopies& c) override {
    for (std::size_t i = 0; i < c.size(); ++i) std::memcpy(c.dst[i], c.src[i], c.row_bytes);
  }
  void copy_bytes(void* dst, const void* src, std::size_t bytes) override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
  }
  void zero(void* dst, std::size_t bytes) override {
    if (bytes > 0) std::memset(dst, 0, bytes);
  }
  void accumulate(Format format, const RowSums& sums, int hidden, bool from_zero, float* acc) override {
    const kernels::Codec& codec = kernels::codec_for(format);
    for (int64_t d = 0; d < sums.destinations(); ++d) {
      float* out = acc + d * hidden;
      if (from_zero) std::fill(out, out + hidden, 0.0f);
      for (int32_t j = sums.offsets[d]; j < sums.offsets[d + 1]; ++j) {
        codec.accumulate_row(sums.rows[j], hidden, sums.weights[j], out);
      }
    }
  }
  void encode(Format format, const void* src, DType src_type, int64_t rows, int hidden, void* dst) override {
    const kernels::Codec& codec = kernels::codec_for(format);
    const std::size_t in_row = static_cast<std::size_t>(hidden) * dtype_size(src_type);
    const std::size_t out_row = codec.row_bytes(hidden);
    first_bad_ = -1;
    for (int64_t r = 0; r < rows; ++r) {
      const int bad = codec.encode_row(static_cast<const std::byte*>(src) + r * in_row, src_type, hidden,
                                       static_cast<std::byte*>(dst) + r * out_row);
      if (bad >= 0 && first_bad_ < 0) first_bad_ = r * hidden + bad;
    }
  }
  void decode(Format format, const void* src, int64_t rows, int hidden, void* dst, DType dst_type) override {
    const kernels::Codec& codec = kernels::codec_for(format);
    const std::size_t in_row = codec.row_bytes(hidden);
    const std::size_t out_row = static_cast<std::size_t>(hidden) * dtype_size(dst_type);
    for (int64_t r = 0; r < rows; ++r) {
      codec.decode_row(static_cast<const std::byte*>(src) + r * in_row, hidden,
                       static_cast<std::byte*>(dst) + r * out_row, dst_type);
    }
  }
  void encode_tokens(Format format, const void* x, DType x_type, int hidden, const std::vector<int32_t>& tokens,
                     void* dst) override {
    const kernels::Codec& codec = kernels::codec_for(format);
    const std::size_t in_row = static_cast<std::size_t>(hidden) * dtype_size(x_type);
    const std::size_t out_row = codec.row_bytes(hidden);
    first_bad_ = -1;
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      const std::size_t t = static_cast<std::size_t>(tokens[i]);
      const int bad = codec.encode_row(static_cast<const std::byte*>(x) + t * in_row, x_type, hidden,
                                       static_cast<std::byte*>(dst) + t * out_row);
      if (bad >= 0 && first_bad_ < 0) first_bad_ = static_cast<int64_t>(i) * hidden + bad;
    }
  }
  int64_t first_bad() override { return first_bad_; }
  void upload(void* dst, const void* src, std::size_t bytes) override {
    if (dst != src && bytes > 0) std::memcpy(dst, src, bytes);
  }
  void download(void* dst, const void* src, std::size_t bytes) override { upload(dst, src, bytes); }
  bool idle() override { return true; }
  void synchronize() override {}

 private:
  int64_t first_bad_ = -1;
};

}  // namespace

std::unique_ptr<RowMover> make_host_row_mover() { return std::make_unique<HostRowMover>(); }

}  // namespace epcomm::detail
