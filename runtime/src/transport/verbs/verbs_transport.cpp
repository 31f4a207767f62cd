// SPDX-License-Identifier: MIT
#include "transport/verbs/verbs_transport.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <sstream>
#include <thread>

#include "util/agree.hpp"
#include "util/check.hpp"
#include "util/log.hpp"

namespace epcomm::detail {
namespace {

// Work-request ids carry the peer and the queue side: error completions report
// little else that is valid (no opcode), and both are needed to name the failure.
uint64_t wr_id_of(int peer, bool receive) { return (static_cast<uint64_t>(peer) << 1) | (receive ? 1 : 0); }
int peer_of(uint64_t wr_id) { return static_cast<int>(wr_id >> 1); }
bool is_receive(uint64_t wr_id) { return (wr_id & 1) != 0; }

// What a failed status most likely means here, so the message says what to check.
const char* likely_cause(ibv_wc_status status, bool receive) {
  switch (status) {
    case IBV_WC_RETRY_EXC_ERR:
      return "the peer stopped acknowledging: its process, port or queue pair is gone or in error";
    case IBV_WC_REM_ACCESS_ERR:
      return "the peer refused the remote key or address range (not its registered region)";
    case IBV_WC_RNR_RETRY_EXC_ERR:
      return "the peer had no receive entry for seconds: it stopped polling, or its queue pair is in error";
    case IBV_WC_WR_FLUSH_ERR:
      return receive ? "this rank's queue pair to the peer went into error (an earlier failure on it, or the peer's)"
                     : "this rank's queue pair to the peer went into error after an earlier failure";
    case IBV_WC_LOC_PROT_ERR:
      return "the local range is not inside a registered region";
    default:
      return "see the provider's documentation for the vendor error";
  }
}

}  // namespace

VerbsTransport::VerbsTransport(MPI_Comm comm, Options options) : comm_(comm), options_(options) {
  EPCOMM_MPI(MPI_Comm_rank(comm, &rank_));
  EPCOMM_MPI(MPI_Comm_size(comm, &size_));
  EPCOMM_REQUIRE(options.peer_labels.empty() || static_cast<int>(options.peer_labels.size()) == size_,
                 kInvalidArgument,
                 "verbs transport: " << options.peer_labels.size() << " peer labels for " << size_ << " ranks");
  EPCOMM_REQUIRE(options.send_depth > 0 && options.recv_depth > 0, kInvalidArgument,
                 "verbs transport: send_depth " << options.send_depth << " and recv_depth " << options.recv_depth
                                                << " must be positive");
  ibv_device_attr attr{};
  EPCOMM_REQUIRE(ibv_query_device(device_.context(), &attr) == 0, kSystem,
                 "ibv_query_device on " << device_.name() << " failed: " << std::strerror(errno));
  // One completion queue for every queue pair, both directions: a single poll sees
  // everything, and it can never overflow since it holds every entry that can be
  // outstanding at once.
  const int64_t cqe = static_cast<int64_t>(std::max(size_ - 1, 1)) * (options.send_depth + options.recv_depth);
  EPCOMM_REQUIRE(cqe <= attr.max_cqe, kUnsupported,
                 "verbs transport: " << size_ - 1 << " peers x (" << options.send_depth << " + " << options.recv_depth
                                     << ") queue entries need a completion queue of " << cqe << " but " << device_.name()
                                     << " allows " << attr.max_cqe);
  cq_ = ibv_create_cq(device_.context(), static_cast<int>(cqe), nullptr, nullptr, 0);
  EPCOMM_REQUIRE(cq_ != nullptr, kSystem,
                 "ibv_create_cq of " << cqe << " entries on " << device_.name() << " failed: " << std::strerror(errno));
  // Queue pairs now, not at connect(): a rank that cannot make them fails before
  // any collective, where its peers can still learn it (see Exchange's transport
  // choice) instead of waiting for it inside one.
  peers_.resize(size_);
  try {
    for (int p = 0; p < size_; ++p) {
      if (p != rank_) {
        peers_[p].qp = std::make_unique<RcQueuePair>(device_, cq_, options_.send_depth, options_.recv_depth, label(p));
      }
    }
  } catch (...) {
    peers_.clear();
    ibv_destroy_cq(cq_);
    throw;
  }
}

VerbsTransport::~VerbsTransport() {
  // Queue pairs before the completion queue they post to, regions before the
  // protection domain (the device member, destroyed last).
  peers_.clear();
  regions_.clear();
  if (cq_) ibv_destroy_cq(cq_);
}

int VerbsTransport::register_region(void* addr, std::size_t length, MemorySpace space) {
  EPCOMM_REQUIRE(!connected_, kInvalidArgument,
                 "verbs transport: register_region after connect(); peers learn regions only at connect");
  regions_.emplace_back(device_.pd(), addr, length, space);
  return static_cast<int>(regions_.size()) - 1;
}

void VerbsTransport::connect(double timeout_s) {
  EPCOMM_REQUIRE(!connected_, kInvalidArgument, "verbs transport: connect() called twice");
  EPCOMM_REQUIRE(!regions_.empty(), kInvalidArgument, "verbs transport: connect() with no registered region");
  std::vector<QpEndpoint> mine(size_), theirs(size_);
  for (int p = 0; p < size_; ++p) {
    if (p != rank_) mine[p] = peers_[p].qp->endpoint();
  }
  EPCOMM_MPI(MPI_Alltoall(mine.data(), sizeof(QpEndpoint), MPI_BYTE, theirs.data(), sizeof(QpEndpoint), MPI_BYTE,
                          comm_));

  // Region tables: every rank's (addr, length, rkey) list, gathered everywhere.
  std::vector<RemoteRegion> table;
  for (const Region& r : regions_)
    table.push_back(RemoteRegion{reinterpret_cast<uint64_t>(r.addr()), r.length(), r.rkey()});
  const int my_bytes = static_cast<int>(table.size() * sizeof(RemoteRegion));
  std::vector<int> bytes(size_), displs(size_);
  EPCOMM_MPI(MPI_Allgather(&my_bytes, 1, MPI_INT, bytes.data(), 1, MPI_INT, comm_));
  int total = 0;
  for (int p = 0; p < size_; ++p) {
    displs[p] = total;
    total += bytes[p];
  }
  std::vector<RemoteRegion> all(total / sizeof(RemoteRegion));
  EPCOMM_MPI(MPI_Allgatherv(table.data(), my_bytes, MPI_BYTE, all.data(), bytes.data(), displs.data(), MPI_BYTE,
                            comm_));

  std::string failure;
  try {
    for (int p = 0; p < size_; ++p) {
      if (p == rank_) continue;
      const RemoteRegion* first = all.data() + displs[p] / sizeof(RemoteRegion);
      peers_[p].regions.assign(first, first + bytes[p] / sizeof(RemoteRegion));
      peers_[p].qp->connect(theirs[p]);
      for (uint32_t i = 0; i < options_.recv_depth; ++i) post_receive(p);
    }
  } catch (const Error& e) {
    failure = e.what();
  }
  // Nobody writes before every peer has its receives posted; a rank that failed
  // fails everyone together rather than leaving them to wait for its writes.
  agree_or_throw(failure, "bring-up of its queue pairs");
  connected_ = true;
  failure.clear();
  try {
    probe_peers(timeout_s);
  } catch (const Error& e) {
    failure = e.what();
  }
  agree_or_throw(failure, "reaching its peers");
  EPCOMM_LOG(kInfo, "verbs: connected to " << size_ - 1 << " peers over " << device_.name() << ", "
                                           << regions_.size() << " local regions");
}

void VerbsTransport::agree_or_throw(const std::string& failure, const char* step) {
  const std::string failed = ranks_that_failed(comm_, failure.empty(), [this](int p) { return label(p); });
  if (failed.empty()) return;
  connected_ = false;
  if (!failure.empty()) throw Error(ErrorCode::kSystem, failure);
  EPCOMM_FAIL(kSystem, "verbs transport: ranks " << failed << " failed " << step << " (see their errors)");
}

// A zero-byte write with immediate to every peer, and one from every peer: a port
// that is up but cannot reach its peers (wrong subnet, no route, a stray soft-RoCE
// device) shows here, within timeout_s, rather than in the first exchange.
void VerbsTransport::probe_peers(double timeout_s) {
  constexpr uint64_t kProbeId = ~uint64_t{0};
  std::vector<int> acked(size_, 0), heard(size_, 0);
  for (int p = 0; p < size_; ++p) {
    if (p != rank_) write(p, 0, 0, 0, 0, 0, kProbeImmediate, kProbeId);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  std::vector<Completion> got;
  auto missing = [&] {
    std::string out;
    for (int p = 0; p < size_; ++p) {
      if (p == rank_ || (acked[p] && heard[p])) continue;
      out += (out.empty() ? "" : ", ") + std::to_string(label(p)) + (acked[p] ? " (no write from it)" : " (no acknowledgement)");
    }
    return out;
  };
  for (std::string left = missing(); !left.empty(); left = missing()) {
    EPCOMM_REQUIRE(std::chrono::steady_clock::now() < deadline, kSystem,
                   "verbs transport over " << device_.name() << ": ranks " << left << " not reached within "
                                           << timeout_s << " s (is the port on their network?)");
    got.clear();
    poll(got);
    for (const Completion& c : got) {
      if (c.kind == Completion::Kind::kWrite && c.wr_id == kProbeId) acked[c.peer] = 1;
      if (c.kind == Completion::Kind::kReceive && c.imm == kProbeImmediate) heard[c.peer] = 1;
    }
    if (got.empty()) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  // receives_completed() counts the caller's traffic only.
  for (Peer& p : peers_) p.receives = 0;
}

VerbsTransport::Peer& VerbsTransport::checked_peer(int peer, const char* what) {
  EPCOMM_REQUIRE(connected_, kInvalidArgument, "verbs transport: " << what << " before connect()");
  EPCOMM_REQUIRE(peer >= 0 && peer < size_ && peer != rank_, kInvalidArgument,
                 "verbs transport: " << what << " names rank " << peer << ", not a peer (" << size_
                                     << " ranks, this is " << rank_ << ")");
  return peers_[peer];
}

const RemoteRegion& VerbsTransport::remote_region(int peer, int index) const {
  EPCOMM_REQUIRE(peer >= 0 && peer < size_ && peer != rank_ && index >= 0 &&
                     index < static_cast<int>(peers_[peer].regions.size()),
                 kInvalidArgument,
                 "verbs transport: rank " << label(peer) << " has no region " << index);
  return peers_[peer].regions[index];
}

void VerbsTransport::write(int peer, int local_region, uint64_t local_offset, int remote_region,
                           uint64_t remote_offset, uint64_t length, uint32_t imm, uint64_t wr_id) {
  write(peer, local_region, local_offset, this->remote_region(peer, remote_region), remote_offset, length, imm,
        wr_id);
}

void VerbsTransport::write(int peer, int local_region, uint64_t local_offset, const RemoteRegion& remote,
                           uint64_t remote_offset, uint64_t length, uint32_t imm, uint64_t wr_id) {
  enqueue(peer, local_region, local_offset, remote, remote_offset, length, imm, wr_id);
}

void VerbsTransport::write_without_immediate(int peer, int local_region, uint64_t local_offset, int remote_region,
                                             uint64_t remote_offset, uint64_t length, uint64_t wr_id) {
  enqueue(peer, local_region, local_offset, this->remote_region(peer, remote_region), remote_offset, length,
          std::nullopt, wr_id);
}

void VerbsTransport::enqueue(int peer, int local_region, uint64_t local_offset, const RemoteRegion& remote,
                             uint64_t remote_offset, uint64_t length, std::optional<uint32_t> imm, uint64_t wr_id) {
  Peer& p = checked_peer(peer, "write");
  EPCOMM_REQUIRE(local_region >= 0 && local_region < static_cast<int>(regions_.size()), kInvalidArgument,
                 "verbs transport: write to rank " << label(peer) << " from local region " << local_region << " of "
                                                   << regions_.size());
  const Region& local = regions_[local_region];
  plan_scratch_.clear();
  plan_write(local.length(), local_offset, remote, remote_offset, length, max_message_size(), plan_scratch_);
  for (const WriteChunk& c : plan_scratch_)
    p.backlog.push_back(PendingChunk{c, static_cast<const std::byte*>(local.addr()), local.lkey(), remote.rkey,
                                     imm.value_or(0), wr_id, imm.has_value()});
  ++p.writes_in_flight;
  post_backlog(peer);
}

// Posts waiting chunks while the send queue has room. Every entry is signaled so
// each completion frees exactly one queue entry, whatever the chunking.
void VerbsTransport::post_backlog(int peer) {
  Peer& p = peers_[peer];
  while (!p.backlog.empty() && p.posted.size() < options_.send_depth) {
    const PendingChunk& c = p.backlog.front();
    ibv_sge sge{};
    sge.addr = reinterpret_cast<uint64_t>(c.local_base + c.chunk.local_offset);
    sge.length = c.chunk.length;
    sge.lkey = c.lkey;
    ibv_send_wr wr{};
    wr.wr_id = wr_id_of(peer, false);
    wr.sg_list = &sge;
    wr.num_sge = c.chunk.length > 0 ? 1 : 0;
    wr.opcode = c.chunk.last && c.with_imm ? IBV_WR_RDMA_WRITE_WITH_IMM : IBV_WR_RDMA_WRITE;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.imm_data = htonl(c.imm);
    wr.wr.rdma.remote_addr = c.chunk.remote_addr;
    wr.wr.rdma.rkey = c.rkey;
    ibv_send_wr* bad = nullptr;
    const int rc = ibv_post_send(p.qp->get(), &wr, &bad);
    EPCOMM_REQUIRE(rc == 0, kSystem,
                   "ibv_post_send (RDMA write of " << c.chunk.length << " bytes) to rank " << label(peer)
                                                   << " failed: " << std::strerror(rc));
    p.posted.push_back(PostedChunk{c.wr_id, c.chunk.last});
    p.backlog.pop_front();
  }
}

void VerbsTransport::post_receive(int peer) {
  // Zero-length: a write with immediate consumes a receive entry but places its
  // bytes by remote address, never into a receive buffer.
  ibv_recv_wr wr{};
  wr.wr_id = wr_id_of(peer, true);
  ibv_recv_wr* bad = nullptr;
  const int rc = ibv_post_recv(peers_[peer].qp->get(), &wr, &bad);
  EPCOMM_REQUIRE(rc == 0, kSystem, "ibv_post_recv on the queue pair to rank " << label(peer) << " failed: " << std::strerror(rc));
}

int VerbsTransport::poll(std::vector<Completion>& out) {
  EPCOMM_REQUIRE(connected_, kInvalidArgument, "verbs transport: poll before connect()");
  const std::size_t before = out.size();
  ibv_wc wcs[32];
  int n;
  while ((n = ibv_poll_cq(cq_, 32, wcs)) > 0) {
    for (int i = 0; i < n; ++i) {
      const ibv_wc& wc = wcs[i];
      const int peer = peer_of(wc.wr_id);
      const bool receive = is_receive(wc.wr_id);
      Peer& p = peers_[peer];
      if (wc.status != IBV_WC_SUCCESS) {
        if (p.failed_here && wc.status == IBV_WC_WR_FLUSH_ERR) continue;
        fail_completion(wc, peer, receive);
      }
      if (receive) {
        ++p.receives;
        out.push_back(Completion{Completion::Kind::kReceive, peer, 0, ntohl(wc.imm_data), wc.byte_len});
        post_receive(peer);
        continue;
      }
      const PostedChunk done = p.posted.front();
      p.posted.pop_front();
      if (done.last) {
        --p.writes_in_flight;
        out.push_back(Completion{Completion::Kind::kWrite, peer, done.wr_id, 0, 0});
      }
    }
  }
  EPCOMM_REQUIRE(n == 0, kSystem, "ibv_poll_cq on " << device_.name() << " failed (" << n << ")");
  for (int peer = 0; peer < size_; ++peer)
    if (!peers_[peer].backlog.empty()) post_backlog(peer);
  return static_cast<int>(out.size() - before);
}

void VerbsTransport::fail_completion(const ibv_wc& wc, int peer, bool receive) const {
  const auto status = static_cast<ibv_wc_status>(wc.status);
  std::ostringstream os;
  if (receive) {
    os << "RDMA receive from rank " << label(peer);
  } else {
    os << "RDMA write to rank " << label(peer);
  }
  os << " over " << device_.name() << " failed: " << ibv_wc_status_str(status) << " (status " << wc.status
     << ", vendor error 0x" << std::hex << wc.vendor_err << std::dec << "): " << likely_cause(status, receive);
  fail(ErrorCode::kSystem, os.str());
}

void VerbsTransport::fail_peer(int peer) {
  Peer& p = checked_peer(peer, "fail_peer");
  p.failed_here = true;
  p.qp->to_error();
}

std::string VerbsTransport::outstanding(std::span<const int64_t> expected_receives) const {
  std::ostringstream os;
  const char* sep = "ranks ";
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    const Peer& p = peers_[peer];
    const int64_t expected = peer < static_cast<int>(expected_receives.size()) ? expected_receives[peer] : 0;
    const bool short_receives = p.receives < expected;
    if (p.writes_in_flight == 0 && !short_receives) continue;
    os << sep << label(peer) << " (";
    sep = ", ";
    if (p.writes_in_flight > 0) os << p.writes_in_flight << " writes unacknowledged";
    if (p.writes_in_flight > 0 && short_receives) os << "; ";
    if (short_receives) os << p.receives << " of " << expected << " receives";
    os << ")";
  }
  return os.str();
}

}  // namespace epcomm::detail
