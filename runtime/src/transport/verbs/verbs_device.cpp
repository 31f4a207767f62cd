// SPDX-License-Identifier: MIT
#include "transport/verbs/verbs_device.hpp"

#include <cerrno>
#include <cstring>
#include <sstream>

#include "transport/verbs/device_locality.hpp"
#include "util/check.hpp"
#include "util/env.hpp"
#include "util/log.hpp"

namespace epcomm::detail {
namespace {

// The device list, freed on scope exit.
struct DeviceList {
  int count = 0;
  ibv_device** devices = ibv_get_device_list(&count);
  ~DeviceList() {
    if (devices) ibv_free_device_list(devices);
  }
};

}  // namespace

std::vector<std::string> VerbsDevice::list() {
  DeviceList all;
  std::vector<std::string> names;
  for (int i = 0; i < all.count; ++i) names.emplace_back(ibv_get_device_name(all.devices[i]));
  return names;
}

VerbsDevice::VerbsDevice() {
  const std::string want_device = env::ib_device();
  const int want_port = env::ib_port();
  DeviceList all;
  EPCOMM_REQUIRE(all.devices != nullptr && all.count > 0, kUnsupported,
                 "no RDMA verbs device on this host (ibv_get_device_list: " << std::strerror(errno) << ")");
  std::ostringstream seen;  // every port looked at, for the error below
  // A named device needs no locality ranking (which loads the hwloc topology).
  std::vector<int> order(all.count);
  for (int d = 0; d < all.count; ++d) order[d] = d;
  if (want_device.empty()) order = devices_nearest_first(all.devices, all.count);
  for (int d : order) {
    if (context_ != nullptr) break;
    const char* dev_name = ibv_get_device_name(all.devices[d]);
    if (!want_device.empty() && want_device != dev_name) continue;
    ibv_context* ctx = ibv_open_device(all.devices[d]);
    if (ctx == nullptr) {
      seen << " " << dev_name << " (cannot open: " << std::strerror(errno) << ");";
      continue;
    }
    ibv_device_attr dev_attr{};
    int chosen = 0;
    ibv_port_attr chosen_attr{};
    if (ibv_query_device(ctx, &dev_attr) == 0) {
      for (int p = 1; p <= dev_attr.phys_port_cnt && chosen == 0; ++p) {
        if (want_port != 0 && p != want_port) continue;
        ibv_port_attr attr{};
        if (ibv_query_port(ctx, static_cast<uint8_t>(p), &attr) != 0) continue;
        seen << " " << dev_name << " port " << p << " " << ibv_port_state_str(attr.state) << ";";
        if (attr.state == IBV_PORT_ACTIVE) {
          chosen = p;
          chosen_attr = attr;
        }
      }
    }
    if (chosen == 0) {
      ibv_close_device(ctx);
      continue;
    }
    context_ = ctx;
    port_ = chosen;
    name_ = std::string(dev_name) + " port " + std::to_string(chosen);
    address_.ethernet = chosen_attr.link_layer == IBV_LINK_LAYER_ETHERNET;
    address_.lid = chosen_attr.lid;
    address_.mtu = chosen_attr.active_mtu;
    address_.max_msg_size = chosen_attr.max_msg_sz;
  }
  EPCOMM_REQUIRE(context_ != nullptr, kUnsupported,
                 "no ACTIVE verbs port" << (want_device.empty() ? "" : " on EPCOMM_IB_DEVICE=" + want_device)
                                        << (want_port ? " port " + std::to_string(want_port) : std::string())
                                        << " (seen:" << (seen.str().empty() ? " nothing" : seen.str()) << ")");
  pd_ = ibv_alloc_pd(context_);
  if (pd_ == nullptr) {
    const int err = errno;
    ibv_close_device(context_);
    EPCOMM_FAIL(kSystem, "ibv_alloc_pd on " << name_ << " failed: " << std::strerror(err));
  }
  try {
    choose_gid();
  } catch (...) {
    ibv_dealloc_pd(pd_);
    ibv_close_device(context_);
    throw;
  }
  EPCOMM_LOG(kInfo, "verbs: " << name_ << (address_.ethernet ? ", RoCE GID [" : ", IB LID ")
                              << (address_.ethernet ? std::to_string(address_.gid_index) + "] " + format_gid(address_.gid)
                                                    : std::to_string(address_.lid))
                              << ", max message " << address_.max_msg_size << " bytes");
}

// RoCE has no LIDs: peers route by GID, so pick the table entry they can reach.
void VerbsDevice::choose_gid() {
  const int forced = env::ib_gid_index();
  if (!address_.ethernet && forced < 0) return;
  ibv_port_attr attr{};
  EPCOMM_REQUIRE(ibv_query_port(context_, static_cast<uint8_t>(port_), &attr) == 0, kSystem,
                 "ibv_query_port on " << name_ << " failed: " << std::strerror(errno));
  std::vector<GidEntry> table;
  for (int i = 0; i < attr.gid_tbl_len; ++i) {
    ibv_gid_entry entry{};
    // Empty entries fail with ENODATA: they are not candidates.
    if (ibv_query_gid_ex(context_, static_cast<uint32_t>(port_), static_cast<uint32_t>(i), &entry, 0) != 0) continue;
    GidEntry e{i, GidType::kIB, {}};
    std::memcpy(e.gid.data(), entry.gid.raw, e.gid.size());
    e.type = entry.gid_type == IBV_GID_TYPE_ROCE_V2   ? GidType::kRoCEv2
             : entry.gid_type == IBV_GID_TYPE_ROCE_V1 ? GidType::kRoCEv1
                                                      : GidType::kIB;
    table.push_back(e);
  }
  address_.gid_index = choose_gid_index(table, forced, name_);
  for (const GidEntry& e : table)
    if (e.index == address_.gid_index) address_.gid = e.gid;
}

VerbsDevice::~VerbsDevice() {
  ibv_dealloc_pd(pd_);
  ibv_close_device(context_);
}

}  // namespace epcomm::detail
