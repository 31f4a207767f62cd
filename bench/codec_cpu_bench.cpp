// SPDX-License-Identifier: MIT
// epcomm-codec-bench: single-thread CPU cost of the row codecs, and the error each
// wire format makes.
//
//   epcomm-codec-bench [--json] [--hidden H] [--min-time S]
//     Throughput of encode (from FP32 and from BF16 rows), decode (to FP32 and to
//     BF16) and decode+accumulate (into FP32) of rows of H (7168) elements, for the
//     vectorised kernels (codec_for) and the scalar reference (reference_codec_for),
//     next to memcpy of the same bytes between buffers of the same size, all on one
//     core. GB/s counts the op's INPUT bytes: the plain row for encode, the encoded
//     row for decode and accumulate. 64 rows stay in L2; 4096 rows do not.
//   epcomm-codec-bench --accuracy [--json] [--hidden H]
//     Relative RMS error and bias of encode+decode against the FP32 input, on
//     Gaussian, log-normal (sigma 2) and outlier-heavy rows; for LogFMT also the same
//     statistics of rounding in log space on the same tile grid.
//
// --json prints one JSON object per result line instead of the table.
#include <epcomm/formats.hpp>
#include <epcomm/types.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "common/json_lines.hpp"
#include "common/run_header.hpp"
#include "epcomm_kernels/codec.hpp"
#include "epcomm_kernels/tile_kernels.hpp"

