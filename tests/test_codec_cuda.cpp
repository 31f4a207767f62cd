// SPDX-License-Identifier: MIT
// The CUDA codecs against the CPU codec table (codec_for, run with
// EPCOMM_KERNELS=scalar: the reference kernels): encoded bytes equal byte for byte,
// decoded and accumulated floats bit for bit, for every format, both dtypes, odd
// and full hidden sizes, and data with outliers, subnormals, zeros and non-finite
// values. Without a CUDA device the GPU cases skip; the argument checks still run.
#include <cuda_runtime_api.h>
#include <epcomm/error.hpp>
#include <epcomm/formats.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/bf16.hpp"
#include "cuda/fp8_convert_check.hpp"
#include "epcomm_kernels/codec.hpp"
#include "epcomm_kernels/cuda_codec.hpp"
#include "epcomm_kernels/cuda_plan.hpp"
#include "epcomm_kernels/cuda_rows.hpp"

namespace {

namespace gpu = epcomm::kernels::cuda;
using epcomm::DType;
using epcomm::Format;

void cuda_ok(cudaError_t e, const char* what) {
  ASSERT_EQ(e, cudaSuccess) << what << ": " << cudaGetErrorString(e);
}

// Device memory holding a copy of a host vector (or n bytes), freed on scope exit.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
    cuda_ok(cudaMalloc(&ptr_, bytes_ == 0 ? 1 : bytes_), "cudaMalloc");
  }
  template <class T>
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size() * sizeof(T)) {
    cuda_ok(cudaMemcpy(ptr_, host.data(), bytes_, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr_); }

  template <class T = void>
  T* get() const { return static_cast<T*>(ptr_); }
  template <class T>
  std::vector<T> download() const {
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<T> out(bytes_ / sizeof(T));
    cuda_ok(cudaMemcpy(out.data(), ptr_, bytes_, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    return out;
  }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_;
};

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Which unusual values the rows may hold. LogFMT cannot encode NaN or infinity. For
// accumulation, only positive NaNs and no infinity: with two NaN operands (or
// inf - inf) the CPU's result depends on the operand order the compiler chose, so
// the reference itself has no single answer there.
enum class Specials { kAll, kFinite, kPositiveNan };

// rows x hidden values; the row's kind cycles through Gaussian, log-normal (values
// over ~17 binades, random sign), Gaussian with large outliers, Gaussian with
// special values, and a row of zeros and subnormals only.
std::vector<float> make_rows(int rows, int hidden, uint32_t seed, Specials specials) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> coin(0, 1);
  std::uniform_int_distribution<int> pick(0, 99);
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> special = {0.0f, -0.0f, 1e-40f, -3e-42f, 1e-39f, 1.2e-38f, -2e-30f, 448.0f, 1e-7f};
  if (specials != Specials::kPositiveNan) special.push_back(3e38f);  // weighted sums could overflow to inf
  if (specials != Specials::kFinite) special.push_back(float_of(0x7fc00000u));  // NaN
  if (specials == Specials::kAll) special.insert(special.end(), {float_of(0xffc00001u), inf, -inf});
  std::uniform_int_distribution<std::size_t> which(0, special.size() - 1);
  std::vector<float> x(static_cast<std::size_t>(rows) * hidden);
  for (int r = 0; r < rows; ++r) {
    float* row = x.data() + static_cast<std::size_t>(r) * hidden;
    for (int h = 0; h < hidden; ++h) {
      float v = normal(rng);
      switch (r % 5) {
        case 0: break;
        case 1: v = (coin(rng) ? 1.0f : -1.0f) * std::exp(4.0f * v); break;
        case 2: v = pick(rng) == 0 ? v * 1e4f : v; break;
        case 3: v = pick(rng) < 10 ? special[which(rng)] : v; break;
        default: v = pick(rng) < 50 ? 0.0f : v * 1e-39f; break;
      }
      row[h] = v;
    }
  }
  return x;
}

std::vector<uint16_t> to_bf16(const std::vector<float>& x) {
  std::vector<uint16_t> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = epcomm::kernels::elem::f32_to_bf16(x[i]);
  return out;
}

std::vector<Format> all_formats() {
  std::vector<Format> f = {Format::kF32, Format::kBF16, Format::kFP8, Format::kFP8UE8M0};
  for (int bits = 3; bits <= 16; ++bits) f.push_back(epcomm::logfmt_format(bits));
  return f;
}

std::string name_of(Format f, DType t, int hidden) {
  return std::string(epcomm::to_string(f)) + " " + epcomm::to_string(t) + " hidden " + std::to_string(hidden);
}

// The first differing element (or byte) of two equally long arrays, or -1.
template <class T>
std::ptrdiff_t first_difference(const std::vector<T>& a, const std::vector<T>& b) {
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return static_cast<std::ptrdiff_t>(i);
  }
  return -1;
}

