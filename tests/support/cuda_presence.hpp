// SPDX-License-Identifier: MIT
// Whether this process sees a CUDA device: GPU tests skip, with a message, where
// it does not (CI has the compiler but no GPU).
#pragma once

namespace epcomm_test {

bool cuda_device_present();

}  // namespace epcomm_test
