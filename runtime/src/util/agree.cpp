// SPDX-License-Identifier: MIT
#include "util/agree.hpp"

#include <vector>

#include "util/check.hpp"

namespace epcomm::detail {

std::string ranks_that_failed(MPI_Comm comm, bool ok, const std::function<int(int)>& label) {
  int size = 0;
  EPCOMM_MPI(MPI_Comm_size(comm, &size));
  const int mine = ok ? 1 : 0;
  std::vector<int> all(size);
  EPCOMM_MPI(MPI_Allgather(&mine, 1, MPI_INT, all.data(), 1, MPI_INT, comm));
  std::string failed;
  for (int r = 0; r < size; ++r) {
    if (!all[r]) failed += (failed.empty() ? "" : ", ") + std::to_string(label ? label(r) : r);
  }
  return failed;
}

}  // namespace epcomm::detail