constexpr int kRows = 23;
constexpr int kHiddens[] = {1, 100, 128, 129, 7168};

// One input set: the values in both dtypes, and the CPU encoding of each.
struct Input {
  int rows;
  int hidden;
  DType type;
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  const void* host() const { return type == DType::kF32 ? static_cast<const void*>(f32.data()) : bf16.data(); }
  std::size_t elem_bytes() const { return type == DType::kF32 ? 4 : 2; }
  const void* host_row(int64_t r) const {
    return static_cast<const char*>(host()) + static_cast<std::size_t>(r) * hidden * elem_bytes();
  }
  std::size_t bytes() const { return static_cast<std::size_t>(rows) * hidden * elem_bytes(); }
};

Input make_input(int rows, int hidden, DType type, uint32_t seed, Specials specials) {
  Input in{rows, hidden, type, make_rows(rows, hidden, seed, specials), {}};
  in.bf16 = to_bf16(in.f32);
  return in;
}

std::vector<uint8_t> cpu_encode(Format f, const Input& in, const std::vector<int32_t>& rows) {
  const auto& codec = epcomm::kernels::codec_for(f);
  const std::size_t rb = codec.row_bytes(in.hidden);
  std::vector<uint8_t> out(rows.size() * rb);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(codec.encode_row(in.host_row(rows[i]), in.type, in.hidden, out.data() + i * rb), -1);
  }
  return out;
}

std::vector<int32_t> iota_rows(int n) {
  std::vector<int32_t> r(static_cast<std::size_t>(n));
  std::iota(r.begin(), r.end(), 0);
  return r;
}

class CudaCodec : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!gpu::cuda_device_available()) {
      GTEST_SKIP() << "no CUDA device or driver here: the CUDA codecs are not exercised";
    }
  }
};

TEST_F(CudaCodec, EncodeAndPackMatchTheCpuBytes) {
  for (int hidden : kHiddens) {
    for (DType type : {DType::kF32, DType::kBF16}) {
      for (Format f : all_formats()) {
        const Specials sp = epcomm::logfmt_bits(f) != 0 ? Specials::kFinite : Specials::kAll;
        const Input in = make_input(kRows, hidden, type, 100 + static_cast<uint32_t>(hidden), sp);
        const std::size_t rb = epcomm::encoded_row_bytes(f, hidden);
        SCOPED_TRACE(name_of(f, type, hidden));
        DeviceBuffer src(in.bytes());
        cuda_ok(cudaMemcpy(src.get(), in.host(), in.bytes(), cudaMemcpyHostToDevice), "upload");
        DeviceBuffer bad(sizeof(int64_t));

        DeviceBuffer enc(kRows * rb);
        gpu::encode_rows(f, src.get(), type, kRows, hidden, enc.get(), bad.get<int64_t>(), nullptr);
        const auto want = cpu_encode(f, in, iota_rows(kRows));
        const auto got = enc.download<uint8_t>();
        const auto d = first_difference(got, want);
        EXPECT_EQ(d, -1) << "encode_rows: first different byte in row " << d / static_cast<std::ptrdiff_t>(rb)
                         << ", offset " << d % static_cast<std::ptrdiff_t>(rb);
        EXPECT_EQ(bad.download<int64_t>()[0], -1);

        // Gather with repeats and out of order.
        std::mt19937 rng(7);
        std::vector<int32_t> index(kRows + 5);
        for (auto& i : index) i = static_cast<int32_t>(rng() % kRows);
        DeviceBuffer dindex(index);
        DeviceBuffer packed(index.size() * rb);
        gpu::pack_rows(f, src.get(), type, hidden, dindex.get<int32_t>(), static_cast<int64_t>(index.size()),
                       packed.get(), bad.get<int64_t>(), nullptr);
        EXPECT_EQ(first_difference(packed.download<uint8_t>(), cpu_encode(f, in, index)), -1) << "pack_rows";
        EXPECT_EQ(bad.download<int64_t>()[0], -1);
      }
    }
  }
}

