// SPDX-License-Identifier: MIT
#include "exchange/verbs_internode.hpp"

#include "transport/verbs/immediate.hpp"
#include "util/check.hpp"
#include "util/env.hpp"
#include "util/log.hpp"

namespace epcomm::detail {
namespace {

// Immediate kinds of the exchange protocol.
enum : uint32_t { kImmDispatchRows = 1, kImmCombinePartials = 2, kImmCombineReady = 3 };

uint32_t data_kind(BlockKind k) { return k == BlockKind::kDispatch ? kImmDispatchRows : kImmCombinePartials; }

// The transfers of one phase: writes waiting for their acknowledgement, receives
// waiting for the immediate that says their block is complete.
class VerbsTransfers final : public Transfers {
 public:
  explicit VerbsTransfers(VerbsInterNode& net) : net_(net) {}

  struct Entry {
    int rank;      // epcomm rank of the peer, for messages
    int node;
    bool receive;  // else a write of ours
    uint64_t key;  // receive: immediate; write: write id
    // Receive with checksums: where the sender's checksum of the block goes, and
    // the inbox entry it arrives in.
    BlockChecksum* sum = nullptr;
    RegionId into = -1;
    bool done = false;
  };
  void add(Entry e) {
    entries_.push_back(e);
    ++pending_;
  }

  const std::vector<int>& test_some() override {
    newly_done_.clear();
    for (std::size_t i = 0; i < entries_.size() && pending_ > 0; ++i) {
      Entry& e = entries_[i];
      if (e.done) continue;
      e.done = e.receive ? net_.take_arrival(e.node, static_cast<uint32_t>(e.key)) : net_.take_ack(e.key);
      if (!e.done) continue;
      if (e.sum != nullptr) *e.sum = net_.inbox(e.into, e.node);
      --pending_;
      newly_done_.push_back(static_cast<int>(i));
    }
    return newly_done_;
  }
  bool all_done() const override { return pending_ == 0; }
  int peer(int index) const override { return entries_[index].rank; }
  std::string pending_peers() const override {
    std::string out;
    for (const Entry& e : entries_) {
      if (e.done) continue;
      out += (out.empty() ? "" : ", ") + std::to_string(e.rank) +
             (e.receive ? " (RDMA write into this rank)" : " (RDMA write acknowledgement)");
    }
    return out;
  }
  // Nothing to withdraw: a late write from a peer lands in memory that stays
  // registered (or, once the transport is gone, is refused by the adapter).
  bool abandon() override {
    entries_.clear();
    pending_ = 0;
    return true;
  }

