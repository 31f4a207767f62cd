// SPDX-License-Identifier: MIT
// Base fixture for multi-rank tests: see mpi_test_main.cpp.
#pragma once

#include <gtest/gtest.h>

namespace epcomm_test {

class MpiTest : public testing::Test {
 protected:
  void TearDown() override;
};

// Initialises MPI at `thread_level`, runs every test with output from rank 0 only,
// finalises MPI and returns the worst exit code of all ranks.
int run_all_tests_on_all_ranks(int argc, char** argv, int thread_level);

}  // namespace epcomm_test
