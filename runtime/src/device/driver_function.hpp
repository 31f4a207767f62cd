// SPDX-License-Identifier: MIT
// CUDA driver functions looked up by name at run time (through the runtime's entry
// point query) rather than linked: builds and CPU runs on machines without a GPU
// driver keep working, and a driver too old for a function is found out when it is
// needed, not when the library loads.
#pragma once

namespace epcomm::detail {

// The driver's function `name` (its CUDA 12.0 signature), or null when this
// driver has none or cannot be asked (no driver). Never throws.
void* find_driver_function(const char* name);

// The same, but throws Error(kUnsupported) naming the function and what it is
// needed for (`purpose`, e.g. "which holds a caller's stream") when it is absent,
// and Error(kSystem) when the query fails.
void* driver_function(const char* name, const char* purpose);

}  // namespace epcomm::detail
