// SPDX-License-Identifier: MIT
// One iteration of each exchange path, cut into the phases the bench times
// (dispatch, combine) and those it does not (the expert, releasing buffers).
#pragma once

#include "baseline.hpp"
#include "common/memcpy_floor.hpp"
#include "common/parallel_copy.hpp"
#include "data.hpp"

#include <epcomm/exchange.hpp>

#include <mpi.h>

#include <cstddef>
#include <vector>

namespace epcomm_bench {

class EpcommPath {
 public:
  EpcommPath(epcomm::Exchange& exchange, const RankData& data, int first_expert);
  // Every later dispatch goes on `layout` (an earlier dispatch's, same routing).
  void use_layout(const epcomm::DispatchLayout& layout) { layout_ = layout; }

  void dispatch();
  // Copies the dispatched rows into the handle's expert_out_buffer() and applies
  // each local expert to its segment there.
  void run_experts();
  // combine_begin + wait (what combine() does) so the combine stats can be read.
  void combine();
  // Drops the dispatch handle, giving its in-flight slot back before the next
  // dispatch (the bench runs with a single slot).
  void end_iteration();

  const epcomm::DispatchHandle& route() const { return route_; }
  const void* out() const { return out_.data(); }
  // Bytes of the last dispatch + combine, this rank.
  epcomm::ExchangeStats stats() const;  // dispatch + combine
  epcomm::ExchangeStats dispatch_stats() const { return route_.stats(); }
  epcomm::ExchangeStats combine_stats() const { return combine_stats_; }

 private:
  epcomm::Exchange& exchange_;
  const RankData& data_;
  int first_expert_;
  epcomm::DispatchInput input_;
  epcomm::DispatchLayout layout_;
  epcomm::DispatchHandle route_;
  epcomm::ExchangeStats combine_stats_;
  std::vector<std::byte> out_;
};

// The baseline always moves BF16 rows (data.x_bf16).
class BaselinePath {
 public:
  BaselinePath(MPI_Comm comm, const RankData& data, int num_experts, int first_expert);

  void dispatch();
  void run_experts();
  void combine();
  void end_iteration() {}  // nothing is held between iterations

  const BaselineExchange& exchange() const { return exchange_; }
  const std::vector<float>& out() const { return out_; }

 private:
  BaselineExchange exchange_;
  const RankData& data_;
  int first_expert_;
  std::vector<std::byte> expert_out_;
  std::vector<float> out_;
};

// The memcpy floor (README.md): in the dispatch phase a copy of the bytes dispatch
// must write on this rank, in the combine phase one of the bytes combine must read,
// each split over `threads` threads, between two buffers of this rank.
class MemcpyFloorPath {
 public:
  MemcpyFloorPath(const FloorBytes& bytes, int threads);

  void dispatch() { copy_(dst_.data(), src_.data(), static_cast<std::size_t>(bytes_.dispatch)); }
  void run_experts() {}
  void combine() { copy_(dst_.data(), src_.data(), static_cast<std::size_t>(bytes_.combine)); }
  void end_iteration() {}

 private:
  FloorBytes bytes_;
  ParallelCopy copy_;
  std::vector<std::byte> src_;
  std::vector<std::byte> dst_;
};

}  // namespace epcomm_bench
