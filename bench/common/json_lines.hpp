// SPDX-License-Identifier: MIT
// JSON output of the bench programs: one object per line (JSON Lines), on stdout
// and/or into a file, each flushed as it is written, so a sweep killed half way
// keeps the lines it finished. Objects are nlohmann::ordered_json so keys keep the
// order they were added in.
#pragma once

#include "common/stats.hpp"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

namespace epcomm_bench {

using Json = nlohmann::ordered_json;

// value rounded to `decimals` places, so lines print 12.345 rather than every digit
// of a measurement's noise.
inline double rounded(double value, int decimals) {
  const double scale = std::pow(10.0, decimals);
  return std::round(value * scale) / scale;
}

// j[name] = the median of t, j[name + "_min" | "_p10" | "_p90" | "_max"] the rest.
inline void add_spread(Json& j, const std::string& name, const Spread& t, int decimals) {
  j[name] = rounded(t.p50, decimals);
  j[name + "_min"] = rounded(t.min, decimals);
  j[name + "_p10"] = rounded(t.p10, decimals);
  j[name + "_p90"] = rounded(t.p90, decimals);
  j[name + "_max"] = rounded(t.max, decimals);
}

class JsonLines {
 public:
  // Writes to stdout when to_stdout, and to path (truncated) unless it is empty;
  // throws std::runtime_error naming path when it cannot be opened.
  JsonLines(bool to_stdout, const std::string& path) : to_stdout_(to_stdout) {
    if (path.empty()) return;
    file_ = std::fopen(path.c_str(), "w");
    if (file_ == nullptr) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  }
  ~JsonLines() {
    if (file_ != nullptr) std::fclose(file_);
  }
  JsonLines(const JsonLines&) = delete;
  JsonLines& operator=(const JsonLines&) = delete;

  bool enabled() const { return to_stdout_ || file_ != nullptr; }

  void write(const Json& object) {
    const std::string line = object.dump();
    if (to_stdout_) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    }
    if (file_ != nullptr) {
      std::fprintf(file_, "%s\n", line.c_str());
      std::fflush(file_);
    }
  }

 private:
  bool to_stdout_ = false;
  std::FILE* file_ = nullptr;
};

}  // namespace epcomm_bench
