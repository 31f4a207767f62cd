// SPDX-License-Identifier: MIT
// GPU direct for inter-node rows (exchange/rail_memory.hpp), its parts: the
// EPCOMM_GPU_DIRECT setting, the choice of where a rank's inter-node blocks live,
// CUDA-aware MPI detection checked against ompi_info (a separate program asking
// the same library), the MPI tier's refusal of GPU memory naming why, and (on a
// GPU, else skipped) GPU memory exported as a dma-buf where the GPU can: the half
// of GPUDirect RDMA that needs no RDMA adapter. The exchange's side is
// test_gpu_direct_exchange.cpp.
#include <gtest/gtest.h>
#include <unistd.h>

#include <epcomm/epcomm.hpp>
#ifdef EPCOMM_TEST_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "device/dmabuf_export.hpp"
#include "exchange/internode_factory.hpp"
#include "exchange/rail_memory.hpp"
#include "support/cuda_presence.hpp"
#include "support/expect_error.hpp"
#include "support/mpi_test.hpp"
#include "support/ompi_info.hpp"
#include "util/env.hpp"

namespace epcomm_test {
namespace {

using epcomm::ErrorCode;
using epcomm::MemorySpace;
using epcomm::detail::choose_rail_memory;
using epcomm::detail::GpuDirectMode;

class GpuDirectTest : public MpiTest {
 protected:
  void TearDown() override {
    unsetenv("EPCOMM_GPU_DIRECT");
    MpiTest::TearDown();
  }
};

TEST_F(GpuDirectTest, EnvironmentValuesAndDefault) {
  ASSERT_EQ(unsetenv("EPCOMM_GPU_DIRECT"), 0);
  EXPECT_EQ(epcomm::detail::gpu_direct_mode(), GpuDirectMode::kAuto);
  ASSERT_EQ(setenv("EPCOMM_GPU_DIRECT", "", 1), 0);
  EXPECT_EQ(epcomm::detail::gpu_direct_mode(), GpuDirectMode::kAuto);
  const std::pair<const char*, GpuDirectMode> good[] = {
      {"auto", GpuDirectMode::kAuto}, {"0", GpuDirectMode::kOff}, {"1", GpuDirectMode::kOn}};
  for (const auto& [text, mode] : good) {
    ASSERT_EQ(setenv("EPCOMM_GPU_DIRECT", text, 1), 0);
    EXPECT_EQ(epcomm::detail::gpu_direct_mode(), mode) << text;
    EXPECT_STREQ(epcomm::detail::to_string(mode), text);
  }
}

TEST_F(GpuDirectTest, BadEnvironmentValuesAreErrors) {
  for (const char* bad : {"yes", "on", "2", "AUTO", "-1", "1 "}) {
    ASSERT_EQ(setenv("EPCOMM_GPU_DIRECT", bad, 1), 0);
    expect_error([] { epcomm::detail::gpu_direct_mode(); }, ErrorCode::kInvalidArgument,
                 {"EPCOMM_GPU_DIRECT='" + std::string(bad) + "'", "0, 1, auto"});
  }
}

TEST_F(GpuDirectTest, ChoiceOfRailMemory) {
  const std::string cannot = "no CUDA-aware MPI";
  // Never with 0, whatever the tier can do.
  EXPECT_EQ(choose_rail_memory(GpuDirectMode::kOff, false, "mpi", "").space, MemorySpace::kHost);
  EXPECT_EQ(choose_rail_memory(GpuDirectMode::kOff, false, "mpi", "").why, "EPCOMM_GPU_DIRECT=0");
  // Where the tier can, auto and 1 take it.
  for (GpuDirectMode mode : {GpuDirectMode::kAuto, GpuDirectMode::kOn}) {
    const auto r = choose_rail_memory(mode, false, "verbs", "");
    EXPECT_EQ(r.space, MemorySpace::kDevice);
    EXPECT_NE(r.why.find("verbs tier moves GPU memory itself"), std::string::npos) << r.why;
  }
  // Where it cannot, or checksums need the CPU: auto stages and says why...
  const auto staged = choose_rail_memory(GpuDirectMode::kAuto, false, "mpi", cannot);
  EXPECT_EQ(staged.space, MemorySpace::kHost);
  EXPECT_NE(staged.why.find("mpi tier cannot move GPU memory: " + cannot), std::string::npos) << staged.why;
  const auto checked = choose_rail_memory(GpuDirectMode::kAuto, true, "mpi", "");
  EXPECT_EQ(checked.space, MemorySpace::kHost);
  EXPECT_NE(checked.why.find("checksum"), std::string::npos) << checked.why;
  // ... and 1 is an error naming it.
  expect_error([&] { choose_rail_memory(GpuDirectMode::kOn, false, "mpi", cannot); }, ErrorCode::kUnsupported,
               {"EPCOMM_GPU_DIRECT=1 but", cannot});
  expect_error([&] { choose_rail_memory(GpuDirectMode::kOn, true, "verbs", ""); }, ErrorCode::kUnsupported,
               {"EPCOMM_GPU_DIRECT=1 but", "EPCOMM_CHECKSUM"});
}

// A library ompi_info reports built without CUDA cannot be CUDA-aware at run time
// (Debian's Open MPI 4.1, for one).
TEST_F(GpuDirectTest, CudaAwareMpiDetectionAgreesWithOmpiInfo) {
  const std::optional<bool> ompi = ompi_info_says_cuda();
  if (!ompi) GTEST_SKIP() << "no ompi_info answering mpi_built_with_cuda_support (not Open MPI)";
  const epcomm::detail::CudaAwareMpi mpi = epcomm::detail::query_cuda_aware_mpi();
  EXPECT_TRUE(mpi.header) << "Open MPI's <mpi-ext.h> was not found at build time";
  if (!*ompi) {
    EXPECT_FALSE(mpi.present()) << mpi.describe();
    EXPECT_FALSE(mpi.built) << mpi.describe();
    EXPECT_NE(mpi.describe().find("MPIX_Query_cuda_support() 0"), std::string::npos) << mpi.describe();
  }
}

// The MPI tier takes GPU memory only from a CUDA-aware library and says why not.
TEST_F(GpuDirectTest, MpiTierTakesGpuMemoryOnlyWhenCudaAware) {
  epcomm::Group group(MPI_COMM_WORLD);
  const epcomm::detail::GroupState& g = *group.state();
  epcomm::detail::GpuDirectSupport support;
  support.mpi = epcomm::detail::query_cuda_aware_mpi();
  epcomm::detail::InterNodeSetup setup{g, g.comm, 0, false, 1, false};  // no traffic: always MPI
  setup.gpu_direct = &support;
  std::byte byte{};
  if (support.mpi.present()) {
    epcomm::detail::make_internode(setup, [&](epcomm::detail::InterNode& tier) {
      EXPECT_EQ(tier.device_memory_unsupported(), "");
      tier.register_region(&byte, 1, MemorySpace::kDevice);
    });
    return;
  }
  expect_error(
      [&] {
        epcomm::detail::make_internode(setup, [&](epcomm::detail::InterNode& tier) {
          EXPECT_NE(tier.device_memory_unsupported().find("not CUDA-aware"), std::string::npos);
          tier.register_region(&byte, 1, MemorySpace::kDevice);
        });
      },
      ErrorCode::kUnsupported, {"device memory", "not CUDA-aware", support.mpi.describe()});
}

// A range that starts and ends inside host pages: the dma-buf covers the whole
// pages, and the range sits at its offset in it.
TEST_F(GpuDirectTest, GpuMemoryExportsAsADmabuf) {
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device on this host";
#ifdef EPCOMM_TEST_WITH_CUDA
  const int gpu = host_local_gpu();
  ASSERT_EQ(cudaSetDevice(gpu), cudaSuccess);
  const std::string unsupported = epcomm::detail::dmabuf_unsupported(gpu);
  if (!unsupported.empty()) GTEST_SKIP() << "no dma-buf export here: " << unsupported;
  void* base = nullptr;
  ASSERT_EQ(cudaMalloc(&base, 4 << 20), cudaSuccess);
  const auto page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const std::size_t bytes = (1 << 20) + 3;
  const auto* range = static_cast<const std::byte*>(base) + page + 17;
  const uint64_t expected_offset = reinterpret_cast<uintptr_t>(range) % page;
  {
    const epcomm::detail::DmabufRange buf(range, bytes);
    ASSERT_GE(buf.fd(), 0);
    EXPECT_EQ(buf.offset(), expected_offset);
    // A dma-buf's size is its end (dma_buf_llseek).
    const off_t size = lseek(buf.fd(), 0, SEEK_END);
    EXPECT_EQ(static_cast<uint64_t>(size), (expected_offset + bytes + page - 1) / page * page);
  }
  EXPECT_EQ(cudaFree(base), cudaSuccess);
#endif
}

}  // namespace
}  // namespace epcomm_test
