// SPDX-License-Identifier: MIT
#include <epcomm/group.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "group_state.hpp"
#include "node_peer_liveness.hpp"
#include "util/check.hpp"
#include "util/env.hpp"
#include "util/log.hpp"
#include "util/roll_call.hpp"

namespace epcomm {
namespace detail {

GroupState::~GroupState() {
  // MPI_Comm_free is local in practice and safe after a failed exchange; skip it
  // only when MPI is already gone (a caller that finalised before dropping us).
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (setup_left_messages) return;  // MPI_Finalize frees them
  if (node_comm != MPI_COMM_NULL) MPI_Comm_free(&node_comm);
  if (comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
}

}  // namespace detail

namespace {

// More row-moving threads than this is a typo, not a machine.
constexpr int kMaxMoverThreads = 1024;

// One record per rank of the caller's communicator, gathered to place every rank.
struct Placement {
  int host_key;        // lowest caller rank on the same host: names the host
  int host_rank;       // index among the ranks of that host
  int host_size;
  int ranks_per_node;  // what this rank was asked for (0: whole host)
};

}  // namespace

Group::Group(MPI_Comm comm, const GroupOptions& options)
    : state_(std::make_shared<detail::GroupState>()) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  EPCOMM_REQUIRE(initialized, kInvalidArgument,
                 "MPI is not initialised: call MPI_Init or MPI_Init_thread before creating a Group");
  EPCOMM_REQUIRE(comm != MPI_COMM_NULL, kInvalidArgument, "Group needs a communicator, got MPI_COMM_NULL");
  log::threshold();  // a bad EPCOMM_LOG_LEVEL fails here, on every rank
  EPCOMM_REQUIRE(options.ranks_per_node >= 0, kInvalidArgument,
                 "GroupOptions::ranks_per_node=" << options.ranks_per_node << " is negative");
  EPCOMM_REQUIRE(options.timeout_s >= 0, kInvalidArgument,
                 "GroupOptions::timeout_s=" << options.timeout_s << " is negative");
  EPCOMM_REQUIRE(options.mover_threads >= 0 && options.mover_threads <= kMaxMoverThreads, kInvalidArgument,
                 "GroupOptions::mover_threads=" << options.mover_threads << " is not in [0, " << kMaxMoverThreads
                                                << "]");
  const int asked_movers = options.mover_threads > 0 ? options.mover_threads : env::mover_threads();
  EPCOMM_REQUIRE(asked_movers <= kMaxMoverThreads, kInvalidArgument,
                 "EPCOMM_MOVER_THREADS=" << asked_movers << " is more than " << kMaxMoverThreads);

  int caller_rank = 0, caller_size = 0;
  EPCOMM_MPI(MPI_Comm_rank(comm, &caller_rank));
  EPCOMM_MPI(MPI_Comm_size(comm, &caller_size));
  const double timeout_s = options.timeout_s > 0 ? options.timeout_s : env::timeout_s();

  // The first step is the only one that can wait for a rank that never comes: a
  // non-blocking duplicate, bounded by the timeout (MPI cannot say who is missing).
  // Once it completes every rank is here, and the blocking steps below proceed.
  MPI_Comm setup = MPI_COMM_NULL;
  MPI_Request arrived;
  EPCOMM_MPI(MPI_Comm_idup(comm, &setup, &arrived));
  EPCOMM_REQUIRE(detail::wait_within(arrived, timeout_s), kTimeout,
                 "timed out after " << timeout_s << " s in phase 'setup' (Group construction): not every rank of "
                                    << "the communicator's " << caller_size
                                    << " created its Group (the communicator keeps a pending duplication; "
                                       "do not reuse it)");
  struct SetupFreer {
    MPI_Comm& c;
    ~SetupFreer() { MPI_Comm_free(&c); }
  } setup_freer{setup};
  comm = setup;

