// SPDX-License-Identifier: MIT
// epcomm — a group of ranks that exchange tokens.
//
// A Group is built collectively from a caller's MPI communicator (never assumed to be
// MPI_COMM_WORLD; the caller keeps ownership of MPI and finalizes it). It discovers
// which ranks share a host (MPI_Comm_split_type), optionally splits each host into
// several emulated nodes (GroupOptions::ranks_per_node or EPCOMM_RANKS_PER_NODE) so
// the inter-node path can be exercised on one machine, and renumbers ranks
// node-major: epcomm rank r lives on node r / ranks_per_node(). Expert ownership
// follows epcomm ranks, so with mpirun's default by-slot mapping they equal the
// communicator's ranks.
#pragma once

#include <epcomm/export.hpp>
#include <mpi.h>

#include <memory>

namespace epcomm {

struct GroupOptions {
  // Ranks per (emulated) node. 0: take EPCOMM_RANKS_PER_NODE, else all ranks that
  // share a host form one node. Every node must have the same number of ranks.
  int ranks_per_node = 0;
  // Seconds a waiting rank gives a silent peer before it throws ErrorCode::kTimeout.
  // 0: take EPCOMM_TIMEOUT_S, else 60.
  double timeout_s = 0;
  // Background progress thread, one per group: communication that has begun moves
  // while the caller computes. It needs MPI_THREAD_MULTIPLE (Group throws
  // ErrorCode::kUnsupported otherwise). kDefault: EPCOMM_PROGRESS_THREAD (0/1),
  // else on. When off, progress happens inside wait() and Exchange::progress().
  // EPCOMM_PROGRESS_CORE pins the thread to a core the launcher reserved.
  enum class Progress : int { kDefault = 0, kThread = 1, kInline = 2 };
  Progress progress = Progress::kDefault;
  // Inter-node transport of the group's exchanges. kMpi: MPI point-to-point (any
  // cluster). kVerbs: RDMA writes over libibverbs (InfiniBand/RoCE); an Exchange
  // throws ErrorCode::kUnsupported if a rank has no usable port. kAuto: verbs when
  // every rank has a port, else MPI (the startup log at EPCOMM_LOG_LEVEL=info says
  // which). kDefault: EPCOMM_TRANSPORT (mpi|verbs|auto), else auto. Ports come from
  // EPCOMM_IB_DEVICE / EPCOMM_IB_PORT / EPCOMM_IB_GID_INDEX (docs/transports.md).
  enum class Transport : int { kDefault = 0, kMpi = 1, kVerbs = 2, kAuto = 3 };
  Transport transport = Transport::kDefault;
  // Threads per rank that move rows on the host (copies, encode/decode, combine's
  // weighted sums), one pool per group shared by its exchanges. The count includes
  // the thread that drives progress (the progress thread, or the caller inside
  // wait()), which works as one of them: a rank never runs more than this many
  // threads while it moves rows. 0: take EPCOMM_MOVER_THREADS, else the cores this
  // rank may run on (sched_getaffinity) shared fairly with the other ranks of its
  // host: a rank bound to its own cores uses them all, an unbound rank gets
  // cores / ranks on the host, at least 1. Results do not depend on it.
  int mover_threads = 0;
};

namespace detail {
struct GroupState;
}

class EPCOMM_API Group {
 public:
  // Collective over `comm`. Throws Error on inconsistent topology or options.
  explicit Group(MPI_Comm comm, const GroupOptions& options = {});
  ~Group();
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  int rank() const;            // epcomm rank, node-major
  int size() const;
  int node() const;            // this rank's node index
  int num_nodes() const;
  int local_rank() const;      // index inside the node
  int ranks_per_node() const;
  double timeout_s() const;
  bool progress_thread() const;  // whether a background thread drives progress
  int mover_threads() const;     // row-moving threads of this rank (GroupOptions)
  // The group's private communicator (a reordered duplicate of the caller's).
  MPI_Comm comm() const;

  const std::shared_ptr<detail::GroupState>& state() const { return state_; }

 private:
  std::shared_ptr<detail::GroupState> state_;
};

}  // namespace epcomm