namespace {

using epcomm::DType;
using epcomm::Format;
using epcomm::kernels::Codec;

struct Options {
  bool json = false;
  bool accuracy = false;
  int hidden = 7168;
  double min_time_s = 0.25;
};

// Fills o from argv; returns the exit status when the program should stop (0 after
// --help, 2 after a bad argument).
std::optional<int> parse(int argc, char** argv, Options& o) {
  CLI::App app("Single-thread CPU throughput of the row codecs (default) or their error (--accuracy).",
               "epcomm-codec-bench");
  app.add_flag("--accuracy", o.accuracy, "relative RMS error and bias instead of throughput");
  app.add_flag("--json", o.json, "one JSON object per result line instead of the table");
  epcomm_bench::add_number(app, "--hidden", o.hidden, 1, "elements per row");
  epcomm_bench::add_number(app, "--min-time", o.min_time_s, 0.0, "seconds each measurement repeats for at least");
  return epcomm_bench::parse_command_line(app, argc, argv, true);
}

// A JSON line: the run header of a one-process run, then the result's keys.
epcomm_bench::Json json_line() {
  epcomm_bench::RunHeader header;
  header.bench = "epcomm-codec-bench";
  header.transport = "none";
  return epcomm_bench::run_header_json(header);
}

Format logfmt(int bits) { return static_cast<Format>(static_cast<int>(Format::kLogFMT3) + bits - 3); }
const char* dtype_name(DType t) { return t == DType::kF32 ? "f32" : "bf16"; }
std::size_t dtype_bytes(DType t) { return t == DType::kF32 ? 4 : 2; }

// ------------------------------------------------------------------ data

enum class Dist { kGaussian, kLogNormal, kOutliers };
const char* dist_name(Dist d) {
  switch (d) {
    case Dist::kGaussian: return "gaussian";
    case Dist::kLogNormal: return "lognormal(s=2)";
    case Dist::kOutliers: return "outliers(0.1%x100)";
  }
  return "?";
}

// Fixed-seed FP32 values: N(0,1); sign * e^N(0, 2); or N(0,1) with 0.1% of the
// elements x100.
std::vector<float> make_values(Dist d, std::size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01;
  std::vector<float> v(n);
  for (float& x : v) {
    switch (d) {
      case Dist::kGaussian: x = n01(rng); break;
      case Dist::kLogNormal: x = std::exp(2.0f * n01(rng)) * ((rng() & 1u) ? 1.0f : -1.0f); break;
      case Dist::kOutliers: x = n01(rng) * (rng() % 1000 == 0 ? 100.0f : 1.0f); break;
    }
  }
  return v;
}

// ------------------------------------------------------------------ throughput

using Clock = std::chrono::steady_clock;

// Best seconds of one call of f over repeated calls: at least 3, and until
// min_time_s has passed. The best, not the mean: the machine is shared, and the
// fastest pass is the one least disturbed.
template <class F>
double best_seconds(double min_time_s, F&& f) {
  double best = 1e30, total = 0;
  for (int rep = 0; rep < 3 || total < min_time_s; ++rep) {
    const auto t0 = Clock::now();
    f();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::min(best, s);
    total += s;
  }
  return best;
}

// Scratch buffers sized for the largest row of any format, touched once so that no
// page fault lands in a timed pass.
struct Buffers {
  std::vector<uint8_t> plain_f32, plain_bf16, encoded, out, copy_dst;
  std::vector<float> acc;
  Buffers(int rows, int hidden) {
    const std::size_t elems = static_cast<std::size_t>(rows) * static_cast<std::size_t>(hidden);
    const std::vector<float> v = make_values(Dist::kOutliers, elems, 1);
    plain_f32.resize(elems * 4);
    std::memcpy(plain_f32.data(), v.data(), plain_f32.size());
    plain_bf16.resize(elems * 2);
    epcomm::kernels::reference_kernels().f32_to_bf16(v.data(), static_cast<int>(elems),
                                                     reinterpret_cast<uint16_t*>(plain_bf16.data()));
    encoded.assign(elems * 4 + static_cast<std::size_t>(rows) * 1024, 0);
    out.assign(elems * 4, 0);
    copy_dst.assign(elems * 4 + static_cast<std::size_t>(rows) * 1024, 0);
    acc.assign(elems, 0.0f);
  }
};

struct Result {
  std::string format, op, impl, dtype;
  int rows = 0;
  double gbps = 0, memcpy_gbps = 0;
};

// memcpy of `row_bytes` per row, rows apart by row_bytes: the same bytes a codec op
// reads, from and to buffers of the same size.
double memcpy_gbps(const Options& o, Buffers& b, int rows, std::size_t row_bytes) {
  const uint8_t* src = b.encoded.data();
  const double s = best_seconds(o.min_time_s, [&] {
    for (int r = 0; r < rows; ++r) {
      std::memcpy(b.copy_dst.data() + r * row_bytes, src + r * row_bytes, row_bytes);
    }
  });
  return static_cast<double>(rows) * static_cast<double>(row_bytes) / s / 1e9;
}

void run_throughput(const Options& o) {
  const std::vector<Format> formats{Format::kBF16, Format::kFP8, Format::kFP8UE8M0, logfmt(4),
                                    logfmt(8),     logfmt(10),   logfmt(16)};
  const int hidden = o.hidden;
  std::vector<Result> results;
  for (int rows : {64, 4096}) {
    Buffers b(rows, hidden);
    std::map<std::size_t, double> copy_rate;  // memcpy GB/s by row bytes
    auto copy_for = [&](std::size_t row_bytes) {
      auto it = copy_rate.find(row_bytes);
      if (it == copy_rate.end()) it = copy_rate.emplace(row_bytes, memcpy_gbps(o, b, rows, row_bytes)).first;
      return it->second;
    };
    for (Format f : formats) {
      const std::size_t enc_bytes = epcomm::kernels::codec_for(f).row_bytes(hidden);
      for (const char* impl : {"simd", "scalar"}) {
        const bool simd = std::strcmp(impl, "simd") == 0;
        const Codec& c = simd ? epcomm::kernels::codec_for(f) : epcomm::kernels::reference_codec_for(f);
        auto add = [&](const char* op, DType t, std::size_t in_row_bytes, auto&& pass) {
          const double s = best_seconds(o.min_time_s, pass);
          results.push_back({epcomm::to_string(f), op, impl, dtype_name(t), rows,
                             static_cast<double>(rows) * static_cast<double>(in_row_bytes) / s / 1e9,
                             copy_for(in_row_bytes)});
        };
        for (DType t : {DType::kF32, DType::kBF16}) {
          const uint8_t* src = (t == DType::kF32 ? b.plain_f32 : b.plain_bf16).data();
          const std::size_t plain_bytes = static_cast<std::size_t>(hidden) * dtype_bytes(t);
          add("encode", t, plain_bytes, [&] {
            for (int r = 0; r < rows; ++r) c.encode_row(src + r * plain_bytes, t, hidden, b.encoded.data() + r * enc_bytes);
          });
        }
        for (DType t : {DType::kF32, DType::kBF16}) {
          const std::size_t plain_bytes = static_cast<std::size_t>(hidden) * dtype_bytes(t);
          add("decode", t, enc_bytes, [&] {
            for (int r = 0; r < rows; ++r) c.decode_row(b.encoded.data() + r * enc_bytes, hidden, b.out.data() + r * plain_bytes, t);
          });
        }
        add("decode+acc", DType::kF32, enc_bytes, [&] {
          for (int r = 0; r < rows; ++r) {
            c.accumulate_row(b.encoded.data() + r * enc_bytes, hidden, 0.5f, b.acc.data() + static_cast<std::size_t>(r) * hidden);
          }
        });
      }
    }
  }

  if (o.json) {
    epcomm_bench::JsonLines out(true, "");
    for (const Result& r : results) {
      epcomm_bench::Json j = json_line();
      j["format"] = r.format;
      j["op"] = r.op;
      j["impl"] = r.impl;
      j["input_dtype"] = r.dtype;
      j["rows"] = r.rows;
      j["hidden"] = hidden;
      j["gbps"] = epcomm_bench::rounded(r.gbps, 3);
      j["memcpy_gbps"] = epcomm_bench::rounded(r.memcpy_gbps, 3);
      j["ratio_to_memcpy"] = epcomm_bench::rounded(r.gbps / r.memcpy_gbps, 4);
      out.write(j);
    }
    return;
  }
  std::printf("single thread, hidden %d, GB/s of input bytes; SIMD target %s\n\n", hidden,
              epcomm::kernels::active_kernels().name);
  std::printf("| format | op | dtype | rows | SIMD GB/s | scalar GB/s | memcpy GB/s | SIMD/memcpy | SIMD/scalar |\n");
  std::printf("|---|---|---|---:|---:|---:|---:|---:|---:|\n");
  // Results come in (simd, scalar) runs of 5 ops per format.
  for (std::size_t i = 0; i < results.size(); i += 10) {
    for (std::size_t j = 0; j < 5; ++j) {
      const Result& s = results[i + j];
      const Result& r = results[i + 5 + j];
      std::printf("| %s | %s | %s | %d | %.2f | %.3f | %.2f | %.2f | %.1f |\n", s.format.c_str(), s.op.c_str(),
                  s.dtype.c_str(), s.rows, s.gbps, r.gbps, s.memcpy_gbps, s.gbps / s.memcpy_gbps, s.gbps / r.gbps);
    }
  }
}

// ------------------------------------------------------------------ accuracy

// Sums of the errors of decoded values d against inputs x.
struct ErrorStats {
  double sq_err = 0, sq_x = 0, mag_err = 0, abs_x = 0;
  void add(double x, double d) {
    sq_err += (d - x) * (d - x);
    sq_x += x * x;
    mag_err += std::fabs(d) - std::fabs(x);
    abs_x += std::fabs(x);
  }
  // sqrt(sum (d-x)^2 / sum x^2).
  double rel_rms() const { return std::sqrt(sq_err / sq_x); }
  // sum (|d| - |x|) / sum |x|: how much magnitudes grow (> 0) or shrink on average.
  // Signed errors of symmetric data cancel between signs; magnitudes do not.
  double bias() const { return mag_err / abs_x; }
};

// LogFMT rounded in log space instead: on the tile's own grid (the (min, max) the
// encoder stored), |x| goes to the level nearest in log2, in double precision and
// with exact powers of two. Zero and the interval below level 1 are treated as the
// format does (the nearer of 0 and level 1, linearly), so the two roundings differ
// only where log and linear distances disagree.
double log_space_round(double x, double tmin, double step, int levels) {
  const double a = std::fabs(x);
  if (a < 0x1p-126) return 0.0;
  const double v1 = std::exp2(tmin);
  double r;
  if (a <= v1) {
    r = a > v1 - a ? v1 : 0.0;
  } else if (step <= 0.0) {
    r = v1;
  } else {
    const double k = std::clamp(std::nearbyint((std::log2(a) - tmin) / step), 0.0, static_cast<double>(levels - 1));
    r = std::exp2(tmin + k * step);
  }
  return std::copysign(r, x);
}

void run_accuracy(const Options& o) {
  const int hidden = o.hidden, rows = 64;
  std::vector<Format> formats{Format::kBF16, Format::kFP8, Format::kFP8UE8M0};
  for (int bits : {4, 6, 8, 10, 12, 16}) formats.push_back(logfmt(bits));
  if (!o.json) {
    std::printf("%d rows x %d, encode from FP32 then decode to FP32; bias = sum(|dec|-|x|)/sum|x|\n\n", rows, hidden);
    std::printf("| data | format | rounding | rel. RMS error | bias |\n|---|---|---|---:|---:|\n");
  }
  epcomm_bench::JsonLines out(o.json, "");
  auto report = [&](Dist d, Format f, const char* rounding, const ErrorStats& e) {
    if (o.json) {
      epcomm_bench::Json j = json_line();
      j["data"] = dist_name(d);
      j["format"] = epcomm::to_string(f);
      j["rounding"] = rounding;
      j["rel_rms"] = e.rel_rms();
      j["bias"] = e.bias();
      out.write(j);
    } else {
      std::printf("| %s | %s | %s | %.3e | %+.3e |\n", dist_name(d), epcomm::to_string(f), rounding, e.rel_rms(), e.bias());
    }
  };
  for (Dist d : {Dist::kGaussian, Dist::kLogNormal, Dist::kOutliers}) {
    const std::vector<float> x = make_values(d, static_cast<std::size_t>(rows) * hidden, 7);
    for (Format f : formats) {
      const Codec& c = epcomm::kernels::codec_for(f);
      const epcomm::RowLayout layout = epcomm::row_layout(f, hidden);
      const int bits = epcomm::logfmt_bits(f);
      std::vector<uint8_t> enc(c.row_bytes(hidden));
      std::vector<float> dec(static_cast<std::size_t>(hidden));
      ErrorStats linear, log_space;
      for (int r = 0; r < rows; ++r) {
        const float* xr = x.data() + static_cast<std::size_t>(r) * hidden;
        c.encode_row(xr, DType::kF32, hidden, enc.data());
        c.decode_row(enc.data(), hidden, dec.data(), DType::kF32);
        for (int i = 0; i < hidden; ++i) linear.add(xr[i], dec[i]);
        if (bits == 0) continue;
        const int levels = (1 << (bits - 1)) - 1;
        for (int i = 0; i < hidden; ++i) {
          int16_t mm[2];
          std::memcpy(mm, enc.data() + layout.meta_offset + static_cast<std::size_t>(i / epcomm::kTileElems) * sizeof mm,
                      sizeof mm);
          const double tmin = mm[0] / 128.0, tmax = mm[1] / 128.0;
          log_space.add(xr[i], log_space_round(xr[i], tmin, (tmax - tmin) / (levels - 1), levels));
        }
      }
      report(d, f, "linear", linear);
      if (bits != 0) report(d, f, "log-space", log_space);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (const std::optional<int> status = parse(argc, argv, o)) return *status;
  if (o.accuracy) {
    run_accuracy(o);
  } else {
    run_throughput(o);
  }
  return 0;
}
