// SPDX-License-Identifier: MIT
#include "node_shm.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "node_peer_liveness.hpp"
#include "util/check.hpp"
#include "util/env.hpp"
#include "util/log.hpp"
#include "util/roll_call.hpp"

namespace epcomm::detail {
namespace {

std::byte* map_memory(int fd, std::size_t bytes, const std::string& what) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    EPCOMM_FAIL(kSystem, "mmap of " << what << " (" << bytes << " bytes) failed: " << std::strerror(errno));
  }
  return static_cast<std::byte*>(p);
}

// What each rank tells its node peers: whether it reserved its memory, and where
// they find it (/proc/<pid>/fd/<fd>).
struct Published {
  int32_t ok;
  int32_t pid;
  int32_t fd;
};

}  // namespace

NodeShm::NodeShm(GroupState& g, std::size_t bytes_per_rank, const char* purpose)
    : bases_(g.ranks_per_node, nullptr), bytes_(bytes_per_rank), local_rank_(g.local_rank) {
  // Page-round so every rank's memory starts and ends on a page.
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  bytes_ = (bytes_ + page - 1) / page * page;
  // The label shows in /proc/<pid>/maps ("/memfd:epcomm-...") for diagnosis only.
  const std::string label = g.shm_prefix.substr(1) + "-" + std::to_string(g.next_resource_id++) + "-" +
                            std::to_string(g.local_rank);

  // Create and reserve. posix_fallocate makes a shortage of memory a clear error
  // now instead of a SIGBUS on first touch later.
  int fd = memfd_create(label.c_str(), MFD_CLOEXEC);
  int error = fd < 0 ? errno : 0;
  if (fd >= 0) {
    error = ftruncate(fd, static_cast<off_t>(bytes_)) == 0 ? 0 : errno;
    if (error == 0) error = posix_fallocate(fd, 0, static_cast<off_t>(bytes_));
    if (error == 0) {
      void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p == MAP_FAILED) error = errno;
      else bases_[g.local_rank] = static_cast<std::byte*>(p);
    }
  }
  const auto close_mine = [&] {
    if (fd >= 0) close(fd);
    fd = -1;
  };
#ifdef EPCOMM_FAULT_INJECTION
  // EPCOMM_FAULT_SETUP_STALL_S: hold the memory here, unshown, for the fault tests.
  if (const double stall = env::fault_setup_stall_s(); stall > 0) {
    std::this_thread::sleep_for(std::chrono::duration<double>(stall));
  }
#endif

  // Agree on success and publish where the memory is, before anyone opens a
  // peer's, so a failure on one rank fails the whole node at once.
  const Published mine{error == 0 ? 1 : 0, static_cast<int32_t>(getpid()), fd};
  std::vector<Published> all(g.ranks_per_node);
  // A node peer that died on the way fails the wait at once, naming it.
  NodePeerWatch watch(g);
  const std::string step = std::string("while this node reserved shared memory for ") + purpose;
  const auto wait_for_peers = [&](MPI_Request& req) {
    try {
      return wait_within(req, g.timeout_s, [&] { watch.check([&] { return step; }); });
    } catch (const Error&) {
      g.setup_left_messages = true;  // the collective stays pending on node_comm
      close_mine();
      unmap_all();
      throw;
    }
  };
  MPI_Request req;
  EPCOMM_MPI(MPI_Iallgather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, g.node_comm, &req));
  if (!wait_for_peers(req)) {
    g.setup_left_messages = true;  // the gather stays pending on node_comm
    close_mine();
    unmap_all();
    EPCOMM_FAIL(kTimeout, "timed out after " << g.timeout_s << " s in phase 'setup' reserving shared memory for "
                                             << purpose << ": a rank of this node stopped");
  }
  std::string failed;
  for (int peer = 0; peer < g.ranks_per_node; ++peer) {
    if (!all[peer].ok) failed += (failed.empty() ? "" : ", ") + std::to_string(g.global_rank(g.node, peer));
  }
  if (!failed.empty()) {
    close_mine();
    unmap_all();
    if (error == 0) EPCOMM_FAIL(kSystem, "ranks " << failed << " of this node could not reserve their shared memory for "
                                                  << purpose << " (see their errors)");
    EPCOMM_FAIL(kSystem, "cannot reserve " << bytes_ << " bytes of shared memory for " << purpose << ": "
                                           << std::strerror(error)
                                           << " (lower max_tokens_per_rank or max_recv_rows, or raise the memory limit)");
  }

  // Map every peer's memory through its descriptor. Nothing has a name: the memory
  // lives exactly as long as a descriptor or a mapping of it, so a rank killed at
  // any point leaves nothing behind.
  try {
    for (int peer = 0; peer < g.ranks_per_node; ++peer) {
      if (peer == g.local_rank) continue;
      const std::string path = "/proc/" + std::to_string(all[peer].pid) + "/fd/" + std::to_string(all[peer].fd);
      const int pfd = open(path.c_str(), O_RDWR | O_CLOEXEC);
      EPCOMM_REQUIRE(pfd >= 0, kSystem,
                     "cannot open rank " << g.global_rank(g.node, peer) << "'s shared memory for " << purpose << " ("
                                         << path << "): " << std::strerror(errno)
                                         << " (node peers must run as one user and see each other's processes)");
      try {
        bases_[peer] = map_memory(pfd, bytes_, "rank " + std::to_string(g.global_rank(g.node, peer)) + "'s shared memory");
      } catch (const Error&) {
        close(pfd);
        throw;
      }
      close(pfd);
    }
  } catch (const Error&) {
    // The peers still wait for this rank below: they time out, naming the step.
    close_mine();
    unmap_all();
    throw;
  }
  // Every peer holds a mapping once this completes; until then this rank's
  // descriptor must stay open for them to find it.
  EPCOMM_MPI(MPI_Ibarrier(g.node_comm, &req));
  const bool all_mapped = wait_for_peers(req);
  close_mine();
  if (!all_mapped) {
    g.setup_left_messages = true;
    unmap_all();
    EPCOMM_FAIL(kTimeout, "timed out after " << g.timeout_s << " s in phase 'setup' mapping node peers' shared "
                                             << "memory for " << purpose << ": a rank of this node stopped");
  }
  EPCOMM_LOG(kDebug, "shared memory for " << purpose << ": " << bytes_ << " bytes per rank, " << g.ranks_per_node
                                          << " ranks");
}

NodeShm::~NodeShm() { unmap_all(); }

void NodeShm::unmap_all() {
  for (std::byte*& b : bases_) {
    if (b) munmap(b, bytes_);
    b = nullptr;
  }
}

}  // namespace epcomm::detail