// The LogFMT encoder decides most elements from the hardware log2 and sends only
// those next to a midpoint between two levels (about 1 in 100 to 1 in 1000) to
// the exact comparison: many full rows, so that both paths see many elements, of
// Gaussian, log-normal and the bench's sum-of-uniforms data, in both dtypes.
TEST_F(CudaCodec, LogFmtEncodeMatchesTheCpuOnManyRows) {
  constexpr int kManyRows = 600, kHidden = 7168;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(kManyRows) * kHidden);
  for (int r = 0; r < kManyRows; ++r) {
    for (int h = 0; h < kHidden; ++h) {
      float v = normal(rng);
      if (r % 3 == 1) v = (v < 0 ? -1.0f : 1.0f) * std::exp(2.0f * normal(rng));
      if (r % 3 == 2) v = uniform(rng) + uniform(rng) + uniform(rng) + uniform(rng);
      x[static_cast<std::size_t>(r) * kHidden + h] = v;
    }
  }
  for (DType type : {DType::kBF16, DType::kF32}) {
    Input in{kManyRows, kHidden, type, x, to_bf16(x)};
    DeviceBuffer src(in.bytes());
    cuda_ok(cudaMemcpy(src.get(), in.host(), in.bytes(), cudaMemcpyHostToDevice), "upload");
    DeviceBuffer bad(sizeof(int64_t));
    for (int bits : {4, 8, 10, 12, 16}) {
      const Format f = epcomm::logfmt_format(bits);
      SCOPED_TRACE(name_of(f, type, kHidden));
      const std::size_t rb = epcomm::encoded_row_bytes(f, kHidden);
      DeviceBuffer enc(kManyRows * rb);
      gpu::encode_rows(f, src.get(), type, kManyRows, kHidden, enc.get(), bad.get<int64_t>(), nullptr);
      const auto d = first_difference(enc.download<uint8_t>(), cpu_encode(f, in, iota_rows(kManyRows)));
      EXPECT_EQ(d, -1) << "first different byte in row " << d / static_cast<std::ptrdiff_t>(rb) << ", offset "
                       << d % static_cast<std::ptrdiff_t>(rb);
    }
  }
}

