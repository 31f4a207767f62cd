#include "exchange/combine_op.hpp"

#include <algorithm>
#include <cstring>

#include "util/check.hpp"

namespace epcomm::detail {

CombineOp::CombineOp(Engine& engine, uint64_t seq, std::shared_ptr<DispatchOp> route, const void* expert_out,
                     void* out, const CombineOptions& options)
    : Op(engine, seq, "combine"),
      route_(std::move(route)),
      expert_out_(expert_out),
      out_(out),
      options_(options),
      buf_(engine.slots[route_->slot()]) {
  route_->combine_in_flight = true;
  Engine& e = engine_;
  InterNode& net = *e.internode;
  recvs_ = net.new_transfers();
  sends_ = net.new_transfers();
  const std::size_t crow = e.combine_row_bytes();
  const TokenRoutes& routes = buf_.routes;
  // This rank's combine_recv is free: the previous combine on this slot finished
  // before this one could begin.
  for (int n = 0; n < e.topo.num_nodes(); ++n) {
    const int32_t count = routes.node_count(n);
    if (n == e.group.node || count == 0) continue;
    net.receive(*recvs_, RailBuffer::kCombine, route_->slot(), n, block_offset(n, e.group.node, e.combine_block_bytes()),
                count * crow, seq_);
    if (net.needs_clear_to_send()) net.announce_ready(n, seq_);
  }
  stage_expert_outputs();
}

CombineOp::~CombineOp() {
  abandon_requests({recvs_.get(), sends_.get()});
  route_->combine_in_flight = false;
}

// Makes this rank's expert outputs readable by its node peers: a copy into the
// slot's shared rows, unless the caller computed them there in place.
void CombineOp::stage_expert_outputs() {
  const SlotView& mine = route_->output();
  if (mine.layout.num_rows() > 0 && expert_out_ != mine.expert_out) {
    std::memcpy(mine.expert_out, expert_out_, static_cast<std::size_t>(mine.layout.num_rows()) * mine.out_row_bytes);
  }
  store_flag(mine.flags->outputs_ready, seq_);
}

// As forwarder: for every token this rank wrote to its node in the dispatch, sum
// weight * output over its rows on every local owner (owners in local-rank order,
// rows in expert order), giving one partial per (token, node); keep it for own
// tokens, encode it for remote ones, to be sent back once their source is ready.
void CombineOp::reduce_node_partials() {
  Engine& e = engine_;
  const int H = e.config.hidden, R = e.topo.ranks_per_node, me = e.group.node;
  const int L = e.topo.max_rows_per_token_rank();
  const std::size_t crow = e.combine_row_bytes();
  std::vector<SlotView> owners;
  for (int ld = 0; ld < R; ++ld) owners.push_back(e.slot_view(ld, route_->slot()));
  std::vector<float> scratch(H);
  std::size_t send_at = 0;
  partial_blocks_.reset(e.topo.num_nodes());
  for (int n = 0; n < e.topo.num_nodes(); ++n) {
    const int32_t first = buf_.handled_offset[n], count = buf_.handled_offset[n + 1] - first;
    for (int32_t i = 0; i < count; ++i) {
      const std::size_t h = static_cast<std::size_t>(first + i);
      float* acc = n == me ? buf_.own_partials.data() + static_cast<std::size_t>(i) * H : scratch.data();
      std::fill(acc, acc + H, 0.0f);
      int32_t token = -1;  // the source's token index, for error messages
      for (int c = 0; c < buf_.route_count[h]; ++c) {
        const int ld = buf_.route_local[h * R + c];
        const SlotView& owner = owners[ld];
        const int32_t* rows = owner.token_rows + static_cast<std::size_t>(buf_.route_entry[h * R + c]) * L;
        for (int x = 0; x < L && rows[x] >= 0; ++x) {
          const float weight = options_.weighted ? owner.weight[rows[x]] : 1.0f;
          e.dtype_codec.accumulate_row(owner.out_row(rows[x]), H, weight, acc);
          token = owner.src_token[rows[x]];
          if (ld != e.group.local_rank) stats.intranode_bytes += static_cast<int64_t>(owner.out_row_bytes);
        }
      }
      if (n != me) {
        const int bad = e.combine_codec.encode_row(acc, DType::kF32, H, buf_.combine_send.data() + send_at + i * crow);
        EPCOMM_REQUIRE(bad < 0, kInvalidArgument,
                       "combine: the partial sum for token " << token << " of rank "
                           << e.group.global_rank(n, e.group.local_rank) << " is " << acc[bad] << " at column " << bad
                           << " (expert outputs hold a non-finite value), which combine_format "
                           << to_string(e.config.combine_format) << " cannot encode");
      }
    }
    if (n == me || count == 0) continue;
    partial_blocks_.add(n, send_at, count * crow);
    send_at += count * crow;
  }
  store_flag(route_->output().flags->outputs_read, seq_);
}

// Sends the blocks whose receivers are ready; true if any went.
bool CombineOp::post_ready_sends() {
  Engine& e = engine_;
  InterNode& net = *e.internode;
  return partial_blocks_.send_cleared(
      {net, *sends_, RailBuffer::kCombine, route_->slot(), e.group.node, e.combine_block_bytes(), seq_},
      [&](int n) { return !net.needs_clear_to_send() || net.take_ready(n, seq_); }, &stats.internode_bytes);
}

// out[t] = sum over the token's nodes, in node order, of the node partials: the
// order is fixed, so the result is bit-identical whatever order messages arrived in.
void CombineOp::sum_node_partials() {
  const Engine& e = engine_;
  const int H = e.config.hidden, me = e.group.node;
  const std::size_t crow = e.combine_row_bytes();
  const TokenRoutes& routes = buf_.routes;
  const std::size_t elems = static_cast<std::size_t>(routes.num_tokens) * H;
  float* acc = e.config.dtype == DType::kF32 ? static_cast<float*>(out_) : buf_.out_acc.data();
  std::fill(acc, acc + elems, 0.0f);
  const kernels::Codec& f32 = kernels::codec_for(Format::kF32);
  for (int n = 0; n < e.topo.num_nodes(); ++n) {
    const int32_t* tokens = routes.node_begin(n);
    const std::size_t region = block_offset(n, me, e.combine_block_bytes());
    for (int32_t i = 0; i < routes.node_count(n); ++i) {
      float* dst = acc + static_cast<std::size_t>(tokens[i]) * H;
      if (n == me) {
        f32.accumulate_row(buf_.own_partials.data() + static_cast<std::size_t>(i) * H, H, 1.0f, dst);
      } else {
        e.combine_codec.accumulate_row(buf_.combine_recv.data() + region + i * crow, H, 1.0f, dst);
      }
    }
  }
  if (e.config.dtype != DType::kF32) {
    const std::size_t out_row = static_cast<std::size_t>(H) * dtype_size(e.config.dtype);
    for (int t = 0; t < routes.num_tokens; ++t) {
      e.dtype_codec.encode_row(acc + static_cast<std::size_t>(t) * H, DType::kF32, H,
                               static_cast<std::byte*>(out_) + t * out_row);
    }
  }
}

bool CombineOp::advance() {
  Engine& e = engine_;
  bool moved = false;
  if (state_ == State::kPartials) {
    if (e.first_local_behind(route_->slot(), &SlotFlags::outputs_ready, seq_) >= 0) return false;
    reduce_node_partials();
    state_ = State::kReturn;
    moved = true;
  }
  if (state_ == State::kReturn) {
    if (!partial_blocks_.all_sent() && post_ready_sends()) moved = true;
    if (!recvs_->test_some().empty()) moved = true;
    if (!sends_->test_some().empty()) moved = true;
    if (!partial_blocks_.all_sent() || !recvs_->all_done() || !sends_->all_done()) return moved;
    // Owners may reuse their outputs (and the slot) only after every forwarder read them.
    if (e.first_local_behind(route_->slot(), &SlotFlags::outputs_read, seq_) >= 0) return moved;
    sum_node_partials();
    state_ = State::kDone;
    route_->combine_in_flight = false;
    mark_done();
    moved = true;
  }
  return moved;
}

std::string CombineOp::phase() const { return "combine"; }

std::string CombineOp::outstanding() const {
  const int slot = route_->slot();
  if (state_ == State::kPartials) return engine_.local_ranks_behind(slot, &SlotFlags::outputs_ready, seq_);
  std::string s = recvs_->pending_peers();
  std::string sends = sends_->pending_peers();
  const std::string unready = partial_blocks_.waiting(
      [this](int n) { return engine_.group.global_rank(n, engine_.group.local_rank); }, "ready signal");
  if (!unready.empty()) sends += (sends.empty() ? "" : ", ") + unready;
  std::string local = engine_.local_ranks_behind(slot, &SlotFlags::outputs_read, seq_);
  for (const std::string* part : {&sends, &local}) {
    if (!part->empty()) s += (s.empty() ? "" : ", ") + *part;
  }
  return s;
}

}  // namespace epcomm::detail
