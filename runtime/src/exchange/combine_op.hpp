// One combine along a dispatch's route: expert outputs staged in shared memory,
// node pre-reduction by the forwarder, one partial per (token, node) back over the
// network, and the source's sum in node order.
#pragma once

#include "exchange/dispatch_op.hpp"
#include "exchange/outgoing_blocks.hpp"

namespace epcomm::detail {

class CombineOp : public Op {
 public:
  CombineOp(Engine& engine, uint64_t seq, std::shared_ptr<DispatchOp> route, const void* expert_out,
            void* out, const CombineOptions& options);
  ~CombineOp() override;

  bool advance() override;
  std::string phase() const override;
  std::string outstanding() const override;

 private:
  enum class State { kPartials, kReturn, kDone };

  void stage_expert_outputs();
  void reduce_node_partials();
  bool post_ready_sends();
  void sum_node_partials();

  std::shared_ptr<DispatchOp> route_;
  const void* expert_out_;
  void* out_;
  CombineOptions options_;
  State state_ = State::kPartials;
  SlotBuffers& buf_;
  std::unique_ptr<Transfers> recvs_, sends_;
  // Encoded partials per destination node in combine_send; a one-sided transport
  // sends each after its receiver's "ready".
  OutgoingBlocks partial_blocks_;
};

}  // namespace epcomm::detail
