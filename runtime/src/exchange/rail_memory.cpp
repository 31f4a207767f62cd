// SPDX-License-Identifier: MIT
#include "exchange/rail_memory.hpp"

#include "device/dmabuf_export.hpp"
#include "util/check.hpp"
#include "util/env.hpp"

namespace epcomm::detail {

GpuDirectMode gpu_direct_mode() {
  const std::string v = env::gpu_direct();
  if (v == "0") return GpuDirectMode::kOff;
  if (v == "1") return GpuDirectMode::kOn;
  return GpuDirectMode::kAuto;
}

const char* to_string(GpuDirectMode mode) {
  switch (mode) {
    case GpuDirectMode::kOff: return "0";
    case GpuDirectMode::kOn: return "1";
    case GpuDirectMode::kAuto: break;
  }
  return "auto";
}

GpuDirectSupport detect_gpu_direct(int device) {
  GpuDirectSupport s;
  s.mpi = query_cuda_aware_mpi();
#if !defined(EPCOMM_WITH_VERBS)
  (void)device;
  s.dmabuf_unsupported = "this build has no verbs transport";
#elif !defined(EPCOMM_HAVE_IBV_REG_DMABUF_MR)
  (void)device;
  s.dmabuf_unsupported = "the rdma-core headers this build used have no ibv_reg_dmabuf_mr (rdma-core 34 or later)";
#else
  s.dmabuf_unsupported = dmabuf_unsupported(device);
#endif
  return s;
}

std::string GpuDirectSupport::describe() const {
  return std::string("CUDA-aware MPI ") + (mpi.present() ? "yes" : "no") + " (" + mpi.describe() +
         "); GPUDirect RDMA (dma-buf) " +
         (dmabuf_unsupported.empty() ? std::string("possible (ibv_reg_dmabuf_mr built, the GPU exports dma-bufs)")
                                     : "no (" + dmabuf_unsupported + ")");
}

bool gpu_direct_may_apply(GpuDirectMode mode, bool checksum, const GpuDirectSupport& support,
                          GroupOptions::Transport transport) {
  if (mode == GpuDirectMode::kOff || checksum) return false;
  return support.mpi.present() || (transport != GroupOptions::Transport::kMpi && support.dmabuf_unsupported.empty());
}

RailMemory choose_rail_memory(GpuDirectMode mode, bool checksum, const char* tier,
                              const std::string& tier_unsupported) {
  if (mode == GpuDirectMode::kOff) return {MemorySpace::kHost, "EPCOMM_GPU_DIRECT=0"};
  std::string why;
  if (checksum) {
    why = "ExchangeConfig::checksum (EPCOMM_CHECKSUM) is computed by the CPU over host memory";
  } else if (!tier_unsupported.empty()) {
    why = std::string("the ") + tier + " tier cannot move GPU memory: " + tier_unsupported;
  } else {
    return {MemorySpace::kDevice, std::string("the ") + tier + " tier moves GPU memory itself"};
  }
  EPCOMM_REQUIRE(mode != GpuDirectMode::kOn, kUnsupported, "EPCOMM_GPU_DIRECT=1 but " << why);
  return {MemorySpace::kHost, why};
}

}  // namespace epcomm::detail
