// SPDX-License-Identifier: MIT
// The progress thread needs MPI_THREAD_MULTIPLE: under a lower thread level a Group
// that asks for it fails with a clear error, and inline progress still works.
// Its own main, since MPI must be initialised below MPI_THREAD_MULTIPLE.
#include <epcomm/epcomm.hpp>
#include <gtest/gtest.h>
#include <mpi.h>

#include <string>
#include <vector>

#include "support/mpi_test.hpp"

namespace {

TEST(ThreadLevel, ThreadNeedsMultipleInlineWorks) {
  epcomm::GroupOptions thread;
  thread.progress = epcomm::GroupOptions::Progress::kThread;
  try {
    epcomm::Group g(MPI_COMM_WORLD, thread);
    FAIL() << "a progress thread was started under MPI_THREAD_SERIALIZED";
  } catch (const epcomm::Error& e) {
    EXPECT_EQ(e.code(), epcomm::ErrorCode::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("MPI_THREAD_MULTIPLE"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("EPCOMM_PROGRESS_THREAD=0"), std::string::npos) << e.what();
  }
  epcomm::GroupOptions inline_progress;
  inline_progress.progress = epcomm::GroupOptions::Progress::kInline;
  epcomm::Group g(MPI_COMM_WORLD, inline_progress);
  epcomm::ExchangeConfig cfg;
  cfg.num_experts = g.size();
  cfg.topk = 1;
  cfg.hidden = 8;
  cfg.max_tokens_per_rank = 2;
  cfg.dtype = epcomm::DType::kF32;
  cfg.dispatch_format = epcomm::Format::kF32;
  cfg.combine_format = epcomm::Format::kF32;
  epcomm::Exchange ex(g, cfg);
  // Token t goes to expert (rank + t) % size with weight 1.
  std::vector<float> x(16), out(16);
  for (int i = 0; i < 16; ++i) x[i] = static_cast<float>(g.rank() * 100 + i);
  const int32_t idx[2] = {g.rank() % g.size(), (g.rank() + 1) % g.size()};
  const float w[2] = {1.0f, 1.0f};
  epcomm::DispatchInput in;
  in.x = x.data();
  in.topk_idx = idx;
  in.topk_weights = w;
  in.num_tokens = 2;
  epcomm::DispatchHandle h = ex.dispatch(in);
  ex.combine(h, h.rows(), h.num_rows(), out.data(), 2);
  EXPECT_EQ(x, out);  // identity experts, weight 1: combine returns the tokens
}

}  // namespace

int main(int argc, char** argv) {
  return epcomm_test::run_all_tests_on_all_ranks(argc, argv, MPI_THREAD_SERIALIZED);
}
