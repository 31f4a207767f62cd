// SPDX-License-Identifier: MIT
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
  partials_in_.reset(e.topo().num_nodes());
  for (int n = 0; n < e.topo().num_nodes(); ++n) {
    const int32_t count = routes.node_count(n);
    if (n == e.group.node || count == 0) continue;
    partials_in_.receive(net, *recvs_, BlockKind::kCombine, buf_.combine_recv_region,
                         block_offset(n, e.group.node, e.combine_block_bytes()), n, count * crow, seq_);
    if (net.needs_clear_to_send()) net.announce_ready(n, seq_);
  }
  buf_.mover->after(options.stream);
  if (e.device) e.device->hold(options.stream, seq);
  if (e.node_checksums) peer_rows_.emplace(*e.node_checksums, "expert output row", seq);
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
  if (peer_rows_) {
    // Row by row, signing the rows node peers read as they are copied.
    RowCopies copies;
    peer_rows_->stage_expert_outputs(mine, static_cast<const std::byte*>(expert_out_), copies);
    buf_.mover->copy(copies);
  } else if (mine.layout.num_rows() > 0 && expert_out_ != mine.expert_out) {
    buf_.mover->copy_bytes(mine.expert_out, expert_out_,
                           static_cast<std::size_t>(mine.layout.num_rows()) * mine.out_row_bytes);
  }
}

std::vector<SlotView> CombineOp::node_slots() const {
  std::vector<SlotView> owners;
  for (int ld = 0; ld < engine_.topo().ranks_per_node; ++ld) owners.push_back(engine_.slot_view(ld, route_->slot()));
  return owners;
}

// As forwarder: for every token this rank wrote to its node in the dispatch, sum
// weight * output over its rows on every local owner (owners in local-rank order,
// rows in expert order), giving one partial per (token, node); keep it for own
// tokens, encode it for remote ones, to be sent back once their source is ready.
void CombineOp::reduce_node_partials() {
  Engine& e = engine_;
  const int H = e.config().hidden, me = e.group.node;
  const Format out_format = kernels::plain_format(e.config().dtype);
  const std::size_t crow = e.combine_row_bytes();
  RowMover& mover = *buf_.mover;
  const std::vector<SlotView> owners = node_slots();
  RowSums sums;
  std::size_t send_at = 0;
  partial_blocks_.reset(e.topo().num_nodes());
  if (e.device) stats.intranode_bytes += route_->rows_to_node_peers() * static_cast<int64_t>(owners[0].out_row_bytes);
  for (int n = 0; n < e.topo().num_nodes(); ++n) {
    const int32_t first = buf_.handled_offset[n], count = buf_.handled_offset[n + 1] - first;
    // Own tokens' partials are kept whole; remote ones are summed a batch of
    // partial_acc_rows at a time and encoded into the send buffer.
    const int64_t batch = n == me ? std::max<int64_t>(count, 1) : buf_.partial_acc_rows;
    for (int64_t b0 = 0; b0 < count; b0 += batch) {
      const int64_t b1 = std::min<int64_t>(count, b0 + batch);
      float* acc = n == me ? buf_.own_partials + b0 * H : buf_.partial_acc;
      if (e.device) {
        // The same sums from the forwarding record on the GPU.
        buf_.plan->sum_routed(out_format, first + b0, b1 - b0, options_.weighted, acc);
      } else {
        add_routed_sources(first + b0, first + b1, owners, sums);
        mover.accumulate(out_format, sums, H, true, acc);
      }
      if (n != me) encode_remote_partials(n, first + b0, b1 - b0, send_at, b0 * crow);
    }
    if (n == me || count == 0) continue;
    partial_blocks_.add(n, send_at, count * crow);
    send_at += count * crow;
  }
}

// sums = the sources of handled tokens [h0, h1): each token's rows on every owner
// it reached, owners in route order, rows in expert order.
void CombineOp::add_routed_sources(int64_t h0, int64_t h1, const std::vector<SlotView>& owners, RowSums& sums) {
  Engine& e = engine_;
  const int R = e.topo().ranks_per_node, L = e.topo().max_rows_per_token_rank();
  sums.clear();
  if (peer_rows_) sums.corrupt = peer_rows_->corrupt();
  for (int64_t i = h0; i < h1; ++i) {
    const std::size_t h = static_cast<std::size_t>(i);
    for (int c = 0; c < buf_.route_count[h]; ++c) {
      const int ld = buf_.route_local[h * R + c];
      const SlotView& owner = owners[ld];
      const int32_t* rows = owner.token_rows + static_cast<std::size_t>(buf_.route_entry[h * R + c]) * L;
      for (int x = 0; x < L && rows[x] >= 0; ++x) {
        sums.add_source(owner.out_row(rows[x]), options_.weighted ? owner.weight[rows[x]] : 1.0f,
                        peer_rows_ ? peer_rows_->expert_output_sum(owner, ld, rows[x]) : nullptr);
        if (ld != e.group.local_rank) stats.intranode_bytes += static_cast<int64_t>(owner.out_row_bytes);
      }
    }
    sums.end_destination();
  }
}