// Many rows, more than the device runs blocks at once, of 2056, 7168 and 9216
// values (the first with a last tile of 8 values, the last more tiles than a
// block's groups take in one step, so some groups take two): pack_rows (gather
// with repeats) and encode_token_rows (scatter to the listed rows) against the
// CPU bytes, FP8 with non-finite values too.
TEST_F(CudaCodec, PackOfManyRowsMatchesTheCpuBytes) {
  constexpr int kSourceRows = 1500, kPacked = 2500;
  for (int hidden : {2056, 7168, 9216}) {
    for (Format f : {Format::kFP8, Format::kFP8UE8M0, Format::kLogFMT8, Format::kLogFMT10}) {
      const Specials sp = epcomm::logfmt_bits(f) != 0 ? Specials::kFinite : Specials::kAll;
      const Input in = make_input(kSourceRows, hidden, DType::kBF16, 400 + static_cast<uint32_t>(hidden), sp);
      SCOPED_TRACE(name_of(f, DType::kBF16, hidden));
      const std::size_t rb = epcomm::encoded_row_bytes(f, hidden);
      DeviceBuffer src(in.bytes());
      cuda_ok(cudaMemcpy(src.get(), in.host(), in.bytes(), cudaMemcpyHostToDevice), "upload");
      DeviceBuffer bad(sizeof(int64_t));
      std::mt19937 rng(13);
      std::vector<int32_t> index(kPacked);
      for (auto& i : index) i = static_cast<int32_t>(rng() % kSourceRows);
      DeviceBuffer dindex(index);
      DeviceBuffer packed(index.size() * rb);
      gpu::pack_rows(f, src.get(), DType::kBF16, hidden, dindex.get<int32_t>(), kPacked, packed.get(),
                     bad.get<int64_t>(), nullptr);
      auto d = first_difference(packed.download<uint8_t>(), cpu_encode(f, in, index));
      EXPECT_EQ(d, -1) << "pack_rows: first different byte in row " << d / static_cast<std::ptrdiff_t>(rb)
                       << ", offset " << d % static_cast<std::ptrdiff_t>(rb);
      EXPECT_EQ(bad.download<int64_t>()[0], -1);

      // Every other source row, in a shuffled order, each written to its own row.
      std::vector<int32_t> tokens;
      for (int r = 0; r < kSourceRows; r += 2) tokens.push_back(r);
      std::shuffle(tokens.begin(), tokens.end(), rng);
      DeviceBuffer dtokens(tokens);
      std::vector<uint8_t> want(kSourceRows * rb, 0x5a);
      const auto encoded = cpu_encode(f, in, tokens);
      for (std::size_t i = 0; i < tokens.size(); ++i) {
        std::memcpy(want.data() + tokens[i] * rb, encoded.data() + i * rb, rb);
      }
      DeviceBuffer scattered(want.size());
      cuda_ok(cudaMemset(scattered.get(), 0x5a, want.size()), "memset");
      gpu::encode_token_rows(f, src.get(), DType::kBF16, hidden, dtokens.get<int32_t>(),
                             static_cast<int64_t>(tokens.size()), scattered.get(), bad.get<int64_t>(), nullptr);
      d = first_difference(scattered.download<uint8_t>(), want);
      EXPECT_EQ(d, -1) << "encode_token_rows: first different byte in row " << d / static_cast<std::ptrdiff_t>(rb)
                       << ", offset " << d % static_cast<std::ptrdiff_t>(rb);
      EXPECT_EQ(bad.download<int64_t>()[0], -1);
    }
  }
}

// Decoded rows as the CPU produces them, into a buffer of `dst_rows` rows
// prefilled with `fill`: row dst[i] = decode(enc row i).
std::vector<uint8_t> cpu_decode(Format f, const std::vector<uint8_t>& enc, int hidden, DType type,
                                const std::vector<int32_t>& dst, int dst_rows, uint8_t fill) {
  const auto& codec = epcomm::kernels::codec_for(f);
  const std::size_t rb = codec.row_bytes(hidden), ob = static_cast<std::size_t>(hidden) * epcomm::dtype_size(type);
  std::vector<uint8_t> out(static_cast<std::size_t>(dst_rows) * ob, fill);
  for (std::size_t i = 0; i < dst.size(); ++i) codec.decode_row(enc.data() + i * rb, hidden, out.data() + dst[i] * ob, type);
  return out;
}

