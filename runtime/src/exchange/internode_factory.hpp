// SPDX-License-Identifier: MIT
// Chooses and builds an exchange's inter-node tier (MPI or verbs) from its
// communicator and settings, by the group's transport setting (mpi, verbs, auto).
#pragma once

#include <mpi.h>

#include <functional>
#include <memory>

#include "exchange/internode.hpp"
#include "exchange/rail_memory.hpp"
#include "group_state.hpp"

namespace epcomm::detail {

// What the inter-node tier is built from.
struct InterNodeSetup {
  const GroupState& group;  // this rank's node and local index, transport setting, timeout
  MPI_Comm comm;            // the exchange's own communicator (ranks as in the group)
  int tag_base;             // the exchange's first MPI tag (mpi_tags.hpp)
  bool checksum;            // ExchangeConfig::checksum: a CRC32C with every block
  int max_inflight;         // operations in flight: bounds the live writes per peer
  bool carries_traffic;     // several nodes and room for tokens (else nothing crosses)
  // What this rank offers for GPU memory (detected by the engine), or null: the
  // tier then takes host memory only.
  const GpuDirectSupport* gpu_direct = nullptr;
};

// Collective over setup.comm. Calls register_regions on the chosen tier before it
// connects (again on MPI if verbs was tried and abandoned), so it must register
// the same regions in the same order on every rank.
std::unique_ptr<InterNode> make_internode(const InterNodeSetup& setup,
                                          const std::function<void(InterNode&)>& register_regions);

}  // namespace epcomm::detail