// Encodes `count` summed partials (partial_acc) of handled tokens [first, first +
// count), bound for `node`, at byte `at` of its block (which starts at `block` of
// the send buffer); a value the combine format cannot encode is an error naming
// the token. The rows go in pieces that end where the tier's chunks end, each
// noted, so a chunk is sent once it is encoded; LogFMT, whose check below waits
// for the encode, in one.
void CombineOp::encode_remote_partials(int node, int64_t first, int64_t count, std::size_t block, std::size_t at) {
  Engine& e = engine_;
  const int H = e.config().hidden, R = e.topo().ranks_per_node, L = e.topo().max_rows_per_token_rank();
  const std::size_t crow = e.combine_row_bytes();
  const std::size_t chunk = logfmt_bits(e.config().combine_format) == 0 ? e.internode->chunk_bytes() : 0;
  RowMover& mover = *buf_.mover;
  for (int64_t done = 0; done < count;) {
    // Up to the end of the chunk the piece starts in (the rest without chunks).
    const std::size_t from = at + done * crow, room = chunk == 0 ? 0 : (from / chunk + 1) * chunk - from;
    const int64_t rows = chunk == 0 ? count - done : std::min<int64_t>(count - done, (room + crow - 1) / crow);
    mover.encode(e.config().combine_format, buf_.partial_acc + done * H, DType::kF32, rows, H,
                 buf_.combine_send.data() + block + from);
    done += rows;
    partial_blocks_.written_at(node, at + done * crow, mover.mark());
  }
  if (logfmt_bits(e.config().combine_format) == 0) return;  // only LogFMT can fail
  const int64_t bad = mover.first_bad();
  if (bad < 0) return;
  // A corrupted expert output may be what made the partial unencodable.
  if (peer_rows_) peer_rows_->raise_if_expert_output_corrupt(node_slots());
  const std::size_t h = static_cast<std::size_t>(first + bad / H);
  int32_t token = -1;
  if (e.device) {
    // The record and the owner's metadata are in GPU memory.
    int32_t ld = 0, entry = 0, row = 0;
    buf_.plan->first_route(static_cast<int64_t>(h), &ld, &entry);
    const SlotView owner = e.slot_view(ld, route_->slot());
    mover.download(&row, owner.token_rows + static_cast<std::size_t>(entry) * L, sizeof row);
    mover.download(&token, owner.src_token + row, sizeof token);
  } else {
    const SlotView owner = e.slot_view(buf_.route_local[h * R], route_->slot());
    token = owner.src_token[owner.token_rows[static_cast<std::size_t>(buf_.route_entry[h * R]) * L]];
  }
  float v;
  mover.download(&v, buf_.partial_acc + bad, sizeof v);
  EPCOMM_FAIL(kInvalidArgument, "combine: the partial sum for token " << token << " of rank "
                                    << e.group.global_rank(node, e.group.local_rank) << " is " << v << " at column "
                                    << bad % H << " (expert outputs hold a non-finite value), which combine_format "
                                    << to_string(e.config().combine_format) << " cannot encode");
}

// Sends the blocks whose receivers are ready; true if any went.
bool CombineOp::post_ready_sends() {
  Engine& e = engine_;
  InterNode& net = *e.internode;
  return partial_blocks_.send_cleared(
      {net, *sends_, BlockKind::kCombine, buf_.combine_send_region, buf_.combine_recv_region, e.group.node,
       e.combine_block_bytes(), seq_, *buf_.mover},
      [&](int n) { return !net.needs_clear_to_send() || net.take_ready(n, seq_); }, &stats.internode_bytes);
}

