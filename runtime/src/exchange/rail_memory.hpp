// SPDX-License-Identifier: MIT
// Where an exchange on GPU memory keeps the blocks its inter-node tier moves (the
// "rails"): in pinned host memory, which the GPU packs and unpacks chunk by chunk
// (staging), or in GPU memory that the tier reads and writes itself (GPU direct):
//
//   MPI    CUDA-aware MPI: the library takes GPU pointers (Open MPI's <mpi-ext.h>,
//          transport/cuda_aware_mpi.hpp).
//   verbs  GPUDirect RDMA: GPU memory exported as a dma-buf and registered with
//          ibv_reg_dmabuf_mr (device/dmabuf_export.hpp, memory_region.hpp).
//
// Detection runs once at construction; the choice is made in one place, where the
// engine registers its regions with the tier (InterNode::register_region), and is
// logged once per rank. It is each rank's own: a block in host memory and one in
// GPU memory are moved alike by either tier, so ranks may differ.
//
// EPCOMM_GPU_DIRECT=auto (default) takes GPU direct where detected, 0 never, 1
// requires it (construction fails on every rank where it is missing).
#pragma once

#include <epcomm/types.hpp>

#include <string>

#include "group_state.hpp"
#include "transport/cuda_aware_mpi.hpp"

namespace epcomm::detail {

enum class GpuDirectMode { kAuto, kOff, kOn };

// EPCOMM_GPU_DIRECT; throws Error(kInvalidArgument) naming a bad value.
GpuDirectMode gpu_direct_mode();
const char* to_string(GpuDirectMode mode);  // "auto", "0", "1"

// What this rank's MPI library, rdma-core build and GPU offer for moving GPU
// memory between nodes without host staging.
struct GpuDirectSupport {
  CudaAwareMpi mpi;
  // Why the verbs tier cannot register GPU memory (no ibv_reg_dmabuf_mr in this
  // build, no verbs tier, a GPU that cannot export dma-bufs); empty when it can
  // try (the adapter may still refuse: see choose_rail_memory's caller).
  std::string dmabuf_unsupported;
  // "CUDA-aware MPI: no (...); GPUDirect RDMA (dma-buf): yes" for the log.
  std::string describe() const;
};

// device: the exchange's GPU (< 0: the calling thread's current one).
GpuDirectSupport detect_gpu_direct(int device);

// Whether an exchange could take GPU direct on some tier (so it sets GPU send
// blocks aside before the tier is chosen).
bool gpu_direct_may_apply(GpuDirectMode mode, bool checksum, const GpuDirectSupport& support,
                          GroupOptions::Transport transport);

struct RailMemory {
  MemorySpace space = MemorySpace::kHost;
  std::string why;  // the reason for the choice, for the log
};

// The choice for this rank's inter-node blocks, given the tier that moves them
// (its name and why it cannot take GPU memory, empty when it can). Throws
// Error(kUnsupported) when mode is kOn and the answer is host memory.
RailMemory choose_rail_memory(GpuDirectMode mode, bool checksum, const char* tier,
                              const std::string& tier_unsupported);

}  // namespace epcomm::detail