TEST_F(CudaCodec, DecodeAndUnpackMatchTheCpuBits) {
  for (int hidden : kHiddens) {
    for (Format f : all_formats()) {
      const Specials sp = epcomm::logfmt_bits(f) != 0 ? Specials::kFinite : Specials::kAll;
      const Input in = make_input(kRows, hidden, DType::kF32, 200 + static_cast<uint32_t>(hidden), sp);
      const auto enc = cpu_encode(f, in, iota_rows(kRows));
      DeviceBuffer denc(enc);
      for (DType type : {DType::kF32, DType::kBF16}) {
        SCOPED_TRACE(name_of(f, type, hidden));
        const std::size_t ob = static_cast<std::size_t>(hidden) * epcomm::dtype_size(type);
        DeviceBuffer out(kRows * ob);
        gpu::decode_rows(f, denc.get(), kRows, hidden, out.get(), type, nullptr);
        EXPECT_EQ(first_difference(out.download<uint8_t>(), cpu_decode(f, enc, hidden, type, iota_rows(kRows), kRows, 0)),
                  -1)
            << "decode_rows";

        // Scatter into a larger buffer; rows not named keep their 0xab bytes.
        const int dst_rows = kRows + 9;
        std::vector<int32_t> perm = iota_rows(dst_rows);
        std::shuffle(perm.begin(), perm.end(), std::mt19937(11));
        perm.resize(kRows);
        DeviceBuffer dperm(perm);
        DeviceBuffer scattered(dst_rows * ob);
        cuda_ok(cudaMemset(scattered.get(), 0xab, dst_rows * ob), "cudaMemset");
        gpu::unpack_rows(f, denc.get(), kRows, hidden, dperm.get<int32_t>(), scattered.get(), type, nullptr);
        const auto want = cpu_decode(f, enc, hidden, type, perm, dst_rows, 0xab);
        EXPECT_EQ(first_difference(scattered.download<uint8_t>(), want), -1) << "unpack_rows";
      }
    }
  }
}

TEST_F(CudaCodec, AccumulateMatchesTheCpuLoop) {
  for (int hidden : kHiddens) {
    for (Format f : all_formats()) {
      const Specials sp = epcomm::logfmt_bits(f) != 0 ? Specials::kFinite : Specials::kPositiveNan;
      const Input in = make_input(kRows, hidden, DType::kF32, 300 + static_cast<uint32_t>(hidden), sp);
      SCOPED_TRACE(name_of(f, DType::kF32, hidden));
      const auto enc = cpu_encode(f, in, iota_rows(kRows));
      const auto& codec = epcomm::kernels::codec_for(f);
      const std::size_t rb = codec.row_bytes(hidden);

      // Several sources per destination, some destinations with none.
      const int dst_rows = kRows / 3 + 2;
      std::mt19937 rng(13);
      std::normal_distribution<float> normal;
      std::vector<int32_t> dst_index(kRows);
      std::vector<float> weights(kRows);
      for (int i = 0; i < kRows; ++i) {
        dst_index[i] = static_cast<int32_t>(rng() % static_cast<uint32_t>(dst_rows - 1));  // the last stays empty
        weights[i] = normal(rng);
      }
      std::vector<float> acc(static_cast<std::size_t>(dst_rows) * hidden);
      for (float& a : acc) a = normal(rng);
      DeviceBuffer dacc(acc);

      for (int i = 0; i < kRows; ++i) {  // the CPU combine loop
        codec.accumulate_row(enc.data() + i * rb, hidden, weights[i], acc.data() + static_cast<std::size_t>(dst_index[i]) * hidden);
      }

      const gpu::CombineSources csr = gpu::combine_sources(dst_index.data(), kRows, dst_rows);
      DeviceBuffer denc(enc), doff(csr.offsets), dsrc(csr.sources), dw(weights);
      gpu::accumulate_rows(f, denc.get(), hidden, doff.get<int32_t>(), dsrc.get<int32_t>(), dw.get<float>(), dst_rows,
                           dacc.get<float>(), nullptr);
      const auto got = dacc.download<float>();
      std::vector<uint32_t> got_bits(got.size()), want_bits(acc.size());
      for (std::size_t i = 0; i < got.size(); ++i) got_bits[i] = bits_of(got[i]), want_bits[i] = bits_of(acc[i]);
      const auto d = first_difference(got_bits, want_bits);
      EXPECT_EQ(d, -1) << "accumulate_rows: element " << d << " got " << (d >= 0 ? got[d] : 0.0f) << " want "
                       << (d >= 0 ? acc[d] : 0.0f);
    }
  }
}