// out[t] = sum over the token's nodes, in node order, of the node partials: the
// order is fixed, so the result is bit-identical whatever order messages arrived in.
void CombineOp::sum_node_partials() {
  const Engine& e = engine_;
  const int H = e.config().hidden, me = e.group.node;
  const std::size_t crow = e.combine_row_bytes();
  const TokenRoutes& routes = buf_.routes;
  const int T = routes.num_tokens;
  RowMover& mover = *buf_.mover;
  float* acc = e.config().dtype == DType::kF32 ? static_cast<float*>(out_) : buf_.out_acc;
  mover.zero(acc, static_cast<std::size_t>(T) * H * sizeof(float));
  if (e.device) {
    // The same passes, each token's partial found on the GPU from the routes.
    for (int n = 0; n < e.topo().num_nodes(); ++n) {
      if (n == me) {
        buf_.plan->add_node_partials(Format::kF32, n, buf_.own_partials, static_cast<std::size_t>(H) * sizeof(float), T,
                                     acc);
      } else {
        buf_.plan->add_node_partials(e.config().combine_format, n,
                                     buf_.combine_recv_staged + block_offset(n, me, e.combine_block_bytes()), crow, T,
                                     acc);
      }
    }
    encode_output(acc, T);
    return;
  }
  // One pass per node, each adding that node's partial to its tokens' rows.
  std::vector<const void*> partial(T);
  RowSums sums;
  for (int n = 0; n < e.topo().num_nodes(); ++n) {
    if (routes.node_count(n) == 0) continue;
    const int32_t* tokens = routes.node_begin(n);
    const std::size_t region = block_offset(n, me, e.combine_block_bytes());
    std::fill(partial.begin(), partial.end(), nullptr);
    for (int32_t i = 0; i < routes.node_count(n); ++i) {
      partial[tokens[i]] = n == me ? static_cast<const void*>(buf_.own_partials + static_cast<std::size_t>(i) * H)
                                   : buf_.combine_recv.data() + region + i * crow;
    }
    sums.clear();
    for (int t = 0; t < T; ++t) {
      if (partial[t] != nullptr) sums.add_source(partial[t], 1.0f);
      sums.end_destination();
    }
    mover.accumulate(n == me ? Format::kF32 : e.config().combine_format, sums, H, false, acc);
  }
  encode_output(acc, T);
}

// out = acc in the caller's dtype (acc is out itself for F32).
void CombineOp::encode_output(const float* acc, int num_tokens) {
  const Engine& e = engine_;
  const DType dtype = e.config().dtype;
  if (dtype != DType::kF32) {
    buf_.mover->encode(kernels::plain_format(dtype), acc, DType::kF32, num_tokens, e.config().hidden, out_);
  }
}

bool CombineOp::advance() {
  Engine& e = engine_;
  bool moved = false;
  RowMover& mover = *buf_.mover;
  if (state_ == State::kStage) {
    if (!mover.idle()) return false;
    if (peer_rows_) peer_rows_->publish();
    store_flag(route_->output().flags->outputs_ready, seq_);
    state_ = State::kPartials;
    moved = true;
  }
  if (state_ == State::kPartials) {
    if (e.first_local_behind(route_->slot(), &SlotFlags::outputs_ready, seq_) >= 0) return moved;
    reduce_node_partials();
    state_ = State::kReduced;
    moved = true;
  }
  if (state_ == State::kReduced) {
    // Without rows to verify first, each chunk goes as soon as it is encoded.
    if (!peer_rows_ && !partial_blocks_.all_sent() && post_ready_sends()) moved = true;
    if (!mover.idle()) return moved;
    // Before anything summed from a corrupted row is sent or kept.
    if (peer_rows_) peer_rows_->raise_if_expert_output_corrupt(node_slots());
    store_flag(route_->output().flags->outputs_read, seq_);
    state_ = State::kReturn;
    moved = true;
  }
  if (state_ == State::kReturn) {
    if (!partial_blocks_.all_sent() && post_ready_sends()) moved = true;
    for (int i : recvs_->test_some()) {
      moved = true;
      const IncomingBlocks::Chunk& c = partials_in_.chunk(i);
      // With device memory each chunk goes on to the GPU as it lands.
      if (e.device) mover.copy_bytes(buf_.combine_recv_staged + c.offset, buf_.combine_recv.data() + c.offset, c.bytes);
    }
    if (!sends_->test_some().empty()) moved = true;
    if (!partial_blocks_.all_sent() || !recvs_->all_done() || !sends_->all_done()) return moved;
    // Owners may reuse their outputs (and the slot) only after every forwarder read them.
    if (e.first_local_behind(route_->slot(), &SlotFlags::outputs_read, seq_) >= 0) return moved;
    sum_node_partials();
    state_ = State::kSum;
    moved = true;
  }
  if (state_ == State::kSum) {
    if (!mover.idle()) return moved;
    state_ = State::kDone;
    route_->combine_in_flight = false;
    mark_done();
    moved = true;
  }
  return moved;
}

std::string CombineOp::phase() const {
  switch (state_) {
    case State::kStage: return "combine (staging expert outputs on the GPU)";
    case State::kReduced: return "combine (node partials on the GPU)";
    case State::kSum: return "combine (final sums on the GPU)";
    default: return "combine";
  }
}

std::string CombineOp::outstanding() const {
  const int slot = route_->slot();
  if (state_ == State::kStage || state_ == State::kReduced || state_ == State::kSum) {
    return "none (this rank's GPU work)";
  }
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
