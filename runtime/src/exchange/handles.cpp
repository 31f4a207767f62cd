// SPDX-License-Identifier: MIT
// The public Exchange and handle classes: thin forwards to the engine and its ops.
#include <epcomm/exchange.hpp>

#include "exchange/combine_op.hpp"
#include "exchange/dispatch_op.hpp"
#include "exchange/engine.hpp"
#include "util/check.hpp"

namespace epcomm {
namespace {

const detail::DispatchOp& finished(const std::shared_ptr<detail::DispatchOp>& op) {
  EPCOMM_REQUIRE(op != nullptr, kInvalidArgument, "empty DispatchHandle");
  EPCOMM_REQUIRE(op->done(), kInvalidArgument,
                 "DispatchHandle of operation " << op->seq() << " read before wait() completed");
  return *op;
}

// For the buffers' addresses, fixed from dispatch_begin on: with device memory the
// caller's stream may read them before the host waits.
const detail::DispatchOp& started(const std::shared_ptr<detail::DispatchOp>& op) {
  EPCOMM_REQUIRE(op != nullptr, kInvalidArgument, "empty DispatchHandle");
  return *op;
}

}  // namespace

DispatchHandle::DispatchHandle() = default;
DispatchHandle::~DispatchHandle() = default;
DispatchHandle::DispatchHandle(DispatchHandle&&) noexcept = default;
DispatchHandle& DispatchHandle::operator=(DispatchHandle&&) noexcept = default;
DispatchHandle::DispatchHandle(std::shared_ptr<detail::DispatchOp> op) : op_(std::move(op)) {}

bool DispatchHandle::done() const { return op_ && op_->done(); }
void DispatchHandle::wait() {
  EPCOMM_REQUIRE(op_ != nullptr, kInvalidArgument, "wait() on an empty DispatchHandle");
  op_->engine().wait(*op_);
}
const void* DispatchHandle::rows() const { return started(op_).output().rows; }
Format DispatchHandle::row_format() const { return finished(op_).engine().config().dispatch_format; }
std::size_t DispatchHandle::row_bytes() const { return started(op_).output().row_bytes; }
int64_t DispatchHandle::num_rows() const { return finished(op_).output().layout.num_rows(); }
int DispatchHandle::num_local_experts() const { return finished(op_).output().layout.num_local_experts; }
int64_t DispatchHandle::expert_count(int j) const {
  const auto& layout = finished(op_).output().layout;
  EPCOMM_REQUIRE(j >= 0 && j < layout.num_local_experts, kInvalidArgument,
                 "local expert " << j << " outside [0, " << layout.num_local_experts << ")");
  return layout.expert_count[j];
}
int64_t DispatchHandle::expert_offset(int j) const {
  const auto& layout = finished(op_).output().layout;
  EPCOMM_REQUIRE(j >= 0 && j <= layout.num_local_experts, kInvalidArgument,
                 "local expert " << j << " outside [0, " << layout.num_local_experts << "]");
  return layout.expert_offset[j];
}
const float* DispatchHandle::row_weights() const { return started(op_).row_metadata().weight; }
const int32_t* DispatchHandle::row_src_rank() const { return started(op_).row_metadata().src_rank; }
const int32_t* DispatchHandle::row_src_token() const { return started(op_).row_metadata().src_token; }
void DispatchHandle::decode_rows(void* out, DType dtype) const { finished(op_).decode_rows(out, dtype); }
void* DispatchHandle::expert_out_buffer() const { return started(op_).output().expert_out; }
int DispatchHandle::num_tokens() const { return finished(op_).num_tokens(); }
ExchangeStats DispatchHandle::stats() const { return finished(op_).stats; }
DispatchLayout DispatchHandle::layout() const { return DispatchLayout(finished(op_).reusable_layout()); }

DispatchLayout::DispatchLayout() = default;
DispatchLayout::~DispatchLayout() = default;
DispatchLayout::DispatchLayout(const DispatchLayout&) = default;
DispatchLayout& DispatchLayout::operator=(const DispatchLayout&) = default;
DispatchLayout::DispatchLayout(std::shared_ptr<const detail::ReusableLayout> state) : state_(std::move(state)) {}

CombineHandle::CombineHandle() = default;
CombineHandle::~CombineHandle() = default;
CombineHandle::CombineHandle(CombineHandle&&) noexcept = default;
CombineHandle& CombineHandle::operator=(CombineHandle&&) noexcept = default;
CombineHandle::CombineHandle(std::shared_ptr<detail::CombineOp> op) : op_(std::move(op)) {}

bool CombineHandle::done() const { return op_ && op_->done(); }
void CombineHandle::wait() {
  EPCOMM_REQUIRE(op_ != nullptr, kInvalidArgument, "wait() on an empty CombineHandle");
  op_->engine().wait(*op_);
}
ExchangeStats CombineHandle::stats() const {
  EPCOMM_REQUIRE(op_ != nullptr && op_->done(), kInvalidArgument, "CombineHandle read before wait() completed");
  return op_->stats;
}

Exchange::Exchange(const Group& group, const ExchangeConfig& config)
    : engine_(std::make_shared<detail::Engine>(group.state(), config)) {
  engine_->start_background();
}

Exchange::~Exchange() { engine_->abandon_all(); }

const ExchangeConfig& Exchange::config() const { return engine_->config(); }

const char* Exchange::transport() const { return engine_->internode->name(); }

DispatchHandle Exchange::dispatch_begin(const DispatchInput& input) {
  DispatchHandle h(engine_->begin_dispatch(input));
  engine_->notify_progress_thread();
  return h;
}

DispatchHandle Exchange::dispatch(const DispatchInput& input) {
  DispatchHandle h = dispatch_begin(input);
  h.wait();
  return h;
}

DispatchHandle Exchange::dispatch_begin(const DispatchInput& input, const DispatchHandle& route) {
  EPCOMM_REQUIRE(route.op_ != nullptr, kInvalidArgument, "dispatch along an empty DispatchHandle");
  DispatchHandle h(engine_->begin_dispatch(input, route.op_.get()));
  engine_->notify_progress_thread();
  return h;
}

DispatchHandle Exchange::dispatch(const DispatchInput& input, const DispatchHandle& route) {
  DispatchHandle h = dispatch_begin(input, route);
  h.wait();
  return h;
}

DispatchHandle Exchange::dispatch_begin(const DispatchInput& input, const DispatchLayout& layout) {
  EPCOMM_REQUIRE(layout.valid(), kInvalidArgument, "dispatch on an empty DispatchLayout");
  DispatchHandle h(engine_->begin_dispatch(input, nullptr, layout.state_));
  engine_->notify_progress_thread();
  return h;
}

DispatchHandle Exchange::dispatch(const DispatchInput& input, const DispatchLayout& layout) {
  DispatchHandle h = dispatch_begin(input, layout);
  h.wait();
  return h;
}

CombineHandle Exchange::combine_begin(const DispatchHandle& route, const void* expert_out, int64_t expert_out_rows,
                                      void* out, int out_tokens, const CombineOptions& options) {
  CombineHandle h(engine_->begin_combine(route.op_, expert_out, expert_out_rows, out, out_tokens, options));
  engine_->notify_progress_thread();
  return h;
}

void Exchange::combine(const DispatchHandle& route, const void* expert_out, int64_t expert_out_rows, void* out,
                       int out_tokens, const CombineOptions& options) {
  combine_begin(route, expert_out, expert_out_rows, out, out_tokens, options).wait();
}

bool Exchange::progress() { return engine_->progress(); }

}  // namespace epcomm
