// SPDX-License-Identifier: MIT
// Which GID table entry a RoCE port addresses its peers with. Pure logic over a
// snapshot of the table, so the rule is tested without a device.
//
// RoCE v2 with an IPv4-mapped GID (::ffff:a.b.c.d) is what routed Ethernet fabrics
// and soft-RoCE use; v1 entries and link-local addresses only reach one L2 segment.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>

namespace epcomm::detail {

using Gid = std::array<uint8_t, 16>;

enum class GidType { kIB, kRoCEv1, kRoCEv2 };

struct GidEntry {
  int index;
  GidType type;
  Gid gid;
};

// `forced` >= 0 (EPCOMM_IB_GID_INDEX) must name a non-empty entry and wins.
// Otherwise: the first RoCE v2 IPv4-mapped entry, else the first RoCE v2 entry
// that is not link-local. Throws Error(kUnsupported) listing the table when none
// fits, and Error(kInvalidArgument) for a forced index not in the table.
int choose_gid_index(std::span<const GidEntry> table, int forced, const std::string& port_name);

bool gid_is_zero(const Gid& gid);
bool gid_is_ipv4_mapped(const Gid& gid);
bool gid_is_link_local(const Gid& gid);
// "::ffff:10.0.2.15" for IPv4-mapped entries, else eight colon-separated hex groups.
std::string format_gid(const Gid& gid);
const char* to_string(GidType type);

}  // namespace epcomm::detail