  MPI_Comm host_comm = MPI_COMM_NULL;
  EPCOMM_MPI(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, caller_rank, MPI_INFO_NULL, &host_comm));
  Placement mine{};
  EPCOMM_MPI(MPI_Comm_rank(host_comm, &mine.host_rank));
  EPCOMM_MPI(MPI_Comm_size(host_comm, &mine.host_size));
  EPCOMM_MPI(MPI_Allreduce(&caller_rank, &mine.host_key, 1, MPI_INT, MPI_MIN, host_comm));
  MPI_Comm_free(&host_comm);
  mine.ranks_per_node = options.ranks_per_node > 0 ? options.ranks_per_node : env::ranks_per_node();

  std::vector<Placement> all(caller_size);
  EPCOMM_MPI(MPI_Allgather(&mine, sizeof(Placement), MPI_BYTE, all.data(), sizeof(Placement),
                           MPI_BYTE, comm));

  // Every rank checks every rank, so all of them fail together on a bad launch.
  for (int r = 0; r < caller_size; ++r) {
    EPCOMM_REQUIRE(all[r].ranks_per_node == all[0].ranks_per_node, kMismatch,
                   "ranks per node differ: rank " << r << " asked for " << all[r].ranks_per_node
                                                  << ", rank 0 for " << all[0].ranks_per_node);
  }
  int rpn = all[0].ranks_per_node;
  for (int r = 0; r < caller_size; ++r) {
    int host_rpn = rpn > 0 ? rpn : all[r].host_size;
    // A launch that put fewer ranks on a host than declared (e.g. a per-host rank
    // count changed without EPCOMM_RANKS_PER_NODE) gets its own message: "not a
    // multiple" would hide that the host is short of ranks.
    EPCOMM_REQUIRE(all[r].host_size >= host_rpn, kInvalidArgument,
                   "the host of rank " << r << " runs only " << all[r].host_size
                                       << " ranks, fewer than EPCOMM_RANKS_PER_NODE=" << rpn
                                       << " (ranks per node); launch " << rpn
                                       << " ranks per host or lower EPCOMM_RANKS_PER_NODE");
    EPCOMM_REQUIRE(all[r].host_size % host_rpn == 0, kInvalidArgument,
                   "the host of rank " << r << " runs " << all[r].host_size
                                       << " ranks, not a multiple of EPCOMM_RANKS_PER_NODE=" << rpn);
    EPCOMM_REQUIRE(rpn > 0 || all[r].host_size == all[0].host_size, kInvalidArgument,
                   "nodes differ in size: rank " << r << "'s host runs " << all[r].host_size
                                                 << " ranks, rank 0's runs " << all[0].host_size
                                                 << "; epcomm needs equal nodes (set EPCOMM_RANKS_PER_NODE)");
  }
  if (rpn == 0) rpn = all[0].host_size;

  // Hosts are numbered by their lowest caller rank; nodes follow host order, then
  // the position inside the host.
  std::vector<int> host_keys;
  for (const Placement& p : all) host_keys.push_back(p.host_key);
  std::sort(host_keys.begin(), host_keys.end());
  host_keys.erase(std::unique(host_keys.begin(), host_keys.end()), host_keys.end());
  int node_base = 0;
  for (int key : host_keys) {
    if (key == mine.host_key) break;
    node_base += all[key].host_size / rpn;
  }

