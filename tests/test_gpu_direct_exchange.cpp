// SPDX-License-Identifier: MIT
// GPU direct for inter-node rows, as an exchange user meets it: a bad
// EPCOMM_GPU_DIRECT refused on every rank (any memory, so CI runs it); and on a GPU
// (else skipped), across emulated nodes over MPI, the log line saying which path
// rows take and why, and EPCOMM_GPU_DIRECT=1 refused on every rank where GPU
// direct is missing. What to expect comes from ompi_info, not from the library's
// own detection. The ctest entry sets EPCOMM_LOG_LEVEL=info.
#include <gtest/gtest.h>
#include <unistd.h>

#include <epcomm/epcomm.hpp>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "support/cuda_presence.hpp"
#include "support/expect_error.hpp"
#include "support/mpi_test.hpp"
#include "support/ompi_info.hpp"

namespace epcomm_test {
namespace {

class GpuDirectExchangeTest : public MpiTest {
 protected:
  void TearDown() override {
    unsetenv("EPCOMM_GPU_DIRECT");
    MpiTest::TearDown();
  }
};

epcomm::ExchangeConfig small_config(const epcomm::Group& group) {
  epcomm::ExchangeConfig c;
  c.num_experts = 2 * group.size();
  c.topk = 2;
  c.hidden = 64;
  c.max_tokens_per_rank = 16;
  return c;
}

epcomm::ExchangeConfig on_gpu(epcomm::ExchangeConfig c) {
  c.memory = epcomm::MemorySpace::kDevice;
  c.device = host_local_gpu();
  return c;
}

// Over MPI: the verbs tier is left out (which adapter there is, if any, is the
// host's).
epcomm::GroupOptions over_mpi() {
  epcomm::GroupOptions options;
  options.transport = epcomm::GroupOptions::Transport::kMpi;
  return options;
}

// Read at construction, on every rank, for every exchange (host memory too, so a
// typo surfaces where no GPU is); the next exchange works once it is fixed.
TEST_F(GpuDirectExchangeTest, BadValueRefusedOnEveryRank) {
  epcomm::Group group(MPI_COMM_WORLD);
  ASSERT_EQ(setenv("EPCOMM_GPU_DIRECT", "maybe", 1), 0);
  expect_error([&] { epcomm::Exchange ex(group, small_config(group)); }, epcomm::ErrorCode::kInvalidArgument,
               {"EPCOMM_GPU_DIRECT='maybe'", "epcomm rank " + std::to_string(group.rank())});
  ASSERT_EQ(unsetenv("EPCOMM_GPU_DIRECT"), 0);
  epcomm::Exchange ex(group, small_config(group));
}

// Everything written to stderr while f runs.
template <class F>
std::string stderr_of(F&& f) {
  std::fflush(stderr);
  const int saved = dup(2);
  FILE* capture = std::tmpfile();
  dup2(fileno(capture), 2);
  const auto restore = [&] {
    std::fflush(stderr);
    dup2(saved, 2);
    close(saved);
  };
  try {
    f();
  } catch (...) {
    restore();
    std::fclose(capture);
    throw;
  }
  restore();
  std::string text;
  std::rewind(capture);
  char chunk[4096];
  for (std::size_t n; (n = std::fread(chunk, 1, sizeof chunk, capture)) > 0;) text.append(chunk, n);
  std::fclose(capture);
  return text;
}

// Once per rank, naming the path and why. A library ompi_info reports built
// without CUDA (or no Open MPI at all) cannot be CUDA-aware: staged.
TEST_F(GpuDirectExchangeTest, LogSaysWhichPathInterNodeRowsTake) {
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device on this host";
  epcomm::Group group(MPI_COMM_WORLD, over_mpi());
  const epcomm::ExchangeConfig config = on_gpu(small_config(group));
  const std::string log = stderr_of([&] { epcomm::Exchange ex(group, config); });
  const std::string prefix =
      "[epcomm rank " + std::to_string(group.rank()) + "] INFO exchange: inter-node rows from GPU memory ";
  const std::size_t at = log.find(prefix);
  ASSERT_NE(at, std::string::npos) << "no GPU direct line (2 emulated nodes expected) in:\n" << log;
  const std::string line = log.substr(at, log.find('\n', at) - at);
  std::printf("rank %d: %s\n", group.rank(), line.c_str());
  EXPECT_EQ(log.find(prefix, at + 1), std::string::npos) << "logged twice: " << log;
  EXPECT_NE(line.find("(EPCOMM_GPU_DIRECT=auto)"), std::string::npos) << line;
  EXPECT_NE(line.find("detected: CUDA-aware MPI"), std::string::npos) << line;
  EXPECT_NE(line.find("GPUDirect RDMA (dma-buf)"), std::string::npos) << line;
  if (ompi_info_says_cuda() != std::optional<bool>(true)) {
    EXPECT_NE(line.find("are staged through pinned host memory over the mpi tier (EPCOMM_GPU_DIRECT=auto): the mpi "
                        "tier cannot move GPU memory: the MPI library is not CUDA-aware"),
              std::string::npos)
        << line;
  }
}

// Required but missing: a clear error on every rank, and the next exchange (GPU
// direct back to auto) works.
TEST_F(GpuDirectExchangeTest, RequiredButMissingFailsOnEveryRank) {
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device on this host";
  if (ompi_info_says_cuda() == std::optional<bool>(true)) GTEST_SKIP() << "ompi_info: built with CUDA";
  epcomm::Group group(MPI_COMM_WORLD, over_mpi());
  const epcomm::ExchangeConfig config = on_gpu(small_config(group));
  ASSERT_EQ(setenv("EPCOMM_GPU_DIRECT", "1", 1), 0);
  expect_error([&] { epcomm::Exchange ex(group, config); }, epcomm::ErrorCode::kUnsupported,
               {"EPCOMM_GPU_DIRECT=1 but the mpi tier cannot move GPU memory", "not CUDA-aware",
                "epcomm rank " + std::to_string(group.rank())});
  ASSERT_EQ(unsetenv("EPCOMM_GPU_DIRECT"), 0);
  epcomm::Exchange ex(group, config);
}

}  // namespace
}  // namespace epcomm_test
