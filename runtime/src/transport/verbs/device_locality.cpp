// SPDX-License-Identifier: MIT
#include "transport/verbs/device_locality.hpp"

#include <hwloc/openfabrics-verbs.h>

#include <algorithm>
#include <numeric>

#include "util/log.hpp"

namespace epcomm::detail {

int locality_score(hwloc_const_bitmap_t binding, hwloc_const_bitmap_t device) {
  if (hwloc_bitmap_iszero(binding) || hwloc_bitmap_iszero(device)) return 0;
  if (hwloc_bitmap_isincluded(binding, device)) return 2;
  return hwloc_bitmap_intersects(binding, device) ? 1 : 0;
}

std::vector<int> devices_nearest_first(ibv_device** devices, int count) {
  std::vector<int> order(count);
  std::iota(order.begin(), order.end(), 0);
  if (count < 2) return order;
  hwloc_topology_t topo = nullptr;
  if (hwloc_topology_init(&topo) != 0) return order;
  std::vector<int> score(count, 0);
  hwloc_bitmap_t binding = hwloc_bitmap_alloc();
  hwloc_bitmap_t local = hwloc_bitmap_alloc();
  if (hwloc_topology_load(topo) == 0 && hwloc_get_cpubind(topo, binding, HWLOC_CPUBIND_PROCESS) == 0) {
    for (int d = 0; d < count; ++d) {
      if (hwloc_ibv_get_device_cpuset(topo, devices[d], local) == 0) score[d] = locality_score(binding, local);
      EPCOMM_LOG(kDebug, "verbs: device " << ibv_get_device_name(devices[d]) << " locality score " << score[d]);
    }
  }
  hwloc_bitmap_free(local);
  hwloc_bitmap_free(binding);
  hwloc_topology_destroy(topo);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return score[a] > score[b]; });
  return order;
}

}  // namespace epcomm::detail
