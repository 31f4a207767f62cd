// SPDX-License-Identifier: MIT
// Whether this process sees a CUDA device: GPU tests skip, with a message, where
// it does not (CI has the compiler but no GPU); and which one a rank uses.
#pragma once

namespace epcomm_test {

bool cuda_device_present();

// The GPU a test rank uses: its rank within the host modulo the host's GPUs
// (emulated nodes split a host's ranks, not its GPUs). Found once, at the first
// call, which is collective over MPI_COMM_WORLD (MPI_Comm_split_type): make it on
// every rank at a test's start, never from a step only some ranks take. Needs a
// CUDA device (cuda_device_present()).
int host_local_gpu();

}  // namespace epcomm_test
