// SPDX-License-Identifier: MIT
// Every EPCOMM_* environment knob, declared in one place with its default.
#pragma once

#include <string>

namespace epcomm::env {

// EPCOMM_RANKS_PER_NODE: split each host into emulated nodes of this many ranks.
int ranks_per_node();        // 0 when unset
// EPCOMM_TIMEOUT_S: seconds before a silent peer is reported (default 60).
double timeout_s();
// EPCOMM_PROGRESS_THREAD: 1 = background progress thread (default), 0 = inline.
bool progress_thread();
// EPCOMM_PROGRESS_CORE: core to pin the progress thread to; -1 when unset.
int progress_core();
// EPCOMM_MOVER_THREADS: row-moving threads per rank (GroupOptions::mover_threads);
// 0 when unset (the default from the rank's cores).
int mover_threads();
// EPCOMM_LOG_LEVEL: error|warn|info|debug|trace (default warn); anything else throws.
std::string log_level();
// EPCOMM_TRANSPORT: inter-node transport, "mpi", "verbs" or "auto" (default auto).
std::string transport();
// EPCOMM_IB_DEVICE: verbs device for RDMA between nodes; empty = first device with
// an active port.
std::string ib_device();
// EPCOMM_IB_PORT: port of that device; 0 (default) = its first active port.
int ib_port();
// EPCOMM_IB_GID_INDEX: RoCE GID table index; -1 (default) = chosen (RoCE v2,
// IPv4-mapped first).
int ib_gid_index();

// EPCOMM_HOLD_STREAMS: 1 (default) = an operation on GPU memory holds the caller's
// stream until it completes; 0 = it does not, and its results may be read only
// after wait(). For tools that serialise GPU work (compute-sanitizer), where a held
// stream would wait for work queued behind it.
bool hold_streams();
// EPCOMM_GPU_SM_BUDGET: the SM budget of the exchange's GPU kernels where the
// config leaves it 0 (ExchangeConfig / LowLatencyConfig::gpu_sm_budget); 0 (default)
// = no bound.
int gpu_sm_budget();
// EPCOMM_GPU_PEER_ACCESS: 1 (default) = with device memory, node peers on different
// GPUs write and read each other's GPU memory (CUDA IPC) where the GPUs have peer
// access; 0 = they go through the node's shared memory as where they have none
// (docs/gpu.md), to test or measure that path on any GPU host.
bool gpu_peer_access();
// EPCOMM_GPU_COUNTS: 1 (default) = a dispatch on GPU memory on one node has its
// routing checked and counted on the GPU, only the counts copied to the host;
// 0 = topk_idx and topk_weights are copied to the host, which routes, as across
// nodes (docs/gpu.md, Counts on the GPU), to measure or rule out the GPU's counts.
bool gpu_counts();
// EPCOMM_MPI_CHUNK_BYTES: the MPI inter-node tier sends each block as messages of
// at most this many bytes (default 1 MiB), so that packing, the transfer and the
// receiver's use of a block overlap; 0 = one message per block. Chunks below
// Open MPI's eager limit (4 KiB on shared memory) flood its queues.
int mpi_chunk_bytes();
// EPCOMM_GPU_DIRECT: whether an exchange on GPU memory lets the inter-node tier
// move GPU memory itself (CUDA-aware MPI, GPUDirect RDMA through dma-buf) instead
// of staging it through pinned host memory: "auto" (default: where detected),
// "1" (required: construction fails where it is not available), "0" (never).
// Anything else throws.
std::string gpu_direct();
// EPCOMM_CHECKSUM: 1 = CRC32C over inter-node blocks and over rows that cross a
// node peer's shared memory (ExchangeConfig::checksum).
bool checksum();
// EPCOMM_FAULT_FLIP_BIT (fault injection, builds with EPCOMM_FAULT_INJECTION only):
// flip one bit of the n-th inter-node block this rank sends, after its checksum was
// taken; 0 (default) = never.
int fault_flip_bit();
// EPCOMM_FAULT_FLIP_NODE_BIT (likewise): flip one bit of the first row this rank
// shows its node peers in the n-th operation that shows them any, after its
// checksum was taken; 0 (default) = never.
int fault_flip_node_bit();
// EPCOMM_FAULT_SETUP_STALL_S (likewise): seconds each rank sleeps holding its new
// node-shared memory before showing it to its node peers, so a test can kill a
// rank in that window; 0 (default) = none.
double fault_setup_stall_s();

// Parsing helpers, throwing Error(kInvalidArgument) naming the variable and value.
int get_int(const char* name, int fallback, int min_value);
double get_double(const char* name, double fallback, double min_value);

}  // namespace epcomm::env
