// SPDX-License-Identifier: MIT
// Multi-rank GoogleTest support (the gtest-mpi-listener pattern): MPI is
// initialised once, only rank 0 prints, and MpiTest's TearDown gathers every
// rank's failures so a test that failed anywhere fails on every rank, with the
// other ranks' messages shown.
#include <mpi.h>

#include <gtest/gtest.h>

#include "support/mpi_test.hpp"

namespace epcomm_test {

void MpiTest::TearDown() {
  const testing::TestResult* result = testing::UnitTest::GetInstance()->current_test_info()->result();
  std::string mine;
  for (int i = 0; i < result->total_part_count(); ++i) {
    const testing::TestPartResult& part = result->GetTestPartResult(i);
    if (part.failed()) mine += std::string(part.file_name() ? part.file_name() : "?") + ":" +
                               std::to_string(part.line_number()) + ": " + part.summary() + "\n";
  }
  int size = 0, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  int len = static_cast<int>(mine.size());
  std::vector<int> lens(size), displs(size);
  MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, MPI_COMM_WORLD);
  int total = 0;
  for (int r = 0; r < size; ++r) {
    displs[r] = total;
    total += lens[r];
  }
  std::string all(total, '\0');
  MPI_Allgatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR, MPI_COMM_WORLD);
  for (int r = 0; r < size; ++r) {
    if (r == rank || lens[r] == 0) continue;
    ADD_FAILURE() << "rank " << r << " failed:\n" << all.substr(displs[r], lens[r]);
  }
}

int run_all_tests_on_all_ranks(int argc, char** argv, int thread_level) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, thread_level, &provided);
  testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    testing::TestEventListeners& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int rc = RUN_ALL_TESTS();
  int worst = 0;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}

}  // namespace epcomm_test