 private:
  VerbsInterNode& net_;
  std::vector<Entry> entries_;
  std::vector<int> newly_done_;
  int pending_ = 0;
};

VerbsTransport::Options transport_options(const InterNodeSetup& setup) {
  const GroupState& g = setup.group;
  VerbsTransport::Options o;
  for (int n = 0; n < g.num_nodes; ++n) o.peer_labels.push_back(g.global_rank(n, g.local_rank));
  // Per peer and direction, live writes are bounded by the operations in flight:
  // one data block per dispatch (and a ready signal when it reuses a layout), one
  // data block and one ready signal per combine, max_inflight dispatches each with
  // at most one combine, plus slack for a peer that is a few operations ahead.
  o.recv_depth = o.send_depth = static_cast<uint32_t>(8 * setup.max_inflight + 16);
  return o;
}

}  // namespace

VerbsInterNode::VerbsInterNode(const InterNodeSetup& setup, MPI_Comm rail_comm)
    : group_(setup.group),
      gpu_direct_(setup.gpu_direct),
      rail_comm_(rail_comm),
      transport_(std::make_unique<VerbsTransport>(rail_comm, transport_options(setup))),
      checksum_(setup.checksum) {
#ifdef EPCOMM_FAULT_INJECTION
  flip_at_ = env::fault_flip_bit();
#endif
}

VerbsInterNode::~VerbsInterNode() {
  transport_.reset();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Comm_free(&rail_comm_);
}

std::string VerbsInterNode::device_memory_unsupported() const {
  if (gpu_direct_ == nullptr) return "GPUDirect RDMA was not looked for (an exchange on host memory)";
  return gpu_direct_->dmabuf_unsupported;
}

RegionId VerbsInterNode::register_region(void* ptr, std::size_t bytes, MemorySpace space) {
  // The checksum is taken and checked by the CPU.
  EPCOMM_REQUIRE(!checksum_ || space == MemorySpace::kHost, kUnsupported,
                 "ExchangeConfig::checksum (EPCOMM_CHECKSUM) over the verbs transport needs host memory, but rank "
                     << group_.rank << " registered " << bytes << " bytes of " << to_string(space) << " memory");
  EPCOMM_REQUIRE(space == MemorySpace::kHost || device_memory_unsupported().empty(), kUnsupported,
                 "the verbs transport cannot register " << bytes << " bytes of " << to_string(space)
                                                        << " memory: " << device_memory_unsupported());
  // The adapter may still refuse: nothing is recorded before it took the region.
  const RegionId id = transport_->register_region(ptr, bytes, space);
  region_base_.push_back(static_cast<std::byte*>(ptr));
  return id;
}

void VerbsInterNode::connect() {
  if (checksum_) {
    const std::size_t entries = region_base_.size() * static_cast<std::size_t>(group_.num_nodes);
    inbox_.assign(entries, BlockChecksum{});
    outbox_.assign(entries, BlockChecksum{});
    inbox_region_ = transport_->register_region(inbox_.data(), entries * sizeof(BlockChecksum));
    outbox_region_ = transport_->register_region(outbox_.data(), entries * sizeof(BlockChecksum));
  }
  transport_->connect(group_.timeout_s);
  EPCOMM_LOG(kInfo, "exchange: inter-node transport verbs over " << transport_->device().name() << ", "
                                                                  << transport_->size() - 1 << " rail peers");
}

std::unique_ptr<Transfers> VerbsInterNode::new_transfers() { return std::make_unique<VerbsTransfers>(*this); }

void VerbsInterNode::send(Transfers& set, BlockKind kind, RegionId from, std::size_t offset, int node, RegionId to,
                          std::size_t remote_offset, std::size_t bytes, uint64_t seq, const BlockChecksum* sum) {
  if (checksum_ && sum != nullptr) {
    const std::size_t sent = sum_index(to, node), lands = sum_index(to, group_.node);
    outbox_[sent] = *sum;
    transport_->write_without_immediate(node, outbox_region_, sent * sizeof(BlockChecksum), inbox_region_,
                                        lands * sizeof(BlockChecksum), sizeof(BlockChecksum), 0);
    // Fault injection: a bit of the data flipped after its checksum was taken.
    std::byte* data = region_base_[from] + offset;
    if (++blocks_sent_ == flip_at_ && bytes > 0) data[bytes / 2] ^= std::byte{0x10};
  }
  const uint64_t id = next_write_id_++;
  transport_->write(node, from, offset, to, remote_offset, bytes, encode_immediate(seq, data_kind(kind), 0), id);
  static_cast<VerbsTransfers&>(set).add({rank_of(node), node, false, id});
}

// The data arrives by the peer's write; its immediate says the block is complete.
void VerbsInterNode::receive(Transfers& set, BlockKind kind, RegionId into, std::size_t, int node, std::size_t,
                             uint64_t seq, BlockChecksum* sum) {
  static_cast<VerbsTransfers&>(set).add(
      {rank_of(node), node, true, encode_immediate(seq, data_kind(kind), 0), checksum_ ? sum : nullptr, into});
}

// A write of zero bytes: only its immediate matters (region 0 exists on every rank
// and a zero-length range of it is always in bounds).
void VerbsInterNode::announce_ready(int node, uint64_t seq) {
  transport_->write(node, 0, 0, 0, 0, 0, encode_immediate(seq, kImmCombineReady, 0), 0);
}

bool VerbsInterNode::take_ready(int node, uint64_t seq) {
  return take_arrival(node, encode_immediate(seq, kImmCombineReady, 0));
}

bool VerbsInterNode::take_arrival(int node, uint32_t imm) {
  auto it = arrived_.find(arrival_key(node, imm));
  if (it == arrived_.end()) return false;
  if (--it->second == 0) arrived_.erase(it);
  return true;
}

bool VerbsInterNode::poll() {
  completions_.clear();
  if (transport_->poll(completions_) == 0) return false;
  for (const Completion& c : completions_) {
    if (c.kind == Completion::Kind::kReceive) {
      ++arrived_[arrival_key(c.peer, c.imm)];
    } else if (c.wr_id != 0) {
      acked_.insert(c.wr_id);
    }
  }
  return true;
}

}  // namespace epcomm::detail
