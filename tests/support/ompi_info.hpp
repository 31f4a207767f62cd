// SPDX-License-Identifier: MIT
// What Open MPI's ompi_info says about the MPI library: a separate program, so
// tests can check the library's own answers (CUDA-aware MPI detection) against it.
#pragma once

#include <cstdio>
#include <optional>
#include <string>

namespace epcomm_test {

// ompi_info's mpi_built_with_cuda_support, or nothing where no ompi_info answers
// (another MPI library).
inline std::optional<bool> ompi_info_says_cuda() {
  FILE* p = popen("ompi_info --parsable --all 2>/dev/null", "r");
  if (p == nullptr) return std::nullopt;
  const std::string key = "mca:mpi:base:param:mpi_built_with_cuda_support:value:";
  std::optional<bool> found;
  char line[4096];
  while (std::fgets(line, sizeof line, p) != nullptr) {
    const std::string s(line);
    if (s.rfind(key, 0) == 0) found = s.compare(key.size(), 4, "true") == 0;
  }
  pclose(p);
  return found;
}

}  // namespace epcomm_test