  detail::GroupState& s = *state_;
  s.ranks_per_node = rpn;
  s.size = caller_size;
  s.num_nodes = caller_size / rpn;
  s.node = node_base + mine.host_rank / rpn;
  s.local_rank = mine.host_rank % rpn;
  s.rank = s.node * rpn + s.local_rank;
  s.timeout_s = timeout_s;
  s.host_ranks = mine.host_size;
  s.transport = options.transport;
  if (s.transport == GroupOptions::Transport::kDefault) {
    const std::string t = env::transport();
    s.transport = t == "mpi" ? GroupOptions::Transport::kMpi
                  : t == "verbs" ? GroupOptions::Transport::kVerbs
                                 : GroupOptions::Transport::kAuto;
  }
  EPCOMM_REQUIRE(s.transport >= GroupOptions::Transport::kMpi && s.transport <= GroupOptions::Transport::kAuto,
                 kInvalidArgument, "GroupOptions::transport=" << static_cast<int>(s.transport) << " is not a transport");
  s.host_cores = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));

  EPCOMM_MPI(MPI_Comm_split(comm, 0, s.rank, &s.comm));
  s.exchange_comms = detail::CommPool::of_members(s.comm);
  EPCOMM_MPI(MPI_Comm_split(s.comm, s.node, s.local_rank, &s.node_comm));
  log::set_rank(s.rank);

  // Labels of the node's shared memory (seen in /proc/<pid>/maps) tell jobs and
  // groups apart: the node's first rank picks a prefix from its pid and the clock
  // and shares it.
  char prefix[64] = {};
  if (s.local_rank == 0) {
    auto ticks = std::chrono::steady_clock::now().time_since_epoch().count();
    std::snprintf(prefix, sizeof prefix, "/epcomm-%d-%llx-n%d", static_cast<int>(getpid()),
                  static_cast<unsigned long long>(ticks) & 0xffffffffull, s.node);
  }
  EPCOMM_MPI(MPI_Bcast(prefix, sizeof prefix, MPI_CHAR, 0, s.node_comm));
  s.shm_prefix = prefix;
  // Node peers' pids, kept only if every one is visible here (one PID namespace).
  const int pid = static_cast<int>(getpid());
  s.node_pids.resize(s.ranks_per_node);
  EPCOMM_MPI(MPI_Allgather(&pid, 1, MPI_INT, s.node_pids.data(), 1, MPI_INT, s.node_comm));
  if (std::any_of(s.node_pids.begin(), s.node_pids.end(), detail::process_gone)) s.node_pids.clear();

  s.movers = std::make_unique<detail::WorkerPool>(asked_movers > 0 ? asked_movers
                                                                   : detail::default_mover_threads(s.host_ranks));

  const bool want_thread = options.progress == GroupOptions::Progress::kDefault
                               ? env::progress_thread()
                               : options.progress == GroupOptions::Progress::kThread;
  if (want_thread) {
    int level = MPI_THREAD_SINGLE;
    EPCOMM_MPI(MPI_Query_thread(&level));
    EPCOMM_REQUIRE(level >= MPI_THREAD_MULTIPLE, kUnsupported,
                   "the progress thread calls MPI beside the caller's thread and needs MPI_THREAD_MULTIPLE, "
                   "but MPI was initialised with thread level "
                       << level << "; call MPI_Init_thread(..., MPI_THREAD_MULTIPLE, ...) or set EPCOMM_PROGRESS_THREAD=0");
    s.progress = std::make_unique<detail::ProgressThread>(env::progress_core(), s.host_ranks > s.host_cores);
  }

  EPCOMM_LOG(kInfo, "group: " << s.size << " ranks, " << s.num_nodes << " nodes x " << rpn
                              << " ranks, node " << s.node << " local " << s.local_rank
                              << ", timeout " << s.timeout_s << " s, progress "
                              << (s.progress ? "thread" : "inline") << ", " << s.movers->threads()
                              << " mover thread(s)");
}

Group::~Group() = default;

int Group::rank() const { return state_->rank; }
int Group::size() const { return state_->size; }
int Group::node() const { return state_->node; }
int Group::num_nodes() const { return state_->num_nodes; }
int Group::local_rank() const { return state_->local_rank; }
int Group::ranks_per_node() const { return state_->ranks_per_node; }
double Group::timeout_s() const { return state_->timeout_s; }
MPI_Comm Group::comm() const { return state_->comm; }
bool Group::progress_thread() const { return state_->progress != nullptr; }
int Group::mover_threads() const { return state_->movers->threads(); }

}  // namespace epcomm
