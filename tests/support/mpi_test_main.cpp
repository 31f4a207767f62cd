// SPDX-License-Identifier: MIT
// The main of every test binary: MPI_THREAD_MULTIPLE, since epcomm's progress
// thread calls MPI beside the test's thread. Single-process unit tests use it too.
#include <mpi.h>

#include "support/mpi_test.hpp"

int main(int argc, char** argv) { return epcomm_test::run_all_tests_on_all_ranks(argc, argv, MPI_THREAD_MULTIPLE); }
