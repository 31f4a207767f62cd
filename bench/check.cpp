// SPDX-License-Identifier: MIT
#include "check.hpp"

#include "bf16.hpp"
#include "expert.hpp"
#include "mpi_check.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <sstream>

#include "epcomm_kernels/codec.hpp"

namespace epcomm_bench {
namespace {

bool is_padding(const epcomm::DispatchHandle& route, int64_t row) {
  return route.row_src_rank()[row] == -1 && route.row_weights()[row] == 0.0f;
}

// Rows [from, to) of the dispatch output must all be padding.
std::string check_padding(const epcomm::DispatchHandle& route, int64_t from, int64_t to) {
  for (int64_t row = from; row < to; ++row) {
    if (!is_padding(route, row)) {
      return "row " + std::to_string(row) + " lies outside every expert's real rows but is " +
             "not padding (source " + std::to_string(route.row_src_rank()[row]) + ", weight " +
             std::to_string(route.row_weights()[row]) + ")";
    }
  }
  return "";
}

}  // namespace

std::string check_dispatch(const epcomm::DispatchHandle& route, const BaselineExchange& reference,
                           const std::vector<RowSource>& sources, int alignment, epcomm::Format format) {
  const int experts = reference.experts_per_rank();
  if (route.num_local_experts() != experts) {
    return "dispatch reports " + std::to_string(route.num_local_experts()) +
           " local experts, expected " + std::to_string(experts);
  }
  const int hidden = static_cast<int>(reference.row_bytes() / epcomm::dtype_size(reference.wire()));
  const std::size_t row_bytes = epcomm::encoded_row_bytes(format, hidden);
  // The expected bytes of a row: the baseline's row itself, or that row encoded in
  // epcomm's wire format by the codec (epcomm encodes the same token the same way).
  const bool encode = format != epcomm::kernels::plain_format(reference.wire());
  std::vector<std::byte> encoded(encode ? row_bytes : 0);
  if (route.row_bytes() != row_bytes) {
    return "dispatch rows are " + std::to_string(route.row_bytes()) + " bytes, expected " +
           std::to_string(row_bytes);
  }
  const auto* rows = static_cast<const std::byte*>(route.rows());
  const auto* ref_rows = static_cast<const std::byte*>(reference.recv_rows());

  int64_t real_end = 0;  // end of the previous segment's real rows
  for (int j = 0; j < experts; ++j) {
    const int64_t offset = route.expert_offset(j);
    const int64_t count = route.expert_count(j);
    std::ostringstream where;
    where << "local expert " << j << " (segment at row " << offset << ", " << count << " rows): ";
    if (offset < real_end || offset % alignment != 0) {
      return where.str() + "segment does not start at a multiple of the alignment " +
             std::to_string(alignment) + " after row " + std::to_string(real_end);
    }
    if (std::string gap = check_padding(route, real_end, offset); !gap.empty()) return gap;

    // The baseline holds expert j's rows per source rank; epcomm holds them per
    // expert, by source rank then token. Walk both in epcomm's order.
    int64_t row = offset;
    for (int src = 0; src < reference.size(); ++src) {
      const int64_t ref_first = reference.recv_offset(src, j);
      for (int q = 0; q < reference.recv_count(src, j); ++q, ++row) {
        const RowSource& want = sources[ref_first + q];
        if (row >= offset + count) {
          return where.str() + "missing rows: the baseline has more, e.g. source rank " +
                 std::to_string(src) + " token " + std::to_string(want.token);
        }
        const int got_rank = route.row_src_rank()[row];
        const int got_token = route.row_src_token()[row];
        if (got_rank != src || got_token != want.token) {
          return where.str() + "row " + std::to_string(row) + " is source rank " +
                 std::to_string(got_rank) + " token " + std::to_string(got_token) +
                 ", expected rank " + std::to_string(src) + " token " +
                 std::to_string(want.token);
        }
        if (route.row_weights()[row] != want.weight) {
          return where.str() + "row " + std::to_string(row) + " has weight " +
                 std::to_string(route.row_weights()[row]) + ", expected " +
                 std::to_string(want.weight);
        }
        const std::byte* want_row = ref_rows + (ref_first + q) * reference.row_bytes();
        if (encode) {
          epcomm::kernels::codec_for(format).encode_row(want_row, reference.wire(), hidden, encoded.data());
          want_row = encoded.data();
        }
        if (std::memcmp(rows + row * row_bytes, want_row, row_bytes) != 0) {
          return where.str() + "row " + std::to_string(row) + " (source rank " +
                 std::to_string(src) + " token " + std::to_string(want.token) +
                 "): payload differs from the token's bytes";
        }
      }
    }
    if (row != offset + count) {
      return where.str() + "extra rows: the baseline has only " + std::to_string(row - offset);
    }
    real_end = row;
  }
  return check_padding(route, real_end, route.num_rows());
}

namespace {

// Error of one encode/decode in `format`, as a bound relative to the element
// (`rel`) plus one relative to the largest |value| of its 128-element tile (`tile`).
// FP8 E4M3: half an ulp of a 3-bit mantissa, 2^-4, and in the subnormal range half
// the smallest step, 2^-10 * amax / 448. LogFMT-n: half the ratio between
// neighbouring levels, at most (2^(32 / (2^(n-1) - 2)) - 1) / 2, and below the
// clamp (max - 32 in log2) half the lowest level, 2^-33 * 2 amax. BF16: 2^-8.
struct FormatError {
  double rel = 0;
  double tile = 0;
};

FormatError format_error(epcomm::Format f) {
  if (f == epcomm::Format::kFP8 || f == epcomm::Format::kFP8UE8M0) {
    // UE8M0 rounds the scale up to a power of two: the step grows up to 2x.
    const double widen = f == epcomm::Format::kFP8UE8M0 ? 2.0 : 1.0;
    return {std::ldexp(1.0, -4), widen * std::ldexp(1.0, -10) / 448.0};
  }
  if (const int bits = epcomm::logfmt_bits(f)) {
    return {(std::exp2(32.0 / ((1 << (bits - 1)) - 2)) - 1) / 2, std::ldexp(1.0, -32)};
  }
  if (f == epcomm::Format::kBF16) return {std::ldexp(1.0, -8), 0.0};
  return {};
}

}  // namespace

std::string check_combine(const void* epcomm_out, const std::vector<float>& baseline_out, const RankData& data,
                          epcomm::Format dispatch_format, epcomm::Format combine_format) {
  // Formats other than the dtype's add their error: dispatch's on the token (times
  // the experts' weighted scales), combine's on each owner partial a node peer
  // reads and on each node partial (whose magnitudes each sum to at most S below).
  // The dtype's own format is already in the 2^-7 S term for the node partials;
  // the owner partials add one more of its roundings.

  const epcomm::Format own = epcomm::kernels::plain_format(data.dtype);
  const FormatError d = dispatch_format == own ? FormatError{} : format_error(dispatch_format);
  const FormatError c = combine_format == own ? FormatError{} : format_error(combine_format);
  const double owner_round = combine_format == own ? format_error(own).rel : 0.0;
  std::vector<float> tile_amax(static_cast<std::size_t>((data.hidden + 127) / 128));
  for (int t = 0; t < data.tokens; ++t) {
    std::fill(tile_amax.begin(), tile_amax.end(), 0.0f);
    for (int h = 0; h < data.hidden; ++h) {
      tile_amax[h / 128] = std::max(tile_amax[h / 128], std::fabs(data.x_value(t, h)));
    }
    // out[t][h] = sum_k w_k * s_k * x[t][h] with s_k the expert's scale (> 0), so
    // S = sum_k |w_k * y_k[h]| = |x[t][h]| * sum_k |w_k| * s_k.
    float weight_scale = 0.0f;
    for (int k = 0; k < data.topk; ++k) {
      const std::size_t i = static_cast<std::size_t>(t) * data.topk + k;
      if (data.topk_idx[i] >= 0) {
        weight_scale += std::fabs(data.topk_weights[i]) * expert_scale(data.topk_idx[i]);
      }
    }
    for (int h = 0; h < data.hidden; ++h) {
      const std::size_t i = static_cast<std::size_t>(t) * data.hidden + h;
      float got;
      if (data.dtype == epcomm::DType::kBF16) {
        got = from_bf16(static_cast<const uint16_t*>(epcomm_out)[i]);
      } else {
        got = static_cast<const float*>(epcomm_out)[i];
      }
      const float want = baseline_out[i];
      // Tolerance: 2^-7 * S + 1e-6, S = sum_k |w_k * y_k|. BF16 keeps 8 significant
      // bits, so one round-to-nearest costs at most 2^-8 of the rounded magnitude.
      // For bf16, both paths see the same BF16 tokens and expert outputs; epcomm then
      // rounds twice more: the per-node partial sums on the wire (sum of errors
      // <= 2^-8 * S) and the BF16 output (<= 2^-8 * |out| <= 2^-8 * S), 2^-7 * S in
      // all, while the baseline sums in FP32. For f32, epcomm stays in FP32 and the
      // baseline is the one rounding twice: each token to BF16 before dispatch and
      // each expert output to BF16 before combine, again <= 2^-7 * S. FP32
      // summation-order differences are ~2^-24 * S; the 1e-6 absolute term keeps
      // elements whose S is ~0 from failing on them.
      const double s = weight_scale * std::fabs(data.x_value(t, h));
      const double amax = weight_scale * tile_amax[h / 128];
      // Two roundings in the combine format: the owner partials (at most S) and the
      // node partials summed from them (at most S plus the first's error).
      const double c_rel = c.rel * (2 + c.rel) + owner_round * (1 + d.rel);
      const float tolerance = static_cast<float>(std::ldexp(s, -7) + d.rel * s + d.tile * amax +
                                                 c_rel * s * (1 + d.rel) + c.tile * amax * 4 + 1e-6);
      if (!(std::fabs(got - want) <= tolerance)) {
        std::ostringstream msg;
        msg << "token " << t << " element " << h << ": epcomm " << got << ", baseline "
            << want << ", tolerance " << tolerance;
        return msg.str();
      }
    }
  }
  return "";
}

bool all_ranks_pass(MPI_Comm comm, const std::string& local_failure, std::string& failure) {
  int rank = 0;
  mpi_check(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
  const int mine = local_failure.empty() ? INT_MAX : rank;
  int first = INT_MAX;
  mpi_check(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm), "MPI_Allreduce(check)");
  if (first == INT_MAX) return true;

  // Collectives only: point-to-point on the group's communicator could match
  // messages of epcomm's own protocol.
  int length = static_cast<int>(local_failure.size());
  mpi_check(MPI_Bcast(&length, 1, MPI_INT, first, comm), "MPI_Bcast(check)");
  std::string text = rank == first ? local_failure : std::string(length, ' ');
  mpi_check(MPI_Bcast(text.data(), length, MPI_CHAR, first, comm), "MPI_Bcast(check)");
  failure = "rank " + std::to_string(first) + ": " + text;
  return false;
}

}  // namespace epcomm_bench
