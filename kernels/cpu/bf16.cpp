#include "epcomm_kernels/bf16.hpp"

namespace epcomm::kernels {

void f32_to_bf16_row(const float* src, int n, uint16_t* dst) {
  for (int i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

void bf16_to_f32_row(const uint16_t* src, int n, float* dst) {
  for (int i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}

void accumulate_bf16_row(const uint16_t* src, int n, float weight, float* acc) {
  for (int i = 0; i < n; ++i) acc[i] += weight * bf16_to_f32(src[i]);
}

void accumulate_f32_row(const float* src, int n, float weight, float* acc) {
  for (int i = 0; i < n; ++i) acc[i] += weight * src[i];
}

}  // namespace epcomm::kernels
