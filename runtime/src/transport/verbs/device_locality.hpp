// SPDX-License-Identifier: MIT
// Which verbs devices are near this rank's cores: on a host with several adapters
// (one per socket or per GPU), each rank should use the one attached to its own
// socket, not the first in the list. Locality comes from hwloc (the device's
// local_cpus in sysfs) and the rank's CPU binding.
#pragma once

#include <hwloc.h>
#include <infiniband/verbs.h>

#include <vector>

namespace epcomm::detail {

// 2: the binding lies inside the device's cpuset (same socket/NUMA node);
// 1: they overlap; 0: disjoint, or nothing known.
int locality_score(hwloc_const_bitmap_t binding, hwloc_const_bitmap_t device);

// Indices of devices[0..count), nearest first; ties keep the driver's order.
// Without locality information (unbound rank, no sysfs data) the order is unchanged.
std::vector<int> devices_nearest_first(ibv_device** devices, int count);

}  // namespace epcomm::detail
