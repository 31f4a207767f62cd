// SPDX-License-Identifier: MIT
#include "exchange/config_agreement.hpp"

#include <bit>
#include <chrono>
#include <cstring>
#include <random>
#include <vector>

#include "util/check.hpp"
#include "util/roll_call.hpp"

namespace epcomm::detail {

ConstructionAgreement agree_on_construction(GroupState& g, const char* config_name, const char* construction,
                                            std::span<const ConfigField> fields) {
  const std::size_t n = fields.size();
  const std::size_t sent = n + 2;  // the fields, then a random id and the free communicators
  std::vector<int64_t> mine(sent);
  for (std::size_t f = 0; f < n; ++f) mine[f] = fields[f].value;
  mine[n] = static_cast<int64_t>(std::random_device{}() ^ (uint64_t{std::random_device{}()} << 32) ^
                                 std::chrono::steady_clock::now().time_since_epoch().count());
  mine[n + 1] = static_cast<int64_t>(g.exchange_comms->free_mask());
  // The group's private communicator carries only setup traffic: tags 1 and 2 here,
  // 3 and 4 for the exchange's allocation check.
  const std::vector<std::byte> records = roll_call(g.comm, 1, mine.data(), sent * sizeof(int64_t),
                                                   ++g.setup_attempts, g.timeout_s, construction,
                                                   &g.setup_left_messages);
  std::vector<int64_t> all(sent * g.size);
  std::memcpy(all.data(), records.data(), records.size());
  for (int r = 0; r < g.size; ++r) {
    for (std::size_t f = 0; f < n; ++f) {
      const int64_t theirs = all[r * sent + f];
      EPCOMM_REQUIRE(theirs == mine[f], kMismatch,
                     config_name << " differs across ranks: rank " << r << " has " << fields[f].name << "="
                                 << theirs << " but this rank has " << mine[f]);
    }
  }
  uint64_t free_everywhere = ~uint64_t{0};
  for (int r = 0; r < g.size; ++r) free_everywhere &= static_cast<uint64_t>(all[r * sent + n + 1]);
  const int comm_index = free_everywhere ? std::countr_zero(free_everywhere) : g.exchange_comms->made();
  return {static_cast<uint64_t>(all[n]), comm_index};
}

}  // namespace epcomm::detail
