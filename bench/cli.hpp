// SPDX-License-Identifier: MIT
// Command-line pieces shared by the bench programs: numbers and comma lists, with
// errors naming the flag and the text.
#pragma once

#include <charconv>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace epcomm_bench {

// A malformed command line; every rank sees the same argv, so every rank throws.
class ArgsError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

template <class T>
T parse_number(std::string_view flag, std::string_view text, T min_value) {
  T value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min_value) {
    throw ArgsError("--" + std::string(flag) + ": expected a number >= " + std::to_string(min_value) + ", got '" +
                    std::string(text) + "'");
  }
  return value;
}

inline std::vector<std::string_view> split_commas(std::string_view text) {
  std::vector<std::string_view> parts;
  for (;;) {
    const std::size_t comma = text.find(',');
    parts.push_back(text.substr(0, comma));
    if (comma == std::string_view::npos) return parts;
    text.remove_prefix(comma + 1);
  }
}

inline std::vector<int> parse_int_list(std::string_view flag, std::string_view text, int min_value) {
  std::vector<int> values;
  for (std::string_view part : split_commas(text)) values.push_back(parse_number<int>(flag, part, min_value));
  return values;
}

}  // namespace epcomm_bench
