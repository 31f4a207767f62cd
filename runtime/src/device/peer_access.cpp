// SPDX-License-Identifier: MIT
#include "device/peer_access.hpp"

#include <cuda_runtime_api.h>

#include <cstring>
#include <vector>

#include "util/agree.hpp"
#include "util/check.hpp"
#include "util/env.hpp"

namespace epcomm::detail {
namespace {

// A GPU as every process names it, whatever its devices are numbered there.
struct GpuName {
  unsigned char uuid[16];
  int known;  // 0: this rank has no usable device
};

bool succeeded(cudaError_t s) {
  if (s == cudaSuccess) return true;
  cudaGetLastError();
  return false;
}

bool uuid_of(int device, unsigned char* uuid) {
  cudaDeviceProp p{};
  if (!succeeded(cudaGetDeviceProperties(&p, device))) return false;
  std::memcpy(uuid, p.uuid.bytes, sizeof p.uuid.bytes);
  return true;
}

// The device this process numbers `name`, or -1 where it does not see it.
int visible_index(const GpuName& name) {
  int count = 0;
  if (!succeeded(cudaGetDeviceCount(&count))) return -1;
  for (int d = 0; d < count; ++d) {
    unsigned char uuid[16];
    if (uuid_of(d, uuid) && std::memcmp(uuid, name.uuid, sizeof uuid) == 0) return d;
  }
  return -1;
}

}  // namespace

NodePeerAccess node_peer_access(GroupState& group, int device) {
  NodePeerAccess access;
  if (group.ranks_per_node == 1) return access;  // no node peer to reach
  // A bad value fails every rank of the node, after the collectives below.
  bool allowed = true;
  std::string bad_setting;
  try {
    allowed = env::gpu_peer_access();
  } catch (const Error& e) {
    bad_setting = e.what();
  }
  GpuName mine{};
  int count = 0;
  if (succeeded(cudaGetDeviceCount(&count)) && count > 0 && (device >= 0 || succeeded(cudaGetDevice(&device))) &&
      device < count) {
    mine.known = uuid_of(device, mine.uuid) ? 1 : 0;
  }
  std::vector<GpuName> all(group.ranks_per_node);
  EPCOMM_MPI(MPI_Allgather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, group.node_comm));
  bool reaches_all = true;
  for (int ld = 0; ld < group.ranks_per_node && mine.known; ++ld) {
    if (!all[ld].known || std::memcmp(all[ld].uuid, mine.uuid, sizeof mine.uuid) == 0) continue;
    const int peer = visible_index(all[ld]);
    int can = 0;
    if (peer < 0 || !succeeded(cudaDeviceCanAccessPeer(&can, device, peer))) can = 0;
    reaches_all = reaches_all && can != 0;
  }
  const auto label = [&](int ld) { return group.global_rank(group.node, ld); };
  const std::string lacking = ranks_that_failed(group.node_comm, reaches_all, label);
  const std::string forcing = ranks_that_failed(group.node_comm, allowed, label);
  const std::string unreadable = ranks_that_failed(group.node_comm, bad_setting.empty(), label);
  if (!bad_setting.empty()) throw Error(ErrorCode::kInvalidArgument, bad_setting);
  EPCOMM_REQUIRE(unreadable.empty(), kInvalidArgument,
                 "node peer(s) " << unreadable << " have an invalid EPCOMM_GPU_PEER_ACCESS; see their errors");
  if (!lacking.empty()) {
    access.all = false;
    access.why_not = "the GPUs of ranks " + lacking + " have no peer access to every GPU of their node peers";
  } else if (!forcing.empty()) {
    access.all = false;
    access.forced = true;
    access.why_not = "EPCOMM_GPU_PEER_ACCESS=0 on ranks " + forcing;
  }
  return access;
}

}  // namespace epcomm::detail
