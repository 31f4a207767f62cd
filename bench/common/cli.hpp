// SPDX-License-Identifier: MIT
// Command lines of the bench and test driver programs, on CLI11: the option kinds
// they share (comma lists, bounded numbers, wire formats) and one parse step that
// turns --help into the usage text (exit 0) and any bad argument into one clear
// line and exit status 2. MPI programs parse on every rank (every rank sees the
// same argv, so every rank fails the same way) and print on one.
#pragma once

#include <CLI/CLI.hpp>

#include <epcomm/types.hpp>

#include <cstdio>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace epcomm_bench {

// Accepts a number of type T that is >= min_value; the error names the text.
template <class T>
CLI::Validator at_least(T min_value) {
  std::string bound = ">= " + CLI::detail::to_string(min_value);
  return CLI::Validator(
      [min_value, bound](std::string& text) -> std::string {
        T value{};
        // CLI11 reads "-1" into an unsigned type as its wrap-around.
        const bool negative = std::is_unsigned_v<T> && text.find('-') != std::string::npos;
        if (!negative && CLI::detail::lexical_cast(text, value) && value >= min_value) return {};
        return "expected a number " + bound + ", got '" + text + "'";
      },
      bound);
}

// --name N with N >= min_value; the default shows in --help.
template <class T>
CLI::Option* add_number(CLI::App& app, const std::string& name, T& value, T min_value, const std::string& help) {
  return app.add_option(name, value, help)->check(at_least(min_value))->capture_default_str();
}

// --name N,N,... (or repeated --name N): every N >= min_value. A given flag
// replaces the default list.
inline CLI::Option* add_int_list(CLI::App& app, const std::string& name, std::vector<int>& values, int min_value,
                                 const std::string& help) {
  return app.add_option(name, values, help)
      ->delimiter(',')
      ->allow_extra_args(false)
      ->check(at_least(min_value))
      ->capture_default_str();
}

// A comma list of words; each must be accepted by `valid` (e.g. CLI::IsMember or
// wire_format()).
inline CLI::Option* add_word_list(CLI::App& app, const std::string& name, std::vector<std::string>& values,
                                  const CLI::Validator& valid, const std::string& help) {
  CLI::Option* option = app.add_option(name, values, help)->delimiter(',')->allow_extra_args(false)->check(valid);
  return values.empty() ? option : option->capture_default_str();
}

// Accepts epcomm's wire format names (bf16, fp8, fp8-ue8m0, logfmt<3..16>, f32).
inline CLI::Validator wire_format() {
  return CLI::Validator(
      [](std::string& name) -> std::string {
        try {
          epcomm::parse_format(name.c_str());
          return {};
        } catch (const std::exception&) {
          return "expected bf16, fp8, fp8-ue8m0, logfmt<3..16> or f32, got '" + name + "'";
        }
      },
      "FORMAT");
}

inline std::vector<epcomm::Format> to_formats(const std::vector<std::string>& names) {
  std::vector<epcomm::Format> formats;
  for (const std::string& name : names) formats.push_back(epcomm::parse_format(name.c_str()));
  return formats;
}

// Parses argv into the options registered on app. Returns the exit status when the
// program should stop here: 0 after --help, 2 after a bad argument. Only when
// `print` does it write (the usage on stdout, "<program>: <error> (see --help)" on
// stderr).
inline std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv, bool print) {
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::CallForHelp&) {
    if (print) std::printf("%s", app.help().c_str());
    return 0;
  } catch (const CLI::ParseError& e) {
    if (print) {
      std::fprintf(stderr, "%s: %s (see --help)\n", app.get_name().c_str(), e.what());
      std::fflush(stderr);
    }
    return 2;
  }
}

}  // namespace epcomm_bench
