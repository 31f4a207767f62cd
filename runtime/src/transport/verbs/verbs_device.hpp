// SPDX-License-Identifier: MIT
// One opened verbs port: device context, protection domain, and the address peers
// reach it by. Chosen from EPCOMM_IB_DEVICE / EPCOMM_IB_PORT, else the first ACTIVE
// port of the devices nearest this rank's cores first (device_locality); on RoCE
// the GID index comes from EPCOMM_IB_GID_INDEX or choose_gid_index().
#pragma once

#include <infiniband/verbs.h>

#include <string>
#include <vector>

#include "transport/verbs/gid_choice.hpp"

namespace epcomm::detail {

struct PortAddress {
  bool ethernet = false;  // RoCE: peers address the GID (global route); IB: the LID
  uint16_t lid = 0;
  int gid_index = -1;  // -1 on IB
  Gid gid{};
  ibv_mtu mtu = IBV_MTU_1024;  // active MTU
  uint32_t max_msg_size = 0;   // longest single RDMA write the port accepts
};

class VerbsDevice {
 public:
  // Names of the verbs devices on this host; empty when there are none (callers
  // that are optional skip then).
  static std::vector<std::string> list();

  VerbsDevice();
  ~VerbsDevice();
  VerbsDevice(const VerbsDevice&) = delete;
  VerbsDevice& operator=(const VerbsDevice&) = delete;

  ibv_context* context() const { return context_; }
  ibv_pd* pd() const { return pd_; }
  int port() const { return port_; }
  // "rxe0 port 1": for messages.
  const std::string& name() const { return name_; }
  const PortAddress& address() const { return address_; }

 private:
  void choose_gid();

  ibv_context* context_ = nullptr;
  ibv_pd* pd_ = nullptr;
  int port_ = 0;
  std::string name_;
  PortAddress address_;
};

}  // namespace epcomm::detail
