// One combine along a dispatch's route: expert outputs staged in shared memory,
// node pre-reduction by the forwarder, one partial per (token, node) back over the
// network, and the source's sum in node order.
#pragma once

#include "exchange/dispatch_op.hpp"

namespace epcomm::detail {

class CombineOp : public Op {
 public:
  CombineOp(Engine& engine, uint64_t seq, std::shared_ptr<DispatchOp> route, const void* expert_out,
            void* out);
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
  State state_ = State::kPartials;
  SlotBuffers& buf_;
  std::unique_ptr<Transfers> recvs_, sends_;
  // Per destination node: its block of encoded partials in combine_send, and
  // whether it was sent (a one-sided transport waits for the receiver's "ready").
  std::vector<std::size_t> send_at_, send_bytes_;
  std::vector<char> send_posted_;
  int sends_left_ = 0;
};

}  // namespace epcomm::detail
