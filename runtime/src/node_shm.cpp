// SPDX-License-Identifier: MIT
#include "node_shm.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "util/check.hpp"
#include "util/log.hpp"
#include "util/roll_call.hpp"

namespace epcomm::detail {
namespace {

std::string segment_name(const GroupState& g, uint64_t id, int local_rank) {
  return g.shm_prefix + "-" + std::to_string(id) + "-" + std::to_string(local_rank);
}

std::byte* map_segment(int fd, std::size_t bytes, const std::string& name) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    EPCOMM_FAIL(kSystem, "mmap of shared segment " << name << " (" << bytes
                                                     << " bytes) failed: " << std::strerror(errno));
  }
  return static_cast<std::byte*>(p);
}

}  // namespace

NodeShm::NodeShm(GroupState& g, std::size_t bytes_per_rank, const char* purpose)
    : bases_(g.ranks_per_node, nullptr), bytes_(bytes_per_rank), local_rank_(g.local_rank) {
  // Page-round so every rank's segment starts and ends on a page.
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  bytes_ = (bytes_ + page - 1) / page * page;
  const uint64_t id = g.next_resource_id++;
  const std::string my_name = segment_name(g, id, g.local_rank);

  // Create and reserve my segment. posix_fallocate makes a full /dev/shm a clear
  // error now instead of a SIGBUS on first touch later.
  int fd = shm_open(my_name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  int create_errno = fd < 0 ? errno : 0;
  int reserve_rc = 0;
  if (fd >= 0) {
    reserve_rc = ftruncate(fd, static_cast<off_t>(bytes_)) == 0 ? 0 : errno;
    if (reserve_rc == 0) reserve_rc = posix_fallocate(fd, 0, static_cast<off_t>(bytes_));
    if (reserve_rc == 0) bases_[g.local_rank] = map_segment(fd, bytes_, my_name);
    close(fd);
  }
  // Agree on success before anyone opens a peer's name, so a failure on one rank
  // fails the whole node instead of leaving the others waiting.
  int ok = (fd >= 0 && reserve_rc == 0) ? 1 : 0, all_ok = 0;
  MPI_Request req;
  EPCOMM_MPI(MPI_Iallreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, g.node_comm, &req));
  if (!wait_within(req, g.timeout_s)) {
    g.setup_left_messages = true;  // the reduction stays pending on node_comm
    if (fd >= 0) shm_unlink(my_name.c_str());
    if (bases_[g.local_rank]) munmap(bases_[g.local_rank], bytes_);
    EPCOMM_FAIL(kTimeout, "timed out after " << g.timeout_s << " s in phase 'setup' reserving shared memory for "
                                             << purpose << ": a rank of this node stopped");
  }
  if (!all_ok) {
    if (fd >= 0) shm_unlink(my_name.c_str());
    if (bases_[g.local_rank]) munmap(bases_[g.local_rank], bytes_);
    if (ok) EPCOMM_FAIL(kSystem, "a peer on this node could not create its shared segment for " << purpose);
    struct statvfs vfs {};
    unsigned long long free_bytes = statvfs("/dev/shm", &vfs) == 0
                                        ? static_cast<unsigned long long>(vfs.f_bavail) * vfs.f_frsize
                                        : 0ull;
    EPCOMM_FAIL(kSystem, "cannot create shared segment " << my_name << " of " << bytes_
                                                          << " bytes for " << purpose << ": "
                                                          << std::strerror(fd < 0 ? create_errno : reserve_rc)
                                                          << " (/dev/shm has " << free_bytes
                                                          << " bytes free; lower max_tokens_per_rank or max_recv_rows)");
  }

  // From here on, a failure (a peer killed, an open that fails) unlinks every name
  // of the node: a dead peer cannot unlink its own, and the survivors' mappings
  // keep the memory for as long as they need it.
  auto unlink_all = [&] {
    for (int peer = 0; peer < g.ranks_per_node; ++peer) shm_unlink(segment_name(g, id, peer).c_str());
  };
  try {
    for (int peer = 0; peer < g.ranks_per_node; ++peer) {
      if (peer == g.local_rank) continue;
      const std::string name = segment_name(g, id, peer);
      int pfd = shm_open(name.c_str(), O_RDWR, 0600);
      EPCOMM_REQUIRE(pfd >= 0, kSystem, "cannot open peer segment " << name << ": " << std::strerror(errno));
      bases_[peer] = map_segment(pfd, bytes_, name);
      close(pfd);
    }
  } catch (const Error&) {
    unlink_all();
    unmap_all();
    throw;
  }
  EPCOMM_MPI(MPI_Ibarrier(g.node_comm, &req));
  const bool all_mapped = wait_within(req, g.timeout_s);
  unlink_all();
  if (!all_mapped) {
    g.setup_left_messages = true;
    unmap_all();
    EPCOMM_FAIL(kTimeout, "timed out after " << g.timeout_s << " s in phase 'setup' mapping node peers' shared "
                                             << "memory for " << purpose << ": a rank of this node stopped");
  }
  EPCOMM_LOG(kDebug, "shared segment for " << purpose << ": " << bytes_ << " bytes per rank, "
                                            << g.ranks_per_node << " ranks");
}

NodeShm::~NodeShm() { unmap_all(); }

void NodeShm::unmap_all() {
  for (std::byte*& b : bases_) {
    if (b) munmap(b, bytes_);
    b = nullptr;
  }
}

}  // namespace epcomm::detail
