// SPDX-License-Identifier: MIT
// What a Group knows about its ranks; shared by everything built on the group.
#pragma once

#include <epcomm/group.hpp>
#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm_pool.hpp"
#include "progress/progress_thread.hpp"
#include "util/worker_pool.hpp"

namespace epcomm::detail {

struct GroupState {
  MPI_Comm comm = MPI_COMM_NULL;       // node-major duplicate of the caller's comm
  MPI_Comm node_comm = MPI_COMM_NULL;  // ranks of this (emulated) node, by local rank
  int rank = 0;
  int size = 1;
  int node = 0;
  int num_nodes = 1;
  int local_rank = 0;
  int ranks_per_node = 1;
  int host_ranks = 1;        // ranks on this host (several emulated nodes may share it)
  int host_cores = 1;        // cores online on this host
  double timeout_s = 60;
  GroupOptions::Transport transport = GroupOptions::Transport::kAuto;  // never kDefault
  // Unique per group on this node; labels its shared memory (node_shm.hpp).
  std::string shm_prefix;
  uint64_t next_resource_id = 0;
  // Pids of the node's ranks by local rank, for node_peer_liveness.hpp; empty when
  // this rank cannot see its node peers' processes (another PID namespace).
  std::vector<int> node_pids;
  // Exchanges' communicators (dups of comm), reused rather than freed; shared
  // with every later group of the same ranks.
  std::shared_ptr<CommPool> exchange_comms;
  // Setup steps over comm so far (roll_call's attempt numbers), and whether one
  // timed out and may have left messages in flight to comm: then comm is not freed
  // (see comm_pool.hpp for why a freed communicator must not receive).
  uint64_t setup_attempts = 0;
  bool setup_left_messages = false;
  // The row movers' threads (GroupOptions::mover_threads), shared by every
  // exchange of the group; the thread driving progress is one of them.
  std::unique_ptr<WorkerPool> movers;
  // Null when progress is inline (driven by wait() and Exchange::progress()).
  std::unique_ptr<ProgressThread> progress;

  ~GroupState();

  int node_of(int r) const { return r / ranks_per_node; }
  int global_rank(int node_index, int local) const { return node_index * ranks_per_node + local; }
};

}  // namespace epcomm::detail
