// Base fixture for multi-rank tests: see mpi_test_main.cpp.
#pragma once

#include <gtest/gtest.h>

namespace epcomm_test {

class MpiTest : public testing::Test {
 protected:
  void TearDown() override;
};

}  // namespace epcomm_test