// Combine's final sum against the host combine's steps, done here with the CPU
// codecs: a zeroed FP32 accumulator, each node's partials added with weight 1 node
// by node (this rank's node FP32, the others in the combine format), then encoded
// in the output dtype. Three nodes, the own one in the middle, with tokens on all,
// some or none of them; then one node holding every token.
TEST_F(CudaCodec, SumNodePartialsMatchesTheHostSteps) {
  constexpr int kTokens = 29;
  std::mt19937 rng(17);
  // Token 0 is on no node, token 1 on all, token 2 on the own node only.
  std::vector<std::vector<int32_t>> three(3), one = {iota_rows(kTokens)};
  for (int t = 1; t < kTokens; ++t) {
    for (int n = 0; n < 3; ++n) {
      if (t == 1 || (t == 2 && n == 1) || (t > 2 && rng() % 3 != 0)) three[n].push_back(t);
    }
  }
  for (const auto* lists : {&three, &one}) {
    const bool one_node = lists == &one;
    const int own = one_node ? 0 : 1;
    const int32_t nowhere = one_node ? -1 : 0;
    // Its partial is all -0, which the zeroed accumulator turns into +0.
    const int32_t own_only = one_node ? kTokens - 1 : 2;
    std::vector<int32_t> offsets = {0}, tokens;
    for (const auto& l : *lists) {
      tokens.insert(tokens.end(), l.begin(), l.end());
      offsets.push_back(static_cast<int32_t>(tokens.size()));
    }
    for (int hidden : kHiddens) {
      for (Format f : all_formats()) {
        const Specials sp = epcomm::logfmt_bits(f) != 0 ? Specials::kFinite : Specials::kPositiveNan;
        // Each node's partials, in its list's order, and where they are on the GPU.
        std::vector<std::vector<uint8_t>> rows(lists->size());
        std::vector<std::unique_ptr<DeviceBuffer>> drows;
        std::vector<gpu::NodePartials> nodes;
        for (std::size_t n = 0; n < lists->size(); ++n) {
          const int count = static_cast<int>((*lists)[n].size());
          Input in = make_input(count, hidden, DType::kF32, 400 + static_cast<uint32_t>(n * 7 + hidden), sp);
          const bool f32 = static_cast<int>(n) == own;
          if (f32) {
            const auto at = std::find((*lists)[n].begin(), (*lists)[n].end(), own_only) - (*lists)[n].begin();
            std::fill_n(in.f32.begin() + at * hidden, hidden, -0.0f);
            rows[n].resize(in.f32.size() * sizeof(float));
            std::memcpy(rows[n].data(), in.f32.data(), rows[n].size());
          } else {
            rows[n] = cpu_encode(f, in, iota_rows(count));
          }
          drows.push_back(std::make_unique<DeviceBuffer>(rows[n]));
          const std::size_t rb = epcomm::encoded_row_bytes(f32 ? Format::kF32 : f, hidden);
          nodes.push_back({drows.back()->get<uint8_t>(), static_cast<int64_t>(rb), f32 ? 1 : 0});
        }
        std::vector<float> acc(static_cast<std::size_t>(kTokens) * hidden, 0.0f);
        for (std::size_t n = 0; n < lists->size(); ++n) {
          const auto& codec = epcomm::kernels::codec_for(static_cast<int>(n) == own ? Format::kF32 : f);
          for (std::size_t i = 0; i < (*lists)[n].size(); ++i) {
            codec.accumulate_row(rows[n].data() + i * nodes[n].row_bytes, hidden, 1.0f,
                                 acc.data() + static_cast<std::size_t>((*lists)[n][i]) * hidden);
          }
        }
        DeviceBuffer dnodes(nodes), doffsets(offsets), dtokens(tokens);
        for (DType type : {DType::kF32, DType::kBF16}) {
          SCOPED_TRACE(name_of(f, type, hidden) + ", " + std::to_string(lists->size()) + " node(s)");
          const auto& out_codec = epcomm::kernels::codec_for(epcomm::kernels::plain_format(type));
          const std::size_t ob = static_cast<std::size_t>(hidden) * epcomm::dtype_size(type);
          std::vector<uint8_t> want(kTokens * ob);
          for (int t = 0; t < kTokens; ++t) {
            out_codec.encode_row(acc.data() + static_cast<std::size_t>(t) * hidden, DType::kF32, hidden,
                                 want.data() + t * ob);
          }
          DeviceBuffer out(kTokens * ob);
          cuda_ok(cudaMemset(out.get(), 0xab, kTokens * ob), "cudaMemset");
          gpu::sum_node_partials(f, dnodes.get<gpu::NodePartials>(), static_cast<int>(lists->size()),
                                 doffsets.get<int32_t>(), dtokens.get<int32_t>(), kTokens, hidden, type, out.get(),
                                 nullptr);
          const auto got = out.download<uint8_t>();
          const auto d = first_difference(got, want);
          EXPECT_EQ(d, -1) << "first different byte in token " << d / static_cast<std::ptrdiff_t>(ob) << ", offset "
                           << d % static_cast<std::ptrdiff_t>(ob);
          // Independently of the reference: +0 where nothing or only -0 was summed.
          for (int32_t t : {nowhere, own_only}) {
            if (t < 0) continue;
            EXPECT_EQ(std::count(got.begin() + t * ob, got.begin() + (t + 1) * ob, uint8_t{0}),
                      static_cast<std::ptrdiff_t>(ob))
                << "token " << t << " is not +0";
          }
        }
      }
    }
  }
}

