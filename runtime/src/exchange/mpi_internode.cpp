#include "exchange/mpi_internode.hpp"

#include "exchange/engine.hpp"
#include "util/check.hpp"

namespace epcomm::detail {
namespace {
int tag_phase(RailBuffer buffer) { return buffer == RailBuffer::kDispatch ? kTagDispatch : kTagCombine; }
}  // namespace

std::unique_ptr<Transfers> MpiInterNode::new_transfers() { return std::make_unique<PeerRequests>(); }

void MpiInterNode::send(Transfers& set, RailBuffer buffer, int slot, int node, std::size_t offset, std::size_t,
                        std::size_t bytes, uint64_t seq) {
  Engine& e = engine_;
  std::byte* base = e.slots[slot].send_buffer(buffer).data();
  const int peer = e.group.global_rank(node, e.group.local_rank);
  MPI_Request r;
  EPCOMM_MPI(MPI_Isend(base + offset, static_cast<int>(bytes), MPI_BYTE, peer, e.mpi_tag(seq, tag_phase(buffer)),
                       e.comm, &r));
  static_cast<PeerRequests&>(set).add(r, peer, PeerRequests::Kind::kSend);
}

void MpiInterNode::receive(Transfers& set, RailBuffer buffer, int slot, int node, std::size_t offset,
                           std::size_t bytes, uint64_t seq) {
  Engine& e = engine_;
  std::byte* base = e.slots[slot].recv_buffer(buffer).data();
  const int peer = e.group.global_rank(node, e.group.local_rank);
  MPI_Request r;
  EPCOMM_MPI(MPI_Irecv(base + offset, static_cast<int>(bytes), MPI_BYTE, peer, e.mpi_tag(seq, tag_phase(buffer)),
                       e.comm, &r));
  static_cast<PeerRequests&>(set).add(r, peer, PeerRequests::Kind::kRecv);
}

}  // namespace epcomm::detail
