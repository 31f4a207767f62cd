// SPDX-License-Identifier: MIT
// The launch-shape rule of the SM budget (epcomm_kernels/sm_budget.hpp), on the
// host: a launch under a budget of n SMs gets at most n blocks (a block occupies
// one SM), never 0, and a budget of 0 leaves the grid as the kernel wants it;
// under a budget each block has as many threads as the kernel allows, in whole
// warps, at most 1024, never fewer than its usual block. The expected grids and
// blocks are written out by hand. With CUDA, also the streams that carry a
// budget. The budget's effect on results (none) is in the GPU tests.
#include <gtest/gtest.h>

#include <cstdint>

#include "epcomm_kernels/sm_budget.hpp"

namespace {

using epcomm::kernels::cuda::budget_block_threads;
using epcomm::kernels::cuda::budget_blocks;
using epcomm::kernels::cuda::budget_grid;
using epcomm::kernels::cuda::GridShape;

TEST(SmBudgetRule, NoBudgetKeepsTheWantedGrid) {
  EXPECT_EQ(budget_blocks(1, 0), 1u);
  EXPECT_EQ(budget_blocks(132, 0), 132u);
  EXPECT_EQ(budget_blocks(int64_t{1} << 20, 0), 1u << 20);
  // An empty launch still gets one block (kernels that publish words must run).
  EXPECT_EQ(budget_blocks(0, 0), 1u);
  EXPECT_EQ(budget_blocks(-5, 0), 1u);
}

TEST(SmBudgetRule, BudgetOfOneGivesOneBlock) {
  for (int64_t wanted : {int64_t{0}, int64_t{1}, int64_t{2}, int64_t{4096}, int64_t{1} << 20}) {
    EXPECT_EQ(budget_blocks(wanted, 1), 1u) << wanted;
  }
}

TEST(SmBudgetRule, BudgetOfTwentyCapsLargeGridsOnly) {
  EXPECT_EQ(budget_blocks(4096, 20), 20u);
  EXPECT_EQ(budget_blocks(21, 20), 20u);
  EXPECT_EQ(budget_blocks(20, 20), 20u);
  EXPECT_EQ(budget_blocks(19, 20), 19u);
  EXPECT_EQ(budget_blocks(3, 20), 3u);
  EXPECT_EQ(budget_blocks(0, 20), 1u);
}

TEST(SmBudgetRule, BudgetAboveTheNeedChangesNothing) {
  EXPECT_EQ(budget_blocks(100, 132), 100u);
  EXPECT_EQ(budget_blocks(7, 1000), 7u);
}

TEST(SmBudgetRule, NoBudgetKeepsTheUsualBlock) {
  EXPECT_EQ(budget_block_threads(1024, 256, 0), 256u);
  EXPECT_EQ(budget_block_threads(896, 256, 0), 256u);
  EXPECT_EQ(budget_block_threads(1024, 1024, 0), 1024u);
  EXPECT_EQ(budget_block_threads(0, 256, -3), 256u);
}

TEST(SmBudgetRule, BudgetTakesTheLargestBlockTheKernelAllows) {
  // At most 64 registers a thread: the whole 1024.
  EXPECT_EQ(budget_block_threads(1024, 256, 1), 1024u);
  EXPECT_EQ(budget_block_threads(1024, 256, 20), 1024u);
  // 72 registers: 28 warps fit in an SM's 65536 registers; CUDA reports 896.
  EXPECT_EQ(budget_block_threads(896, 256, 20), 896u);
  // 80 registers (the LogFMT encoder's cap): 25 warps.
  EXPECT_EQ(budget_block_threads(800, 256, 8), 800u);
  // A limit that is not whole warps is rounded down to them.
  EXPECT_EQ(budget_block_threads(1000, 256, 8), 992u);
  // Never past the most a block can have.
  EXPECT_EQ(budget_block_threads(2048, 256, 8), 1024u);
  // Never below the usual block (that launch would fail the same with or without
  // a budget), nor for a limit CUDA did not report.
  EXPECT_EQ(budget_block_threads(128, 256, 8), 256u);
  EXPECT_EQ(budget_block_threads(0, 256, 8), 256u);
  // A kernel whose usual block is already the largest keeps it.
  EXPECT_EQ(budget_block_threads(1024, 1024, 20), 1024u);
}

void expect_grid(GridShape wanted, int budget, unsigned x, unsigned y) {
  const GridShape g = budget_grid(wanted, budget);
  EXPECT_EQ(g.x, x) << "wanted " << wanted.x << " x " << wanted.y << " under " << budget;
  EXPECT_EQ(g.y, y) << "wanted " << wanted.x << " x " << wanted.y << " under " << budget;
  if (budget > 0) {
    EXPECT_LE(g.x * g.y, static_cast<unsigned>(budget));
  }
}

TEST(SmBudgetRule, TwoDimensionalGridsShrinkTheSplitFirst) {
  // No budget: as wanted (at least 1 x 1).
  expect_grid({128, 8}, 0, 128, 8);
  expect_grid({0, 0}, 0, 1, 1);
  // Budget 1: one block.
  expect_grid({128, 8}, 1, 1, 1);
  expect_grid({1, 64}, 1, 1, 1);
  // Budget 20: the units keep their blocks, the split gives way.
  expect_grid({128, 8}, 20, 20, 1);
  expect_grid({4, 8}, 20, 4, 5);
  expect_grid({2, 64}, 20, 2, 10);
  expect_grid({3, 6}, 20, 3, 6);
  // More than needed: unchanged.
  expect_grid({16, 4}, 132, 16, 4);
}

#ifdef EPCOMM_TEST_WITH_CUDA
// A stream's budget is what was set for it, 0 for others, and 0 again once taken
// back. The handles are never passed to CUDA, so no GPU is needed.
TEST(SmBudgetStreams, BudgetIsPerStream) {
  using epcomm::kernels::cuda::set_stream_sm_budget;
  using epcomm::kernels::cuda::stream_sm_budget;
  int a_tag = 0, b_tag = 0;
  void* a = &a_tag;
  void* b = &b_tag;
  EXPECT_EQ(stream_sm_budget(a), 0);
  set_stream_sm_budget(a, 20);
  set_stream_sm_budget(b, 1);
  EXPECT_EQ(stream_sm_budget(a), 20);
  EXPECT_EQ(stream_sm_budget(b), 1);
  EXPECT_EQ(stream_sm_budget(nullptr), 0);
  set_stream_sm_budget(a, 8);
  EXPECT_EQ(stream_sm_budget(a), 8);
  set_stream_sm_budget(a, 0);
  EXPECT_EQ(stream_sm_budget(a), 0);
  EXPECT_EQ(stream_sm_budget(b), 1);
  set_stream_sm_budget(b, 0);
  EXPECT_EQ(stream_sm_budget(b), 0);
}
#endif

}  // namespace