TEST_F(CudaCodec, LogFmtReportsTheFirstNonFiniteElement) {
  for (int hidden : kHiddens) {
    for (int bits : {3, 8, 10, 16}) {
      for (DType type : {DType::kF32, DType::kBF16}) {
        const Format f = epcomm::logfmt_format(bits);
        Input in = make_input(kRows, hidden, type, 400, Specials::kFinite);
        SCOPED_TRACE(name_of(f, type, hidden));
        const int c = hidden / 2;
        const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
        in.f32[static_cast<std::size_t>(9) * hidden + hidden - 1] = inf;
        in.f32[static_cast<std::size_t>(3) * hidden + hidden - 1] = inf;
        in.f32[static_cast<std::size_t>(3) * hidden + c] = nan;  // the first in row order
        in.bf16 = to_bf16(in.f32);
        // The CPU's report, for the expected column.
        const auto& codec = epcomm::kernels::codec_for(f);
        std::vector<uint8_t> scratch(codec.row_bytes(hidden));
        ASSERT_EQ(codec.encode_row(in.host_row(3), in.type, hidden, scratch.data()), c);
        ASSERT_EQ(codec.encode_row(in.host_row(9), in.type, hidden, scratch.data()), hidden - 1);

        DeviceBuffer src(in.bytes()), enc(kRows * scratch.size()), bad(sizeof(int64_t));
        cuda_ok(cudaMemcpy(src.get(), in.host(), in.bytes(), cudaMemcpyHostToDevice), "upload");
        gpu::encode_rows(f, src.get(), type, kRows, hidden, enc.get(), bad.get<int64_t>(), nullptr);
        EXPECT_EQ(bad.download<int64_t>()[0], int64_t{3} * hidden + c) << "encode_rows";

        // In pack order row 9 comes first (position 1).
        DeviceBuffer index(std::vector<int32_t>{0, 9, 3, 9});
        gpu::pack_rows(f, src.get(), type, hidden, index.get<int32_t>(), 4, enc.get(), bad.get<int64_t>(), nullptr);
        EXPECT_EQ(bad.download<int64_t>()[0], int64_t{1} * hidden + hidden - 1) << "pack_rows";
      }
    }
  }
}

