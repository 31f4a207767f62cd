// SPDX-License-Identifier: MIT
// epcomm-codec-gpu-bench: GB/s of the fused CUDA pack (gather + encode) and unpack
// (decode + scatter) against a device-to-device cudaMemcpyAsync in the same
// process, on BF16 token rows.
//
// Bytes counted, for every row: bytes read plus bytes written. pack: the BF16 row
// (2 * hidden) + the encoded row; unpack: the encoded row + the BF16 row; copy of
// the BF16 matrix: 2 * hidden read + 2 * hidden written. Index lists (4 bytes a row)
// are not counted. Times are CUDA events around each call, the median of --iters
// calls after --warmup calls; pack and unpack use a random permutation of the rows.
//
// --checksum adds the GPU's row checksums (crc32c_row_list, the CRC32C the
// exchange's kernels take with ExchangeConfig::checksum) over the same BF16 rows:
// 2 * hidden read + 4 written a row, the rows as they lie (op "aligned") and the
// same bytes copied one byte apart, so every row starts one byte past a 16-byte
// boundary (op "offset1", as rows inside a received block may). Both must give the
// same CRCs; the bench fails if they do not.
//
//   epcomm-codec-gpu-bench [--tokens 4096,16384] [--hidden 7168] [--iters 50]
//                          [--warmup 5] [--formats bf16,fp8,...] [--checksum] [--json]
#include <cuda_runtime_api.h>
#include <epcomm/error.hpp>
#include <epcomm/formats.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "common/json_lines.hpp"
#include "common/run_header.hpp"
#include "epcomm_kernels/cuda_codec.hpp"
#include "epcomm_kernels/cuda_rows.hpp"

