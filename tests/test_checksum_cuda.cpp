// SPDX-License-Identifier: MIT
// The GPU's row checksums (crc32c_row_list) against CRC32C computed bit by bit
// from its definition (test_crc32c checks the library's ISA-L CRC against the same),
// on random bytes: lengths around the warp's 16-byte blocks and 512-byte steps
// (warp_crc32c.cuh: a row within one block, a row of whole blocks, a step count
// that is a multiple of the four in flight or not) and row sizes of the exchange,
// rows at every alignment (so a first block with bytes before the row and a tail
// after the last whole block, of every length), rows listed out of order. Skips
// without a GPU.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <epcomm_kernels/cuda_codec.hpp>
#include <epcomm_kernels/cuda_rows.hpp>

#include <cstdint>
#include <random>
#include <vector>

#include "support/crc32c_bitwise.hpp"

namespace {

using epcomm_test::crc32c_bitwise;

void ok(cudaError_t e) { ASSERT_EQ(e, cudaSuccess) << cudaGetErrorString(e); }

TEST(CudaChecksum, RowsMatchTheHostCrc) {
  if (!epcomm::kernels::cuda::cuda_device_available()) {
    GTEST_SKIP() << "no CUDA device or driver here: the GPU checksums are not exercised";
  }
  std::mt19937_64 rng(5);
  const std::vector<int64_t> lengths = {0,   1,    2,    3,    15,   16,   17,   31,   32,   33,   63,    64,
                                        65,  100,  129,  496,  511,  512,  513,  527,  528,  1023, 2047,  2048,
                                        2049, 2560, 4096, 7168, 7170, 7296, 8191, 14336, 14337, 16400, 40001};
  constexpr int kRowsPerLength = 37;  // offsets 0..36: every alignment, twice
  for (const int64_t n : lengths) {
    SCOPED_TRACE("row bytes " + std::to_string(n));
    const std::size_t stride = static_cast<std::size_t>(n) + 37;
    std::vector<unsigned char> host(stride * kRowsPerLength);
    for (auto& b : host) b = static_cast<unsigned char>(rng());
    unsigned char* dev = nullptr;
    ok(cudaMalloc(reinterpret_cast<void**>(&dev), host.size()));
    ok(cudaMemcpy(dev, host.data(), host.size(), cudaMemcpyHostToDevice));
    // Row i starts at byte i of its stride; listed in reverse.
    std::vector<const void*> rows(kRowsPerLength);
    std::vector<uint32_t> want(kRowsPerLength);
    for (int i = 0; i < kRowsPerLength; ++i) {
      const std::size_t at = static_cast<std::size_t>(kRowsPerLength - 1 - i) * stride + (kRowsPerLength - 1 - i);
      rows[i] = dev + at;
      want[i] = crc32c_bitwise(host.data() + at, static_cast<std::size_t>(n));
    }
    const void** rows_dev = nullptr;
    uint32_t* out = nullptr;
    ok(cudaMalloc(reinterpret_cast<void**>(&rows_dev), rows.size() * sizeof(void*)));
    ok(cudaMalloc(reinterpret_cast<void**>(&out), want.size() * sizeof(uint32_t)));
    ok(cudaMemcpy(rows_dev, rows.data(), rows.size() * sizeof(void*), cudaMemcpyHostToDevice));
    epcomm::kernels::cuda::crc32c_row_list(rows_dev, kRowsPerLength, n, out, nullptr);
    std::vector<uint32_t> got(want.size());
    ok(cudaMemcpy(got.data(), out, got.size() * sizeof(uint32_t), cudaMemcpyDeviceToHost));
    EXPECT_EQ(got, want);
    ok(cudaFree(out));
    ok(cudaFree(rows_dev));
    ok(cudaFree(dev));
  }
}

}  // namespace
