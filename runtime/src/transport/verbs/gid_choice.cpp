// SPDX-License-Identifier: MIT
#include "transport/verbs/gid_choice.hpp"

#include <cstdio>
#include <sstream>

#include "util/check.hpp"

namespace epcomm::detail {

bool gid_is_zero(const Gid& gid) {
  for (uint8_t b : gid)
    if (b != 0) return false;
  return true;
}

bool gid_is_ipv4_mapped(const Gid& gid) {
  for (int i = 0; i < 10; ++i)
    if (gid[i] != 0) return false;
  return gid[10] == 0xff && gid[11] == 0xff;
}

bool gid_is_link_local(const Gid& gid) { return gid[0] == 0xfe && (gid[1] & 0xc0) == 0x80; }

std::string format_gid(const Gid& gid) {
  char text[48];
  if (gid_is_ipv4_mapped(gid)) {
    std::snprintf(text, sizeof text, "::ffff:%u.%u.%u.%u", gid[12], gid[13], gid[14], gid[15]);
  } else {
    std::snprintf(text, sizeof text, "%02x%02x:%02x%02x:%02x%02x:%02x%02x:%02x%02x:%02x%02x:%02x%02x:%02x%02x", gid[0],
                  gid[1], gid[2], gid[3], gid[4], gid[5], gid[6], gid[7], gid[8], gid[9], gid[10], gid[11], gid[12],
                  gid[13], gid[14], gid[15]);
  }
  return text;
}

const char* to_string(GidType type) {
  switch (type) {
    case GidType::kIB: return "IB";
    case GidType::kRoCEv1: return "RoCE v1";
    case GidType::kRoCEv2: return "RoCE v2";
  }
  return "?";
}

int choose_gid_index(std::span<const GidEntry> table, int forced, const std::string& port_name) {
  if (forced >= 0) {
    for (const GidEntry& e : table)
      if (e.index == forced && !gid_is_zero(e.gid)) return forced;
    EPCOMM_FAIL(kInvalidArgument, "EPCOMM_IB_GID_INDEX=" << forced << " names no populated GID entry of " << port_name);
  }
  for (const GidEntry& e : table)
    if (e.type == GidType::kRoCEv2 && gid_is_ipv4_mapped(e.gid)) return e.index;
  for (const GidEntry& e : table)
    if (e.type == GidType::kRoCEv2 && !gid_is_zero(e.gid) && !gid_is_link_local(e.gid)) return e.index;
  std::ostringstream list;
  for (const GidEntry& e : table)
    if (!gid_is_zero(e.gid)) list << " [" << e.index << "] " << format_gid(e.gid) << " " << to_string(e.type) << ";";
  EPCOMM_FAIL(kUnsupported, port_name << " has no routable RoCE v2 GID (table:" << (list.str().empty() ? " empty" : list.str())
                                      << "); assign an IP address to its netdev or set EPCOMM_IB_GID_INDEX");
}

}  // namespace epcomm::detail
