// SPDX-License-Identifier: MIT
// The SM budget of the exchange's kernels (ExchangeConfig::gpu_sm_budget and
// LowLatencyConfig::gpu_sm_budget): the rule that shapes every launch, and the
// streams that carry a budget.
//
// The rule: a kernel launched under a budget of n SMs gets at most n blocks. A
// block runs on one SM from start to end, so however the block scheduler places
// them, at most n SMs hold the kernel's blocks at any time; the rest stay free for
// the other micro-batch's compute. Every kernel of the exchange walks its work in
// grid-stride loops, so any grid computes the same result, and no block waits for
// another block of its own grid (a low-latency receive kernel waits for words that
// other GPUs' send kernels write), so a grid of one block finishes too.
//
// Under a budget a kernel's blocks are also as large as the kernel allows
// (budget_block_threads): with one block per SM, a block of the usual 256 threads
// is 8 resident warps of the 64 an SM holds, too few to hide memory latency; a
// block of 1024 is 32. Several smaller blocks per SM would give the same warps,
// but nothing keeps two blocks on one SM: n blocks of 512 threads may land on n
// different SMs, so the bound stays n blocks, and each is made larger instead.
// Every kernel works with any block of whole warps.
//
// No CUDA type appears here: the rule is plain arithmetic (tested on the host),
// and streams are cudaStream_t passed as void*, as in cuda_codec.hpp.
#pragma once

#include <cstdint>

namespace epcomm::kernels::cuda {

// Blocks of a 1-D launch that would take `wanted` blocks, under `budget` SMs
// (0: no bound): min(wanted, budget), and at least 1.
constexpr unsigned budget_blocks(int64_t wanted, int budget) {
  int64_t b = wanted < 1 ? 1 : wanted;
  if (budget > 0 && b > budget) b = budget;
  return static_cast<unsigned>(b);
}

// The most threads a block can have (CUDA's limit for every GPU since Fermi).
inline constexpr unsigned kMaxBlockThreads = 1024;

// The threads of a block of a kernel whose usual block is `usual_threads`, under
// `budget` SMs (0: no bound). kernel_max_threads is what CUDA reports for the
// kernel (cudaFuncAttributes::maxThreadsPerBlock: its launch bounds and its
// registers against the SM's register file). No budget: the usual block. A
// budget: the largest block of whole warps the kernel can have, at most
// kMaxBlockThreads, and never fewer than its usual block.
constexpr unsigned budget_block_threads(int kernel_max_threads, unsigned usual_threads, int budget) {
  if (budget <= 0) return usual_threads;
  unsigned t = kernel_max_threads > 0 ? static_cast<unsigned>(kernel_max_threads) : 0u;
  if (t > kMaxBlockThreads) t = kMaxBlockThreads;
  t = t / 32 * 32;
  return t > usual_threads ? t : usual_threads;
}

// A 2-D grid: x units of work (experts, tokens), each split over y blocks.
struct GridShape {
  unsigned x = 1;
  unsigned y = 1;
};

// The grid of a 2-D launch under `budget` SMs (0: no bound): x * y <= budget. The
// units (x) keep as many blocks as the budget allows, the split (y) gives way first;
// each is at least 1.
constexpr GridShape budget_grid(GridShape wanted, int budget) {
  GridShape g{wanted.x < 1 ? 1u : wanted.x, wanted.y < 1 ? 1u : wanted.y};
  if (budget <= 0) return g;
  const unsigned b = static_cast<unsigned>(budget);
  if (g.x > b) g.x = b;
  const unsigned y_most = b / g.x;
  if (g.y > y_most) g.y = y_most;
  return g;
}

// Every kernel that epcomm's CUDA code launches on `stream` from now on runs under
// `budget` SMs (0: no bound again). The exchange gives each of its private streams
// its config's budget when it makes the stream, and takes it back (0) before it
// destroys the stream. A stream never given one has no bound.
void set_stream_sm_budget(void* stream, int budget);
// The budget of `stream` (0: none).
int stream_sm_budget(void* stream);

}  // namespace epcomm::kernels::cuda
