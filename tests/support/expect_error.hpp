// SPDX-License-Identifier: MIT
// Expects a call to throw epcomm::Error with a given code and a message that
// contains every one of the given parts (the values and ranks it must name).
#pragma once

#include <epcomm/error.hpp>
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

namespace epcomm_test {

template <class F>
void expect_error(F f, epcomm::ErrorCode code, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const epcomm::Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const std::string& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

}  // namespace epcomm_test