// The FP8 kernels convert with the GPU's conversion instructions: every float and
// every code must convert as the reference element math does.
TEST_F(CudaCodec, Fp8ConversionInstructionsMatchTheReferenceEverywhere) {
  EXPECT_EQ(epcomm::kernels::cuda::detail::count_e4m3_mismatches(), 0);
}

// BF16 outputs too (store8, for decode into BF16).
TEST_F(CudaCodec, Bf16ConversionInstructionMatchesTheReferenceEverywhere) {
  EXPECT_EQ(epcomm::kernels::cuda::detail::count_bf16_mismatches(), 0);
}

// Any bytes decode without faults, to the CPU's values. Where both are NaN the bits
// may differ: with two NaN operands (a NaN code times a NaN scale) x86 returns
// the one the compiler put first.
TEST_F(CudaCodec, ArbitraryBytesDecodeLikeTheCpu) {
  std::mt19937 rng(17);
  for (int hidden : kHiddens) {
    for (Format f : all_formats()) {
      SCOPED_TRACE(name_of(f, DType::kF32, hidden));
      const std::size_t rb = epcomm::encoded_row_bytes(f, hidden);
      std::vector<uint8_t> enc(kRows * rb);
      for (auto& b : enc) b = static_cast<uint8_t>(rng());
      DeviceBuffer denc(enc), out(static_cast<std::size_t>(kRows) * hidden * 4);
      gpu::decode_rows(f, denc.get(), kRows, hidden, out.get(), DType::kF32, nullptr);
      const auto got = out.download<float>();
      const auto want_bytes = cpu_decode(f, enc, hidden, DType::kF32, iota_rows(kRows), kRows, 0);
      for (std::size_t i = 0; i < got.size(); ++i) {
        float w;
        std::memcpy(&w, want_bytes.data() + 4 * i, 4);
        if (std::isnan(w) && std::isnan(got[i])) continue;
        ASSERT_EQ(bits_of(got[i]), bits_of(w)) << "element " << i;
      }
    }
  }
}

// Argument checks come before any CUDA call, so they run without a GPU too.
TEST(CudaCodecArguments, AreRejectedWithInvalidArgument) {
  auto expect_invalid = [](auto&& call, const char* what) {
    try {
      call();
      ADD_FAILURE() << what << ": no error";
    } catch (const epcomm::Error& e) {
      EXPECT_EQ(e.code(), epcomm::ErrorCode::kInvalidArgument) << what << ": " << e.what();
    }
  };
  expect_invalid([] { gpu::encode_rows(static_cast<Format>(42), nullptr, DType::kF32, 1, 8, nullptr, nullptr, nullptr); },
                 "unknown format");
  expect_invalid([] { gpu::decode_rows(Format::kFP8, nullptr, 1, 0, nullptr, DType::kF32, nullptr); }, "hidden 0");
  expect_invalid([] { gpu::decode_rows(Format::kFP8, nullptr, 1, 8, nullptr, static_cast<DType>(7), nullptr); },
                 "unknown dtype");
  expect_invalid([] { gpu::encode_rows(Format::kLogFMT8, nullptr, DType::kF32, 1, 8, nullptr, nullptr, nullptr); },
                 "LogFMT without bad_index");
  expect_invalid([] { gpu::accumulate_rows(Format::kFP8, nullptr, 8, nullptr, nullptr, nullptr, -1, nullptr, nullptr); },
                 "negative rows");
  const int32_t dst[] = {0, 2};
  expect_invalid([&] { gpu::combine_sources(dst, 2, 2); }, "destination out of range");
}

TEST(CudaCodecArguments, CombineSourcesKeepsSourceOrderPerDestination) {
  const int32_t dst[] = {2, 0, 2, 1, 0, 2};
  const gpu::CombineSources csr = gpu::combine_sources(dst, 6, 4);
  EXPECT_EQ(csr.offsets, (std::vector<int32_t>{0, 2, 3, 6, 6}));
  EXPECT_EQ(csr.sources, (std::vector<int32_t>{1, 4, 3, 0, 2, 5}));
}

}  // namespace
