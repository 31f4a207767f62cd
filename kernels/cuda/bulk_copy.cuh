// SPDX-License-Identifier: MIT
// Whole rows copied from global into shared memory by the copy engine of sm_90
// GPUs (cp.async.bulk, the one-dimensional form of the tensor memory
// accelerator), with an mbarrier that counts the bytes as they land.
//
// One thread starts a row's copy with a single instruction; no thread holds the
// row's bytes in registers while they are in flight. That lets a block keep the
// next rows' loads in flight while it encodes this one, which a thread that loads
// into its registers can only do at the price of registers, and so of blocks an SM.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace epcomm::kernels::cuda::detail {

__device__ inline uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// An mbarrier that completes a phase when the one arrival (the thread that starts
// the copy) and the bytes it announced have arrived.
__device__ inline void bulk_barrier_init(uint64_t* bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(shared_address(bar)) : "memory");
}

// Makes initialised barriers visible to the copy engine (the async proxy); the
// block's threads see them after a __syncthreads.
__device__ inline void bulk_barrier_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

// Generic-proxy accesses to shared memory (the encoders' reads of a stage) ordered
// before the copy engine's next writes into it.
__device__ inline void bulk_proxy_fence() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

// Copies `bytes` (a multiple of 16; both addresses 16-byte aligned) from src to
// dst and counts them on bar, whose current phase completes when all have landed.
__device__ inline void bulk_load(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(shared_address(bar)), "r"(bytes)
               : "memory");
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
          shared_address(dst)),
      "l"(src), "r"(bytes), "r"(shared_address(bar))
      : "memory");
}

// Waits until bar's phase with the given parity (0 for its first, 1 for its
// second, ...) has completed.
__device__ inline void bulk_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(shared_address(bar)), "r"(parity)
        : "memory");
  }
}

}  // namespace epcomm::kernels::cuda::detail
