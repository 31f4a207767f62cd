// SPDX-License-Identifier: MIT
#include "support/cuda_presence.hpp"

#include <mpi.h>

#include <stdexcept>
#include <string>

#ifdef EPCOMM_TEST_WITH_CUDA
#include <cuda_runtime_api.h>

#include "epcomm_kernels/cuda_codec.hpp"
#endif

namespace epcomm_test {

bool cuda_device_present() {
#ifdef EPCOMM_TEST_WITH_CUDA
  return epcomm::kernels::cuda::cuda_device_available();
#else
  return false;  // built without CUDA: no device can be used
#endif
}

int host_local_gpu() {
  static const int device = [] {
    MPI_Comm host;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &host);
    int host_rank = 0;
    MPI_Comm_rank(host, &host_rank);
    MPI_Comm_free(&host);
    int count = 0;
#ifdef EPCOMM_TEST_WITH_CUDA
    const cudaError_t s = cudaGetDeviceCount(&count);
    if (s != cudaSuccess) throw std::runtime_error(std::string("cudaGetDeviceCount: ") + cudaGetErrorString(s));
#endif
    if (count < 1) throw std::runtime_error("host_local_gpu: no CUDA device");
    return host_rank % count;
  }();
  return device;
}

}  // namespace epcomm_test
