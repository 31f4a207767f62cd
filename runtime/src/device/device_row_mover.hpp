// SPDX-License-Identifier: MIT
// The device row mover (CUDA): each batch is one kernel on the mover's own stream,
// its pointer and weight lists in pinned host memory that the kernel reads
// directly, so a batch costs no separate upload.
#pragma once

#include <memory>

#include "exchange/row_mover.hpp"

namespace epcomm::detail {

// list_bytes: pinned memory for the batches' pointer and weight lists. sm_budget:
// the SMs each kernel on the mover's stream may occupy (0: no bound).
std::unique_ptr<RowMover> make_device_row_mover(int device, std::size_t list_bytes, int sm_budget);

}  // namespace epcomm::detail
