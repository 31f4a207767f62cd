// SPDX-License-Identifier: MIT
#include "low_latency/device_proxy.hpp"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "device/cuda_call.hpp"
#include "device/cuda_scopes.hpp"
#include "epcomm_kernels/low_latency_wire.hpp"
#include "util/check.hpp"
#include "util/log.hpp"

namespace epcomm::detail {
namespace {

namespace wire = kernels::low_latency;

std::size_t round_up(std::size_t bytes) { return (bytes + 4095) / 4096 * 4096; }

}  // namespace

DeviceProxy::DeviceProxy(GroupState& group, const LowLatencyShape& shape, const SharedLayout& shared, int device,
                         std::byte* own_shared, std::byte* remote_landing, MPI_Comm comm, int tag_base)
    : group_(group),
      shape_(shape),
      shared_(shared),
      device_(device),
      own_shared_(own_shared),
      remote_landing_(remote_landing),
      dispatch_message_(wire::device_dispatch_message_bytes(shape.local_experts, shape.max_tokens, shape.dispatch_row)),
      combine_message_(wire::device_combine_message_bytes(shape.max_rows_to_rank(), shape.combine_row)) {
  const std::size_t remote = static_cast<std::size_t>(shape_.remote_ranks());
  // A round pushes one command of each kind per remote rank; a kernel waits
  // (bounded) only if the proxy fell 8 rounds behind.
  capacity_ = std::bit_ceil(static_cast<uint32_t>(8 * remote));
  ring_at_[0] = 0;
  ring_at_[1] = round_up(ProxyRing::bytes(capacity_));
  staging_at_ = ring_at_[1] + round_up(ProxyRing::bytes(capacity_));
  // Staging: two copies (by the round's parity) of each kind per remote rank.
  landing_at_ = staging_at_ + round_up(2 * remote * (dispatch_message_ + combine_message_));
  const std::size_t bytes = landing_at_ + round_up(remote * (dispatch_message_ + combine_message_));
  pinned_ = static_cast<std::byte*>(std::aligned_alloc(4096, bytes));
  EPCOMM_REQUIRE(pinned_ != nullptr, kSystem,
                 "cannot allocate " << bytes << " bytes of host memory for the low-latency exchange's proxy");
  try {
    std::memset(pinned_, 0, bytes);
    DeviceScope scope(device_);
    registration_ = std::make_unique<HostRegistration>(pinned_, bytes);
    cudaStream_t s = nullptr;
    EPCOMM_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    stream_ = s;
    for (int k = 0; k < 2; ++k) rings_.push_back(std::make_unique<ProxyRing>(pinned_ + ring_at_[k], capacity_));
    std::vector<int> remote_ranks;
    for (int r = 0; r < shape_.ranks; ++r) {
      if (r / shape_.ranks_per_node != group_.node) remote_ranks.push_back(r);
    }
    std::byte* landing = pinned_ + landing_at_;
    mpi_ = std::make_unique<MpiProxy>(
        comm, tag_base, std::move(remote_ranks),
        MpiProxy::Buffers{pinned_ + staging_at_, landing, dispatch_message_, 2},
        MpiProxy::Buffers{pinned_ + staging_at_ + 2 * remote * dispatch_message_, landing + remote * dispatch_message_,
                          combine_message_, 2},
        std::vector<ProxyRing*>{rings_[0].get(), rings_[1].get()}, *this, group_.timeout_s);
  } catch (...) {
    if (stream_ != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
    registration_.reset();
    std::free(pinned_);
    throw;
  }
}

DeviceProxy::~DeviceProxy() {
  // A send whose receive was matched completes at the next poll; give peers a
  // moment, not the whole timeout (a dead peer would hold the destructor).
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  bool leak = false;
  try {
    while ((mpi_->commands_pending() || mpi_->sends_pending()) && std::chrono::steady_clock::now() < until) {
      mpi_->poll();
    }
    leak = mpi_->sends_pending();
  } catch (const Error&) {
    leak = true;  // MPI failed: keep the buffers below
  }
  mpi_.reset();
  {
    DeviceScope scope(device_);
    cudaStreamSynchronize(static_cast<cudaStream_t>(stream_));
    cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
  }
  registration_.reset();
  // A send MPI still holds reads the staging memory: it must outlive the process.
  if (leak) {
    EPCOMM_LOG(kWarn, "low-latency exchange (device) dropped with proxy sends pending; keeping their buffers");
  } else {
    std::free(pinned_);
  }
}

int DeviceProxy::remote_index(int rank) const {
  const int first_local = group_.node * shape_.ranks_per_node;
  return rank < first_local ? rank : rank - shape_.ranks_per_node;
}

void DeviceProxy::arrived(ProxyKind kind, int peer, const std::byte* msg, std::size_t bytes) {
  DeviceScope scope(device_);
  RelaxedCapture relaxed;
  const auto s = static_cast<cudaStream_t>(stream_);
  const int P = shape_.ranks, J = shape_.local_experts, T = shape_.max_tokens;
  if (kind == ProxyKind::kDispatch) {
    // words [J], (token, k) [J][T], token rows: into the slots of (j, peer).
    const std::size_t rows_at = wire::device_dispatch_rows_offset(J, T);
    EPCOMM_REQUIRE(bytes >= rows_at && (bytes - rows_at) % shape_.dispatch_row == 0 &&
                       (bytes - rows_at) / shape_.dispatch_row <= static_cast<std::size_t>(T),
                   kMismatch,
                   "rank " << peer << " sent a low-latency dispatch message of " << bytes
                           << " bytes, not one of this exchange's shape (ranks made different exchanges?)");
    uint64_t first_word = 0;
    std::memcpy(&first_word, msg, sizeof first_word);
    const int parity = static_cast<int>(wire::word_round(first_word) & 1u);
    const std::size_t tokens = (bytes - rows_at) / shape_.dispatch_row;
    const std::size_t D = shape_.dispatch_row;
    const std::size_t pair = 2 * sizeof(int32_t);
    if (tokens > 0) {
      EPCOMM_CUDA(cudaMemcpyAsync(own_shared_ + shared_.rows[parity] + static_cast<std::size_t>(peer) * T * D,
                                  msg + rows_at, tokens * D, cudaMemcpyHostToDevice, s));
    }
    // Slot (j, peer, i) is at ((j * P + peer) * T + i) pairs: expert j's T pairs
    // every P * T pairs.
    EPCOMM_CUDA(cudaMemcpy2DAsync(own_shared_ + shared_.meta[parity] + static_cast<std::size_t>(peer) * T * pair,
                                  static_cast<std::size_t>(P) * T * pair, msg + wire::device_dispatch_meta_offset(J),
                                  static_cast<std::size_t>(T) * pair, static_cast<std::size_t>(T) * pair,
                                  static_cast<std::size_t>(J), cudaMemcpyHostToDevice, s));
    EPCOMM_CUDA(cudaMemcpyAsync(own_shared_ + shared_.counts[parity] + static_cast<std::size_t>(peer) * J * 8, msg,
                                static_cast<std::size_t>(J) * 8, cudaMemcpyHostToDevice, s));
  } else {
    // The owner's word, then its rows in the order dispatch fixed.
    uint64_t word = 0;
    std::memcpy(&word, msg, sizeof word);
    const std::size_t rows = wire::word_rejected(word) ? 0 : wire::word_count(word);
    EPCOMM_REQUIRE(rows <= static_cast<std::size_t>(shape_.max_rows_to_rank()) &&
                       bytes == wire::kDeviceCombineRowsOffset + rows * shape_.combine_row,
                   kMismatch,
                   "rank " << peer << " sent a low-latency combine message of " << bytes << " bytes for " << rows
                           << " rows, not one of this exchange's shape (ranks made different exchanges?)");
    if (rows > 0) {
      EPCOMM_CUDA(cudaMemcpyAsync(remote_landing_ + static_cast<std::size_t>(remote_index(peer)) *
                                                        shape_.max_rows_to_rank() * shape_.combine_row,
                                  msg + wire::kDeviceCombineRowsOffset, rows * shape_.combine_row,
                                  cudaMemcpyHostToDevice, s));
    }
    EPCOMM_CUDA(cudaMemcpyAsync(own_shared_ + shared_.combine_flags + static_cast<std::size_t>(peer) * 8, msg, 8,
                                cudaMemcpyHostToDevice, s));
  }
  // The landing buffer takes the next message when this returns.
  EPCOMM_CUDA(cudaStreamSynchronize(s));
}

}  // namespace epcomm::detail