namespace {

namespace gpu = epcomm::kernels::cuda;
using epcomm::DType;
using epcomm::Format;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

struct Options {
  std::vector<int> tokens = {4096, 16384};
  int hidden = 7168;
  int iters = 50;
  int warmup = 5;
  std::vector<Format> formats = {Format::kBF16, Format::kFP8, Format::kFP8UE8M0, Format::kLogFMT8, Format::kLogFMT10};
  bool checksum = false;
  bool json = false;
};

// Fills o from argv; returns the exit status when the program should stop (0 after
// --help, 2 after a bad argument).
std::optional<int> parse(int argc, char** argv, Options& o) {
  using namespace epcomm_bench;
  CLI::App app("GB/s of the fused CUDA pack and unpack against a device-to-device copy, on BF16 token rows.",
               "epcomm-codec-gpu-bench");
  add_int_list(app, "--tokens", o.tokens, 1, "rows per measurement");
  add_number(app, "--hidden", o.hidden, 1, "elements per row");
  add_number(app, "--iters", o.iters, 1, "timed calls");
  add_number(app, "--warmup", o.warmup, 0, "untimed calls");
  std::vector<std::string> formats;
  for (Format f : o.formats) formats.push_back(epcomm::to_string(f));
  add_word_list(app, "--formats", formats, wire_format(), "wire formats to measure");
  app.add_flag("--checksum", o.checksum, "also time the GPU row checksums (CRC32C) over the same rows");
  app.add_flag("--json", o.json, "one JSON object per result line instead of the table");
  if (const std::optional<int> status = parse_command_line(app, argc, argv, true)) return status;
  o.formats = to_formats(formats);
  return std::nullopt;
}

struct DeviceMemory {
  void* p = nullptr;
  explicit DeviceMemory(std::size_t bytes) { check(cudaMalloc(&p, bytes), "cudaMalloc"); }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  ~DeviceMemory() { cudaFree(p); }
};

// Median milliseconds of one call of fn on stream.
double median_ms(const std::function<void()>& fn, cudaStream_t stream, const Options& o) {
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  for (int i = 0; i < o.warmup; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < o.iters; ++i) {
    check(cudaEventRecord(start, stream), "cudaEventRecord");
    fn();
    check(cudaEventRecord(stop, stream), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float t = 0;
    check(cudaEventElapsedTime(&t, start, stop), "cudaEventElapsedTime");
    ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Roughly Gaussian BF16 values (sum of four uniforms), cheap enough for 10^8 rows.
std::vector<uint16_t> make_bf16(std::size_t n) {
  std::vector<uint16_t> out(n);
  uint64_t s = 0x9e3779b97f4a7c15ull;
  for (auto& v : out) {
    float sum = -2.0f;
    for (int k = 0; k < 4; ++k) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      sum += static_cast<float>(s >> 40) * (1.0f / 16777216.0f);
    }
    uint32_t u;
    std::memcpy(&u, &sum, 4);
    v = static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
  return out;
}

void report(const Options& o, const char* gpu_name, const char* format, int tokens, const char* op, double ms,
            double bytes, double copy_gbps) {
  const double gbps = bytes / (ms * 1e-3) / 1e9;
  if (o.json) {
    epcomm_bench::RunHeader header;
    header.bench = "epcomm-codec-gpu-bench";
    header.transport = "none";
    epcomm_bench::Json j = epcomm_bench::run_header_json(header);
    j["gpu"] = gpu_name;
    j["format"] = format;
    j["tokens"] = tokens;
    j["hidden"] = o.hidden;
    j["op"] = op;
    j["median_us"] = epcomm_bench::rounded(ms * 1e3, 2);
    j["bytes"] = bytes;
    j["gbps"] = epcomm_bench::rounded(gbps, 1);
    j["copy_gbps"] = epcomm_bench::rounded(copy_gbps, 1);
    j["fraction_of_copy"] = epcomm_bench::rounded(gbps / copy_gbps, 3);
    epcomm_bench::JsonLines(true, "").write(j);
  } else {
    std::printf("%-10s %7d %7d %-7s %10.1f %9.1f %9.1f %7.1f%%\n", format, tokens, o.hidden, op, ms * 1e3, gbps,
                copy_gbps, 100.0 * gbps / copy_gbps);
  }
}

// A device array of row addresses: row i at base + offset + i * stride.
std::vector<const void*> row_list(const void* base, int tokens, std::size_t offset, std::size_t stride) {
  std::vector<const void*> rows(static_cast<std::size_t>(tokens));
  for (int i = 0; i < tokens; ++i) rows[i] = static_cast<const unsigned char*>(base) + offset + i * stride;
  return rows;
}

// The checksum lines (see the top of the file); false when the two layouts' CRCs differ.
bool time_checksums(const Options& o, const char* gpu_name, const void* matrix, int tokens, std::size_t row_bytes,
                    double copy_gbps, cudaStream_t stream) {
  const std::size_t offset_stride = row_bytes + 1;
  DeviceMemory shifted(tokens * offset_stride + 16), list(tokens * sizeof(void*)), crcs(2 * tokens * sizeof(uint32_t));
  check(cudaMemcpy2D(static_cast<unsigned char*>(shifted.p) + 1, offset_stride, matrix, row_bytes, row_bytes, tokens,
                     cudaMemcpyDeviceToDevice),
        "copy rows one byte apart");
  const double bytes = static_cast<double>(tokens) * static_cast<double>(row_bytes + sizeof(uint32_t));
  auto* out = static_cast<uint32_t*>(crcs.p);
  struct Layout {
    const char* op;
    std::vector<const void*> rows;
    uint32_t* out;
  };
  const Layout layouts[] = {{"aligned", row_list(matrix, tokens, 0, row_bytes), out},
                            {"offset1", row_list(shifted.p, tokens, 1, offset_stride), out + tokens}};
  for (const Layout& l : layouts) {
    check(cudaMemcpy(list.p, l.rows.data(), l.rows.size() * sizeof(void*), cudaMemcpyHostToDevice), "upload rows");
    const auto* rows = static_cast<const void* const*>(list.p);
    const double ms = median_ms(
        [&] { gpu::crc32c_row_list(rows, tokens, static_cast<int64_t>(row_bytes), l.out, stream); }, stream, o);
    report(o, gpu_name, "crc32c", tokens, l.op, ms, bytes, copy_gbps);
  }
  std::vector<uint32_t> got(2 * static_cast<std::size_t>(tokens));
  check(cudaMemcpy(got.data(), crcs.p, got.size() * sizeof(uint32_t), cudaMemcpyDeviceToHost), "download CRCs");
  if (!std::equal(got.begin(), got.begin() + tokens, got.begin() + tokens)) {
    std::fprintf(stderr, "epcomm-codec-gpu-bench: the CRC32C of rows one byte apart differ from the aligned rows'\n");
    return false;
  }
  return true;
}

int run(const Options& o) {
  if (!gpu::cuda_device_available()) {
    std::fprintf(stderr, "epcomm-codec-gpu-bench: no CUDA device or driver, nothing to measure\n");
    return 0;
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  cudaStream_t stream;
  check(cudaStreamCreate(&stream), "cudaStreamCreate");

  const int max_tokens = *std::max_element(o.tokens.begin(), o.tokens.end());
  const std::size_t in_row = static_cast<std::size_t>(o.hidden) * 2;
  std::size_t max_row = in_row;
  for (Format f : o.formats) max_row = std::max(max_row, epcomm::encoded_row_bytes(f, o.hidden));

  DeviceMemory src(max_tokens * in_row), enc(max_tokens * max_row), out(max_tokens * in_row),
      perm(max_tokens * sizeof(int32_t)), bad(sizeof(int64_t));
  const std::vector<uint16_t> host = make_bf16(static_cast<std::size_t>(max_tokens) * o.hidden);
  check(cudaMemcpy(src.p, host.data(), max_tokens * in_row, cudaMemcpyHostToDevice), "upload rows");

  if (!o.json) {
    std::printf("# %s, %d SMs; bytes = read + written; median of %d after %d warmup\n", prop.name,
                prop.multiProcessorCount, o.iters, o.warmup);
    std::printf("%-10s %7s %7s %-7s %10s %9s %9s %8s\n", "format", "tokens", "hidden", "op", "median_us", "GB/s",
                "copy_GB/s", "of_copy");
  }
  for (int tokens : o.tokens) {
    std::vector<int32_t> order(static_cast<std::size_t>(tokens));
    for (int i = 0; i < tokens; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), std::mt19937(1));
    check(cudaMemcpy(perm.p, order.data(), order.size() * sizeof(int32_t), cudaMemcpyHostToDevice), "upload index");
    const auto* index = static_cast<const int32_t*>(perm.p);

    const double copy_bytes = 2.0 * tokens * in_row;
    const double copy_ms = median_ms(
        [&] { check(cudaMemcpyAsync(out.p, src.p, tokens * in_row, cudaMemcpyDeviceToDevice, stream), "copy"); },
        stream, o);
    const double copy_gbps = copy_bytes / (copy_ms * 1e-3) / 1e9;
    report(o, prop.name, "d2d-copy", tokens, "copy", copy_ms, copy_bytes, copy_gbps);

    for (Format f : o.formats) {
      const std::size_t row = epcomm::encoded_row_bytes(f, o.hidden);
      const double bytes = static_cast<double>(tokens) * static_cast<double>(in_row + row);
      // Only LogFMT can fail (and then needs the flag, reset by every call).
      int64_t* bad_index = epcomm::logfmt_bits(f) != 0 ? static_cast<int64_t*>(bad.p) : nullptr;
      const double pack_ms = median_ms(
          [&] { gpu::pack_rows(f, src.p, DType::kBF16, o.hidden, index, tokens, enc.p, bad_index, stream); }, stream,
          o);
      report(o, prop.name, epcomm::to_string(f), tokens, "pack", pack_ms, bytes, copy_gbps);
      const double unpack_ms = median_ms(
          [&] { gpu::unpack_rows(f, enc.p, tokens, o.hidden, index, out.p, DType::kBF16, stream); }, stream, o);
      report(o, prop.name, epcomm::to_string(f), tokens, "unpack", unpack_ms, bytes, copy_gbps);
    }
    if (o.checksum && !time_checksums(o, prop.name, src.p, tokens, in_row, copy_gbps, stream)) return 1;
  }
  check(cudaStreamDestroy(stream), "cudaStreamDestroy");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (const std::optional<int> status = parse(argc, argv, o)) return *status;
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "epcomm-codec-gpu-bench: %s\n", e.what());
    return 1;
  }
}
