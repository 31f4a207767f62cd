// SPDX-License-Identifier: MIT
#include "paths.hpp"

#include "expert.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace epcomm_bench {

EpcommPath::EpcommPath(epcomm::Exchange& exchange, const RankData& data, int first_expert)
    : exchange_(exchange), data_(data), first_expert_(first_expert) {
  input_.x = data.x.data();
  input_.topk_idx = data.topk_idx.data();
  input_.topk_weights = data.topk_weights.data();
  input_.num_tokens = data.tokens;
  out_.resize(data.x.size());
}

void EpcommPath::dispatch() {
  route_ = layout_.valid() ? exchange_.dispatch(input_, layout_) : exchange_.dispatch(input_);
}

void EpcommPath::run_experts() {
  // The outputs go where combine reads them, as an expert kernel would write them:
  // the baseline's outputs are likewise its MPI_Alltoallv send buffer, so neither
  // timed combine pays for a staging copy. Rows in the dtype's own format are
  // copied; quantised rows are decoded (an FP8 expert kernel would read them as they
  // are; the stand-in expert works on the dtype).
  const std::size_t row_bytes = static_cast<std::size_t>(data_.hidden) * epcomm::dtype_size(data_.dtype);
  auto* expert_out = static_cast<std::byte*>(route_.expert_out_buffer());
  route_.decode_rows(expert_out, data_.dtype);
  for (int j = 0; j < route_.num_local_experts(); ++j) {
    apply_expert(expert_out + route_.expert_offset(j) * row_bytes, data_.dtype,
                 route_.expert_count(j), data_.hidden, first_expert_ + j);
  }
}

void EpcommPath::combine() {
  epcomm::CombineHandle handle = exchange_.combine_begin(
      route_, route_.expert_out_buffer(), route_.num_rows(), out_.data(), data_.tokens);
  handle.wait();
  combine_stats_ = handle.stats();
}

void EpcommPath::end_iteration() { route_ = epcomm::DispatchHandle(); }

epcomm::ExchangeStats EpcommPath::stats() const {
  const epcomm::ExchangeStats d = route_.stats();
  return {d.internode_bytes + combine_stats_.internode_bytes,
          d.intranode_bytes + combine_stats_.intranode_bytes,
          d.layout_bytes + combine_stats_.layout_bytes};
}

BaselinePath::BaselinePath(MPI_Comm comm, const RankData& data, int num_experts,
                           int first_expert)
    : exchange_(comm, num_experts, data.hidden, epcomm::DType::kBF16),
      data_(data),
      first_expert_(first_expert),
      out_(static_cast<std::size_t>(data.tokens) * data.hidden) {}

void BaselinePath::dispatch() {
  exchange_.dispatch(data_.x_bf16.data(), data_.topk_idx.data(), data_.tokens, data_.topk);
}

void BaselinePath::run_experts() {
  const std::size_t row_bytes = exchange_.row_bytes();
  expert_out_.resize(static_cast<std::size_t>(exchange_.num_recv_rows()) * row_bytes);
  if (!expert_out_.empty()) std::memcpy(expert_out_.data(), exchange_.recv_rows(), expert_out_.size());
  for (int src = 0; src < exchange_.size(); ++src) {
    for (int j = 0; j < exchange_.experts_per_rank(); ++j) {
      apply_expert(expert_out_.data() + exchange_.recv_offset(src, j) * row_bytes,
                   epcomm::DType::kBF16, exchange_.recv_count(src, j), data_.hidden,
                   first_expert_ + j);
    }
  }
}

void BaselinePath::combine() {
  exchange_.combine(expert_out_.data(), data_.topk_weights.data(), out_.data());
}

MemcpyFloorPath::MemcpyFloorPath(const FloorBytes& bytes, int threads)
    : bytes_(bytes),
      copy_(threads),
      src_(static_cast<std::size_t>(std::max(bytes.dispatch, bytes.combine)), std::byte{1}),
      dst_(src_.size()) {
  copy_(dst_.data(), src_.data(), dst_.size());  // every page mapped before anything is timed
}

}  // namespace epcomm_bench
