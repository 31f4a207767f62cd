// SPDX-License-Identifier: MIT
// Whether the GPUs of a node's ranks can map each other's memory with CUDA IPC.
// Ranks on one GPU always can; ranks on two GPUs only where the driver grants peer
// access between them (cudaDeviceCanAccessPeer): not, for instance, between PCIe
// GPUs under different CPU sockets or in many virtual machines. Where they cannot,
// the exchange keeps what node peers write or read in the node's shared memory.
#pragma once

#include <string>

#include "group_state.hpp"

namespace epcomm::detail {

struct NodePeerAccess {
  bool all = true;     // every rank's GPU can map every node peer's GPU memory
  bool forced = false;  // not all, because EPCOMM_GPU_PEER_ACCESS=0 says so
  std::string why_not;  // when not all: which ranks lack access, or set the variable
};

// Collective over the node; device < 0: the calling thread's current device. A rank
// that cannot use a CUDA device at all does not count against access: building the
// exchange's device resources reports its error on every rank.
NodePeerAccess node_peer_access(GroupState& group, int device);

}  // namespace epcomm::detail
