// SPDX-License-Identifier: MIT
#include "support/low_latency_reference.hpp"

#include <cstring>

#include "epcomm_kernels/codec.hpp"

namespace epcomm_test {
namespace {

using epcomm::DType;

const epcomm::kernels::Codec& ref(epcomm::Format f) { return epcomm::kernels::reference_codec_for(f); }
const epcomm::kernels::Codec& plain(DType t) { return ref(epcomm::kernels::plain_format(t)); }

}  // namespace

std::vector<float> round_to(const std::vector<float>& v, DType t) {
  const int n = static_cast<int>(v.size());
  std::vector<std::byte> b(v.size() * epcomm::dtype_size(t));
  std::vector<float> out(v.size());
  plain(t).encode_row(v.data(), DType::kF32, n, b.data());
  plain(t).decode_row(b.data(), n, out.data(), DType::kF32);
  return out;
}

std::vector<std::byte> encoded_source_row(const RankInput& in, int t, const epcomm::LowLatencyConfig& c) {
  const std::vector<float> row(in.x.begin() + static_cast<std::ptrdiff_t>(t) * c.hidden,
                               in.x.begin() + static_cast<std::ptrdiff_t>(t + 1) * c.hidden);
  const std::vector<std::byte> as_dtype = to_dtype(row, c.dtype);
  std::vector<std::byte> enc(epcomm::encoded_row_bytes(c.dispatch_format, c.hidden));
  ref(c.dispatch_format).encode_row(as_dtype.data(), c.dtype, c.hidden, enc.data());
  return enc;
}

std::vector<std::byte> expert_outputs(const epcomm::LowLatencyConfig& c, int first_expert, int num_local_experts,
                                      int64_t rows_per_expert, const void* rows, std::size_t row_bytes,
                                      const int32_t* counts) {
  const int H = c.hidden;
  const std::size_t out_row = static_cast<std::size_t>(H) * epcomm::dtype_size(c.dtype);
  std::vector<std::byte> y(static_cast<std::size_t>(num_local_experts * rows_per_expert) * out_row);
  std::vector<float> x(static_cast<std::size_t>(H)), f(static_cast<std::size_t>(H));
  for (int j = 0; j < num_local_experts; ++j) {
    for (int32_t q = 0; q < counts[j]; ++q) {
      const int64_t at = j * rows_per_expert + q;
      ref(c.dispatch_format)
          .decode_row(static_cast<const std::byte*>(rows) + at * static_cast<int64_t>(row_bytes), H, x.data(),
                      DType::kF32);
      for (int h = 0; h < H; ++h) f[h] = expert_fn(first_expert + j, h, x[h]);
      const std::vector<std::byte> b = to_dtype(round_to(f, c.dtype), c.dtype);
      std::memcpy(y.data() + static_cast<std::size_t>(at) * out_row, b.data(), out_row);
    }
  }
  return y;
}

std::vector<std::byte> expected_low_latency_combine(const RankInput& in, const epcomm::LowLatencyConfig& c,
                                                    RankInput* seen) {
  const int H = c.hidden, K = c.topk;
  const std::size_t out_row = static_cast<std::size_t>(H) * epcomm::dtype_size(c.dtype);
  std::vector<std::byte> out(static_cast<std::size_t>(in.num_tokens) * out_row);
  std::vector<float> xq(static_cast<std::size_t>(H)), y(static_cast<std::size_t>(H)), v(static_cast<std::size_t>(H)),
      acc(static_cast<std::size_t>(H));
  std::vector<std::byte> wire(epcomm::encoded_row_bytes(c.combine_format, H));
  if (seen) *seen = in;
  for (int t = 0; t < in.num_tokens; ++t) {
    const std::vector<std::byte> enc = encoded_source_row(in, t, c);
    ref(c.dispatch_format).decode_row(enc.data(), H, xq.data(), DType::kF32);
    if (seen) std::memcpy(seen->x.data() + static_cast<std::size_t>(t) * H, xq.data(), sizeof(float) * H);
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int k = 0; k < K; ++k) {
      const int e = in.topk_idx[static_cast<std::size_t>(t) * K + k];
      if (e < 0) continue;
      for (int h = 0; h < H; ++h) y[h] = expert_fn(e, h, xq[h]);
      const std::vector<std::byte> yb = to_dtype(round_to(y, c.dtype), c.dtype);
      ref(c.combine_format).encode_row(yb.data(), c.dtype, H, wire.data());
      ref(c.combine_format).decode_row(wire.data(), H, v.data(), DType::kF32);
      const float w = in.topk_weights[static_cast<std::size_t>(t) * K + k];
      for (int h = 0; h < H; ++h) {
        const float term = w * v[h];
        acc[h] = acc[h] + term;
      }
    }
    plain(c.dtype).encode_row(acc.data(), DType::kF32, H, out.data() + static_cast<std::size_t>(t) * out_row);
  }
  return out;
}

}  // namespace epcomm_test
