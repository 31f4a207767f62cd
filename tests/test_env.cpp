// SPDX-License-Identifier: MIT
// EPCOMM_LOG_LEVEL is validated like every other EPCOMM_* variable: a value outside
// error|warn|info|debug|trace is an Error naming it, from the env reader and from
// the log threshold that reads it (which must not recurse while the Error logs
// itself), and a good value is taken once the bad one is gone.
#include <epcomm/error.hpp>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "util/env.hpp"
#include "util/log.hpp"

namespace {

using epcomm::Error;
using epcomm::ErrorCode;

// Runs f, which must throw Error(kInvalidArgument) whose message names EPCOMM_LOG_LEVEL='value'.
template <class F>
void expect_bad_level(F&& f, const std::string& value) {
  try {
    f();
    ADD_FAILURE() << "no error for EPCOMM_LOG_LEVEL=" << value;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("EPCOMM_LOG_LEVEL='" + value + "'"), std::string::npos) << e.what();
  }
}

TEST(EnvLogLevel, UnknownValuesAreErrors) {
  for (const char* bad : {"bogus", "WARN", "warning", "3", "info "}) {
    ASSERT_EQ(setenv("EPCOMM_LOG_LEVEL", bad, 1), 0);
    expect_bad_level([] { epcomm::env::log_level(); }, bad);
    expect_bad_level([] { epcomm::log::threshold(); }, bad);
  }
}

TEST(EnvLogLevel, KnownValuesAndDefault) {
  for (const char* good : {"error", "warn", "info", "debug", "trace"}) {
    ASSERT_EQ(setenv("EPCOMM_LOG_LEVEL", good, 1), 0);
    EXPECT_EQ(epcomm::env::log_level(), good);
  }
  ASSERT_EQ(unsetenv("EPCOMM_LOG_LEVEL"), 0);
  EXPECT_EQ(epcomm::env::log_level(), "warn");
  ASSERT_EQ(setenv("EPCOMM_LOG_LEVEL", "", 1), 0);
  EXPECT_EQ(epcomm::env::log_level(), "warn");
}

// After the failed reads above, the threshold is read again and kept.
TEST(EnvLogLevel, ThresholdTakesAGoodValueAfterABadOne) {
  ASSERT_EQ(setenv("EPCOMM_LOG_LEVEL", "bogus", 1), 0);
  expect_bad_level([] { epcomm::log::threshold(); }, "bogus");
  ASSERT_EQ(setenv("EPCOMM_LOG_LEVEL", "debug", 1), 0);
  EXPECT_EQ(epcomm::log::threshold(), epcomm::log::Level::kDebug);
  EXPECT_TRUE(epcomm::log::enabled(epcomm::log::Level::kDebug));
  EXPECT_FALSE(epcomm::log::enabled(epcomm::log::Level::kTrace));
}

}  // namespace

namespace {

// EPCOMM_MOVER_THREADS: a count >= 1, 0 (the default from the cores) when unset;
// anything else is an Error naming the variable.
TEST(EnvMoverThreads, ParsedAndChecked) {
  ASSERT_EQ(unsetenv("EPCOMM_MOVER_THREADS"), 0);
  EXPECT_EQ(epcomm::env::mover_threads(), 0);
  ASSERT_EQ(setenv("EPCOMM_MOVER_THREADS", "4", 1), 0);
  EXPECT_EQ(epcomm::env::mover_threads(), 4);
  for (const char* bad : {"0", "-1", "two", "3x"}) {
    ASSERT_EQ(setenv("EPCOMM_MOVER_THREADS", bad, 1), 0);
    try {
      epcomm::env::mover_threads();
      ADD_FAILURE() << "no error for EPCOMM_MOVER_THREADS=" << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("EPCOMM_MOVER_THREADS='" + std::string(bad) + "'"), std::string::npos)
          << e.what();
    }
  }
  ASSERT_EQ(unsetenv("EPCOMM_MOVER_THREADS"), 0);
}

// EPCOMM_GPU_SM_BUDGET: a count >= 0, 0 (no bound) when unset; anything else is an
// Error naming the variable.
TEST(EnvGpuSmBudget, ParsedAndChecked) {
  ASSERT_EQ(unsetenv("EPCOMM_GPU_SM_BUDGET"), 0);
  EXPECT_EQ(epcomm::env::gpu_sm_budget(), 0);
  ASSERT_EQ(setenv("EPCOMM_GPU_SM_BUDGET", "20", 1), 0);
  EXPECT_EQ(epcomm::env::gpu_sm_budget(), 20);
  for (const char* bad : {"-1", "many", "20sm"}) {
    ASSERT_EQ(setenv("EPCOMM_GPU_SM_BUDGET", bad, 1), 0);
    try {
      epcomm::env::gpu_sm_budget();
      ADD_FAILURE() << "no error for EPCOMM_GPU_SM_BUDGET=" << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("EPCOMM_GPU_SM_BUDGET='" + std::string(bad) + "'"), std::string::npos)
          << e.what();
    }
  }
  ASSERT_EQ(unsetenv("EPCOMM_GPU_SM_BUDGET"), 0);
}

}  // namespace
