// SPDX-License-Identifier: MIT
#include "exchange/dispatch_op.hpp"

#include <algorithm>
#include <cstring>

#include "util/check.hpp"
#include "util/log.hpp"

namespace epcomm::detail {
namespace {

constexpr int32_t kLayoutMagic = 0x45504331;  // "EPC1"

// Layout message from a source to one destination rank: a header, the source's
// token count for each of the destination's experts, the distinct tokens reaching
// the destination, and the rows the destination will receive as forwarder.
enum : int { kMsgMagic = 0, kMsgSeq = 1, kMsgTokens = 2, kMsgExperts = 3 };

}  // namespace

// Where one source's rows for this node come from: the caller's input (this rank's
// own tokens) or a received inter-node message (metadata block, then row block).
struct DispatchOp::TokenSource {
  int rank;
  int node;
  int32_t count;
  // Own input: its token indices on the host, or null where they are only on the
  // GPU (TokenRoutes::lists_on_device).
  const int32_t* own_tokens;
  const std::byte* message;  // inter-node message, else null (own input)
  const std::byte* staged;   // the same message copied to GPU memory (device exchange)

  bool own() const { return message == nullptr; }
};

DispatchOp::DispatchOp(Engine& engine, uint64_t seq, int slot, const DispatchInput& input,
                       std::shared_ptr<const ReusableLayout> layout, const DeviceDispatchInput* device_input)
    : Op(engine, seq, "dispatch"),
      slot_(slot),
      input_(input),
      reused_(std::move(layout)),
      buf_(engine.slots[slot]),
      mine_(engine.slot_view(engine.group.local_rank, slot)) {
  rail_recvs_ = engine.internode->new_transfers();
  rail_sends_ = engine.internode->new_transfers();
  buf_.busy = true;
  const ExchangeConfig& config = engine.config();
  const bool as_given = input.x_encoded || config.dispatch_format == kernels::plain_format(config.dtype);
  token_rows_ = as_given ? static_cast<const std::byte*>(input.x) : buf_.token_staging;
  rows_encoded_ = as_given;
  if (engine.node_checksums) peer_rows_.emplace(*engine.node_checksums, "dispatch row", seq);
  if (config.checksum) {
    sent_sums_.emplace(BlockKind::kDispatch, seq);
    received_sums_.emplace(BlockKind::kDispatch, seq);
  }
  // buf_.routes: built by the engine's checks before the slot was taken.
  if (engine.device) {
    // Engine::begin_dispatch brought the routing inputs to the host (the
    // dispatch's one host synchronisation) into the slot's pinned memory, where
    // they live on, and may have started the encode (after the caller's stream).
    if (device_input->rows_encoded) {
      rows_encoded_ = true;
    } else {
      buf_.mover->after(input.stream);
    }
    device_topk_idx_ = device_input->topk_idx;
    device_topk_weights_ = device_input->topk_weights;
    verdict_pending_ = device_input->routes == DeviceDispatchInput::Routes::kReused;
    buf_.plan->set_routes(buf_.routes);
    if (peer_rows_) buf_.plan->begin_checksums();
    engine.device->hold(input.stream, seq);
  }
  post_layout();
}

DispatchOp::~DispatchOp() {
  abandon_requests({&layout_reqs_, rail_recvs_.get(), rail_sends_.get()});
  buf_.busy = false;
}

// Quantised formats cost far more to encode than to copy: encode every token that
// goes anywhere once, so a token bound for several nodes or owners is copied.
void DispatchOp::encode_routed_tokens() {
  const Engine& e = engine_;
  const TokenRoutes& routes = buf_.routes;
  if (routes.lists_on_device) {
    // One node, its token list on the GPU: every routed token once.
    const DevicePlanSteps::BadElement bad =
        buf_.plan->encode_routed_tokens(e.config().dispatch_format, input_.x, e.config().dtype, buf_.token_staging);
    rows_encoded_ = true;
    if (bad.token >= 0) reject_unencodable(bad.token, bad.column);
    return;
  }
  std::vector<bool> seen(static_cast<std::size_t>(input_.num_tokens), false);
  std::vector<int32_t> tokens;
  for (int n = 0; n < e.topo().num_nodes(); ++n) {
    const int32_t* node_tokens = routes.node_begin(n);
    for (int32_t i = 0; i < routes.node_count(n); ++i) {
      const int32_t t = node_tokens[i];
      if (seen[t]) continue;
      seen[t] = true;
      tokens.push_back(t);
    }
  }
  RowMover& mover = *buf_.mover;
  const int H = e.config().hidden;
  mover.encode_tokens(e.config().dispatch_format, input_.x, e.config().dtype, H, tokens, buf_.token_staging);
  rows_encoded_ = true;
  if (logfmt_bits(e.config().dispatch_format) == 0) return;  // only LogFMT can fail
  const int64_t bad = mover.first_bad();
  if (bad < 0) return;
  reject_unencodable(tokens[static_cast<std::size_t>(bad / H)], static_cast<int>(bad % H));
}

// Fails the dispatch on an input value its format cannot encode, naming it.
void DispatchOp::reject_unencodable(int32_t token, int column) const {
  const Engine& e = engine_;
  const int H = e.config().hidden;
  const std::size_t elem = dtype_size(e.config().dtype);
  std::byte raw[4];
  buf_.mover->download(raw,
                       static_cast<const std::byte*>(input_.x) + (static_cast<std::size_t>(token) * H + column) * elem,
                       elem);
  float v;
  e.dtype_codec().decode_row(raw, 1, &v, DType::kF32);
  EPCOMM_FAIL(kInvalidArgument, "dispatch input token " << token << " column " << column << " is " << v
                                    << ", which dispatch_format " << to_string(e.config().dispatch_format)
                                    << " cannot encode");
}

// With a reused layout on the GPU (verdict_pending_), once the mover passed the
// check: the routing's first bad pick, or the first count that differs from the
// layout's, fails the dispatch with the message the begin's checks give.
void DispatchOp::raise_if_routing_rejected() {
  const DevicePlanSteps::RouteVerdict v = buf_.plan->route_verdict();
  if (!v.rejected) return;
  const Engine& e = engine_;
  const Topology& topo = e.topo();
  const int K = topo.topk;
  if (v.token >= 0) {
    std::vector<int32_t> idx(K);
    std::vector<float> w(K);
    const std::size_t at = static_cast<std::size_t>(v.token) * K;
    buf_.mover->download(idx.data(), device_topk_idx_ + at, K * sizeof(int32_t));
    buf_.mover->download(w.data(), device_topk_weights_ + at, K * sizeof(float));
    reject_token_pick(topo, idx.data(), w.data(), v.token, v.k);
  }
  const std::vector<int32_t> counts = buf_.plan->download_route_counts();
  const int32_t* c = counts.data() + kRouteCountsHeader;
  TokenRoutes counted;
  routes_from_counts(topo, input_.num_tokens, c, c + topo.num_experts, c + topo.num_experts + topo.num_ranks, counted);
  EPCOMM_FAIL(kInvalidArgument, "dispatch on the layout of dispatch "
                                    << reused_->origin << ": " << first_count_difference(reused_->saved, counted)
                                    << " (a reused layout needs the counts it was made from)");
}

// Token t's row in the dispatch format.
const std::byte* DispatchOp::token_row(int32_t t) const {
  return token_rows_ + static_cast<std::size_t>(t) * engine_.slot_layout().row_bytes;
}

void DispatchOp::post_layout() {
  Engine& e = engine_;
  const Topology& topo = e.topo();
  const int P = topo.num_ranks, J = topo.experts_per_rank(), me = e.group.rank;
  const TokenRoutes& routes = buf_.routes;
  msg_ints_ = kMsgExperts + J + 2;
  layout_from_rail_peer_.assign(topo.num_nodes(), 0);
  if (reused_) {
    // No counts to exchange. A one-sided transport still needs this rank's word
    // that the slot's receive blocks are free, which the layout message gives
    // otherwise.
    if (!e.internode->needs_clear_to_send()) return;
    for (int n = 0; n < topo.num_nodes(); ++n) {
      if (n != e.group.node && reused_->saved.rail_rows[n] > 0) e.internode->announce_ready(n, seq_);
    }
    return;
  }
  layout_out_.assign(static_cast<std::size_t>(P) * msg_ints_, 0);
  layout_in_.assign(static_cast<std::size_t>(P) * msg_ints_, 0);
  const int tag = e.mpi_tag(seq_, kTagLayout);
  for (int d = 0; d < P; ++d) {
    int32_t* msg = layout_out_.data() + static_cast<std::size_t>(d) * msg_ints_;
    msg[kMsgMagic] = kLayoutMagic;
    msg[kMsgSeq] = static_cast<int32_t>(seq_ & 0x7fffffff);
    msg[kMsgTokens] = input_.num_tokens;
    std::memcpy(msg + kMsgExperts, routes.expert_tokens.data() + static_cast<std::size_t>(d) * J, J * sizeof(int32_t));
    msg[kMsgExperts + J] = routes.rank_tokens[d];
    const bool rail_peer = topo.node_of_rank(d) != e.group.node && d % topo.ranks_per_node == e.group.local_rank;
    msg[kMsgExperts + J + 1] = rail_peer ? routes.node_count(topo.node_of_rank(d)) : 0;
    if (d == me) {
      std::memcpy(layout_in_.data() + static_cast<std::size_t>(d) * msg_ints_, msg, msg_ints_ * sizeof(int32_t));
      continue;
    }
    MPI_Request r;
    EPCOMM_MPI(MPI_Irecv(layout_in_.data() + static_cast<std::size_t>(d) * msg_ints_, msg_ints_, MPI_INT32_T, d,
                         tag, e.comm(), &r));
    layout_reqs_.add(r, d, PeerRequests::Kind::kRecv);
    EPCOMM_MPI(MPI_Isend(msg, msg_ints_, MPI_INT32_T, d, tag, e.comm(), &r));
    layout_reqs_.add(r, d, PeerRequests::Kind::kSend);
    stats.layout_bytes += static_cast<int64_t>(msg_ints_) * 4;
  }
}

// Packs each remote node's tokens once (metadata block, then encoded rows), for the
// rank with this rank's local index on that node. The rows are copied in pieces
// that end where the tier's chunks end, each noted, so that a chunk is sent as soon
// as it is written while later ones are still being packed. The records are
// written by the host into rail_send; with GPU-direct rails the block the tier
// sends is in GPU memory, and the records are copied there ahead of the rows.
void DispatchOp::pack_rail_sends() {
  const Engine& e = engine_;
  const Topology& topo = e.topo();
  const int K = topo.topk;
  const std::size_t row_bytes = e.slot_layout().row_bytes, meta_bytes = e.rail_meta_bytes();
  const TokenRoutes& routes = buf_.routes;
  RowMover& mover = *buf_.mover;
  std::byte* cursor = buf_.rail_send.data();
  std::byte* const block = buf_.rail_send_block;
  rail_blocks_.reset(topo.num_nodes());
  // With checksums on the host each row is signed as it is packed.
  BlockChecksums* sums = sent_sums_ && !e.device ? &*sent_sums_ : nullptr;
  if (sums) sums->reset(topo.num_nodes(), row_bytes);
  for (int n = 0; n < topo.num_nodes(); ++n) {
    const int32_t count = routes.node_count(n);
    if (n == e.group.node || count == 0) continue;
    const int32_t* tokens = routes.node_begin(n);
    const std::size_t records = e.rail_records_bytes(count);
    const std::size_t start = static_cast<std::size_t>(cursor - buf_.rail_send.data());
    std::byte* rows = block + start + records;
    for (int32_t i = 0; i < count; ++i) {
      const int32_t t = tokens[i];
      auto* meta = reinterpret_cast<int32_t*>(cursor + i * meta_bytes);
      meta[0] = t;
      std::memcpy(meta + 1, input_.topk_idx + static_cast<std::size_t>(t) * K, K * sizeof(int32_t));
      std::memcpy(meta + 1 + K, input_.topk_weights + static_cast<std::size_t>(t) * K, K * sizeof(float));
    }
    // The padding goes on the wire and into the block's checksum: zeros, not
    // whatever an earlier operation left there.
    std::memset(cursor + count * meta_bytes, 0, records - count * meta_bytes);
    if (sums) {
      sums->add(n, count);
      sums->take_head(n, cursor, records);
    }
    if (block != buf_.rail_send.data()) mover.copy_bytes(block + start, cursor, records);
    const std::size_t bytes = e.rail_bytes(count);
    int32_t copied = 0;
    for_each_chunk(bytes, e.internode->chunk_bytes(), [&](std::size_t at, std::size_t chunk) {
      // The rows that reach into the chunk, up to its end.
      const std::size_t end = at + chunk, past_records = end > records ? end - records : 0;
      const auto rows_end =
          static_cast<int32_t>(std::min<std::size_t>(count, (past_records + row_bytes - 1) / row_bytes));
      copies_.clear(row_bytes);
      for (; copied < rows_end; ++copied) {
        copies_.add(token_row(tokens[copied]), rows + copied * row_bytes, sums ? sums->row(n, copied) : nullptr);
      }
      mover.copy(copies_);
      rail_blocks_.written_at(n, end, mover.mark());
    });
    rail_blocks_.add(n, start, bytes);
    cursor += bytes;
  }
  rail_packed_ = true;
}

// With checksums, what gives the checksum of a packed block once it is written:
// the combination of the sums its packing took, or with device memory (the GPU
// packs) a hash of the whole block.
std::function<BlockChecksum(int, std::size_t, std::size_t)> DispatchOp::block_checksum_to_send() {
  if (!sent_sums_) return {};
  if (engine_.device) {
    return [this](int, std::size_t offset, std::size_t bytes) {
      return block_checksum(buf_.rail_send.data() + offset, bytes);
    };
  }
  return [this](int node, std::size_t, std::size_t) { return sent_sums_->block(node); };
}

// Sends each packed block whose receiver may take it: at once over MPI; over a
// one-sided transport once the rail peer's layout message for this dispatch came,
// which it sends only after its slot (the block written into) is free again.
bool DispatchOp::post_cleared_rail_sends() {
  Engine& e = engine_;
  InterNode& net = *e.internode;
  if (rail_blocks_.all_sent()) return false;
  return rail_blocks_.send_cleared(
      {net, *rail_sends_, BlockKind::kDispatch, buf_.rail_send_region, buf_.rail_recv_region, e.group.node,
       e.rail_block_bytes(), seq_, *buf_.mover, block_checksum_to_send()},
      [&](int n) {
        if (!net.needs_clear_to_send()) return true;
        return reused_ ? net.take_ready(n, seq_) : layout_from_rail_peer_[n] != 0;
      },
      &stats.internode_bytes);
}

// A layout receive that completed from a rail peer clears the way to its node.
void DispatchOp::note_layout_arrivals(const std::vector<int>& completed) {
  const Engine& e = engine_;
  for (int i : completed) {
    if (layout_reqs_.kind(i) != PeerRequests::Kind::kRecv) continue;
    const int peer = layout_reqs_.peer(i);
    if (peer % e.topo().ranks_per_node == e.group.local_rank) layout_from_rail_peer_[e.topo().node_of_rank(peer)] = 1;
  }
}

// This rank's receive layout from every source's layout message, and the rows
// each rail peer announced.
void DispatchOp::build_layout_from_messages() {
  const Engine& e = engine_;
  const Topology& topo = e.topo();
  const int P = topo.num_ranks, J = topo.experts_per_rank(), N = topo.num_nodes();
  std::vector<int32_t> expert_tokens(static_cast<std::size_t>(P) * J), rank_tokens(P);
  for (int s = 0; s < P; ++s) {
    const int32_t* msg = layout_in_.data() + static_cast<std::size_t>(s) * msg_ints_;
    EPCOMM_REQUIRE(msg[kMsgMagic] == kLayoutMagic && msg[kMsgSeq] == static_cast<int32_t>(seq_ & 0x7fffffff),
                   kMismatch,
                   "rank " << s << " sent a dispatch layout for operation " << msg[kMsgSeq] << " while this rank is at "
                           << seq_ << ": every rank must begin the same dispatches and combines in the same order");
    std::memcpy(expert_tokens.data() + static_cast<std::size_t>(s) * J, msg + kMsgExperts, J * sizeof(int32_t));
    rank_tokens[s] = msg[kMsgExperts + J];
  }
  build_recv_layout(expert_tokens.data(), rank_tokens.data(), e.config().expert_alignment, mine_.layout);
  rail_rows_.assign(N, 0);
  for (int n = 0; n < N; ++n) {
    if (n == e.group.node) continue;
    const int peer = e.group.global_rank(n, e.group.local_rank);
    rail_rows_[n] = layout_in_[static_cast<std::size_t>(peer) * msg_ints_ + kMsgExperts + J + 1];
  }
}

// Builds this rank's receive layout from every source's counts, or restores the
// reused one.
void DispatchOp::on_layout_complete() {
  const Engine& e = engine_;
  const Topology& topo = e.topo();
  const int J = topo.experts_per_rank(), N = topo.num_nodes();
  RecvLayoutView& layout = mine_.layout;
  if (reused_) {
    restore_layout(reused_->saved, layout);
    rail_rows_ = reused_->saved.rail_rows;
  } else {
    build_layout_from_messages();
  }
  EPCOMM_REQUIRE(layout.num_rows() <= e.slot_layout().max_rows, kBufferTooSmall,
                 "this dispatch delivers " << layout.num_rows() << " rows (with padding) to this rank but max_recv_rows is "
                                           << e.slot_layout().max_rows);
  EPCOMM_REQUIRE(layout.num_tokens() <= e.slot_layout().max_tokens, kBufferTooSmall,
                 "this dispatch delivers " << layout.num_tokens() << " tokens to this rank but the slot holds "
                                           << e.slot_layout().max_tokens);
  // Padding rows are owned by this rank: mark them empty and zero their payload so
  // a grouped GEMM over whole segments reads finite values. (With device memory,
  // finish() does, on the GPU.)
  if (e.device) {
    buf_.plan->set_own_layout(layout);
  } else {
    for (int j = 0; j < J; ++j) {
      const int64_t first_pad = layout.expert_offset[j] + layout.expert_count[j];
      for (int64_t r = first_pad; r < layout.expert_offset[j + 1]; ++r) {
        mine_.src_rank[r] = -1;
        mine_.src_token[r] = -1;
        mine_.weight[r] = 0.0f;
        mine_.first_row[r] = -1;
      }
      buf_.mover->zero(mine_.row(first_pad),
                       static_cast<std::size_t>(layout.expert_offset[j + 1] - first_pad) * mine_.row_bytes);
    }
  }

  // Inter-node rows this rank forwards, and where its forwarding record starts per
  // source node.
  buf_.handled_offset[0] = 0;
  rail_in_.reset(N);
  if (received_sums_) received_sums_->reset(N, e.slot_layout().row_bytes);
  for (int n = 0; n < N; ++n) {
    if (n == e.group.node) {
      buf_.handled_offset[n + 1] = buf_.handled_offset[n] + buf_.routes.node_count(n);
      continue;
    }
    const int peer = e.group.global_rank(n, e.group.local_rank);
    buf_.handled_offset[n + 1] = buf_.handled_offset[n] + rail_rows_[n];
    if (rail_rows_[n] == 0) continue;
    EPCOMM_REQUIRE(rail_rows_[n] <= e.config().max_tokens_per_rank, kMismatch,
                   "rank " << peer << " announced " << rail_rows_[n] << " tokens for this node, more than max_tokens_per_rank="
                           << e.config().max_tokens_per_rank);
    BlockChecksum* sum = nullptr;
    if (received_sums_) {
      received_sums_->add(n, rail_rows_[n]);
      sum = received_sums_->sent(n);
    }
    rail_in_.receive(*e.internode, *rail_recvs_, BlockKind::kDispatch, buf_.rail_recv_region,
                     block_offset(n, e.group.node, e.rail_block_bytes()), n, e.rail_bytes(rail_rows_[n]), seq_,
                     sum);
  }
  store_flag(mine_.flags->layout_ready, seq_);
}

// Writes one source's rows into the slots of their owners on this node, where the
// plan placed them: the payload once per owner rank (at the row of its lowest local
// expert), metadata for every (token, expert) row, and the owner's token-list
// entry; records the route for combine.
void DispatchOp::write_source(const TokenSource& src) {
  Engine& e = engine_;
  const Topology& topo = e.topo();
  const int R = topo.ranks_per_node;
  const int L = topo.max_rows_per_token_rank();
  const std::size_t row_bytes = e.slot_layout().row_bytes, meta_bytes = e.rail_meta_bytes();

  std::vector<SlotView> owners;
  std::vector<RecvLayoutView> layouts;
  for (int ld = 0; ld < R; ++ld) {
    owners.push_back(e.slot_view(ld, slot_));
    layouts.push_back(owners.back().layout);
  }
  if (e.device) {
    write_source_on_device(src, layouts);
    return;
  }
  SourceTokens tokens;
  tokens.count = src.count;
  if (src.own()) {
    tokens.tokens = src.own_tokens;
    tokens.topk_idx = input_.topk_idx;
    tokens.topk_weights = input_.topk_weights;
  } else {
    tokens.records = src.message;
    tokens.record_bytes = meta_bytes;
    // The records are read here, by this thread: hashed just before.
    if (received_sums_) received_sums_->take_head(src.node, src.message, e.rail_records_bytes(src.count));
  }
  // A received block's rows, each signed for the block's check by one of its copies.
  BlockChecksums* block_sums = received_sums_ && !src.own() ? &*received_sums_ : nullptr;
  place_source_rows(topo, e.group.node, src.rank, tokens, layouts.data(), placement_);

  const RowPlacement& pl = placement_;
  int32_t handled = buf_.handled_offset[src.node];
  copies_.clear(row_bytes);
  for (int32_t i = 0; i < pl.num_tokens(); ++i) {
    const int32_t t = pl.token[i];
    const std::byte* payload =
        src.own() ? token_row(t) : src.message + e.rail_records_bytes(src.count) + i * row_bytes;
    int route_n = 0;
    // A row its sender sent for no expert here (corrupted metadata) is hashed alone.
    if (block_sums && pl.visit_begin[i] == pl.visit_begin[i + 1]) {
      copies_.add(payload, nullptr, block_sums->row(src.node, i));
    }
    // The copy whose hash the block's check takes: a copy into a node peer's slot
    // where there is one (its hash signs the row for that owner too), else the
    // first.
    int32_t block_visit = pl.visit_begin[i];
    if (block_sums && peer_rows_) {
      for (int32_t v = pl.visit_begin[i]; v < pl.visit_begin[i + 1]; ++v) {
        if (pl.visit_rank[v] == e.group.local_rank) continue;
        block_visit = v;
        break;
      }
    }
    for (int32_t v = pl.visit_begin[i]; v < pl.visit_begin[i + 1]; ++v) {
      const int ld = pl.visit_rank[v];
      const SlotView& d = owners[ld];
      int32_t* token_rows = d.token_rows + static_cast<std::size_t>(pl.visit_entry[v]) * L;
      const int32_t first = pl.row[pl.row_begin[v]];
      const bool to_peer = peer_rows_ && ld != e.group.local_rank;
      BlockChecksum* sign = to_peer ? &d.row_sum[first] : nullptr;
      if (block_sums && v == block_visit) {
        if (sign != nullptr) {
          block_sums->row_is_at(src.node, i, sign);
        } else {
          sign = block_sums->row(src.node, i);
        }
      }
      if (to_peer) {
        peer_rows_->add_signed_copy(copies_, payload, d.row(first), sign);
      } else {
        copies_.add(payload, d.row(first), sign);
      }
      const int32_t rows = pl.row_begin[v + 1] - pl.row_begin[v];
      for (int32_t c = 0; c < rows; ++c) {
        const int32_t p = pl.row[pl.row_begin[v] + c];
        d.src_rank[p] = src.rank;
        d.src_token[p] = t;
        d.weight[p] = pl.weight[pl.row_begin[v] + c];
        d.first_row[p] = first;
        token_rows[c] = p;
      }
      for (int32_t c = rows; c < L; ++c) token_rows[c] = -1;
      buf_.route_local[static_cast<std::size_t>(handled) * R + route_n] = ld;
      buf_.route_entry[static_cast<std::size_t>(handled) * R + route_n] = pl.visit_entry[v];
      ++route_n;
      if (ld != e.group.local_rank) {
        stats.intranode_bytes += static_cast<int64_t>(row_bytes + rows * 16 + L * 4);
        ++tokens_to_node_peers_;
      }
    }
    buf_.route_count[handled] = route_n;
    ++handled;
  }
  buf_.mover->copy(copies_);
}

// The same on the GPU (device_plan_steps.hpp): the kernels compute the placement
// the host plan would and write rows, metadata and the forwarding record.
void DispatchOp::write_source_on_device(const TokenSource& src, const std::vector<RecvLayoutView>& layouts) {
  DevicePlanSteps& plan = *buf_.plan;
  const int32_t handled = buf_.handled_offset[src.node];
  if (src.own()) {
    plan.write_own_tokens(src.rank, device_topk_idx_, device_topk_weights_, token_rows_, handled, layouts);
  } else {
    plan.write_block_tokens(src.rank, src.count, src.staged, handled, layouts);
  }
  count_node_peer_bytes(src);
}

// The statistics of what write_source moves into node peers' slots, from the
// routing alone: per token reaching a peer, its payload and token-list entry,
// and 16 bytes of metadata per row.
void DispatchOp::count_node_peer_bytes(const TokenSource& src) {
  const Engine& e = engine_;
  const Topology& topo = e.topo();
  const int R = topo.ranks_per_node, J = topo.experts_per_rank(), K = topo.topk;
  const int L = topo.max_rows_per_token_rank();
  const int64_t per_token = static_cast<int64_t>(e.slot_layout().row_bytes) + L * 4;
  if (src.own()) {
    const TokenRoutes& routes = buf_.routes;
    for (int ld = 0; ld < R; ++ld) {
      if (ld == e.group.local_rank) continue;
      const int d = e.group.global_rank(e.group.node, ld);
      int64_t rows = 0;
      for (int j = 0; j < J; ++j) rows += routes.expert_tokens[static_cast<std::size_t>(d) * J + j];
      stats.intranode_bytes += routes.rank_tokens[d] * per_token + rows * 16;
      tokens_to_node_peers_ += routes.rank_tokens[d];
    }
    return;
  }
  const int first_expert = e.group.node * R * J;
  std::vector<int32_t> reached_by(R, -1);  // the last token that reached each owner
  for (int32_t i = 0; i < src.count; ++i) {
    const auto* idx = reinterpret_cast<const int32_t*>(src.message + i * e.rail_meta_bytes()) + 1;
    for (int k = 0; k < K; ++k) {
      const int rel = idx[k] - first_expert;
      if (idx[k] < 0 || rel < 0 || rel >= R * J || rel / J == e.group.local_rank) continue;
      if (reached_by[rel / J] != i) {
        reached_by[rel / J] = i;
        stats.intranode_bytes += per_token;
        ++tokens_to_node_peers_;
      }
      stats.intranode_bytes += 16;
    }
  }
}

// Once the copies of the received blocks' rows ran: each block's rows, as they
// were copied, and records must make the checksum its sender sent, before any of
// them is shown to a node peer or to the caller.
void DispatchOp::require_received_blocks_intact() const {
  const Engine& e = engine_;
  for (int n = 0; n < e.topo().num_nodes(); ++n) {
    if (n == e.group.node || rail_rows_[n] == 0) continue;
    const int sender = e.group.global_rank(n, e.group.local_rank);
    received_sums_->require_intact(n, sender, e.rail_bytes(rail_rows_[n]));
  }
}

void DispatchOp::finish() {
  if (engine_.device) {
    buf_.plan->finish();
    return;
  }
  // A token with several experts on this rank was received once; copy it into its
  // other experts' rows now, locally. The copies go token by token (the token
  // list's entries), so each first row is read from memory once and stays in cache
  // for its other copies. With checksums, a row a node peer wrote is checked by
  // its first such copy (or alone, without one), in the same pass.
  const int L = engine_.topo().max_rows_per_token_rank();
  copies_.clear(mine_.row_bytes);
  if (peer_rows_) copies_.corrupt = peer_rows_->corrupt();
  for (int32_t entry = 0; entry < mine_.layout.num_tokens(); ++entry) {
    const int32_t* rows = mine_.token_rows + static_cast<std::size_t>(entry) * L;
    const int32_t f = rows[0];
    if (f < 0) continue;
    int c = 1;
    const BlockChecksum* sum = peer_rows_ ? peer_rows_->peer_written(mine_, f) : nullptr;
    if (sum != nullptr) {
      const bool copy = L > 1 && rows[1] >= 0;
      copies_.add(mine_.row(f), copy ? mine_.row(rows[1]) : nullptr, nullptr, sum);
      c += copy ? 1 : 0;
    }
    for (; c < L && rows[c] >= 0; ++c) copies_.add(mine_.row(f), mine_.row(rows[c]));
  }
  buf_.mover->copy(copies_);
}

// Once the rows this rank signed landed, before the flag that shows them
// (fault injection may flip a bit in one).
void DispatchOp::publish_signed_rows() {
  if (!engine_.device) {
    peer_rows_->publish();
    return;
  }
  DevicePlanSteps& plan = *buf_.plan;
  if (peer_rows_->flip_due(plan.signed_any())) plan.flip_signed_row_bit(mine_.row_bytes);
}

// Once the owner's check ran (the mover is idle): throws if a row a node peer
// wrote into this rank's slot arrived corrupted.
void DispatchOp::raise_if_row_corrupt() {
  if (!engine_.device) {
    peer_rows_->raise_if_dispatch_row_corrupt(mine_);
    return;
  }
  const std::optional<PeerRowMismatch> m = buf_.plan->checksum_mismatch();
  if (!m) return;
  // The row's metadata for the message, from GPU memory (the error path only).
  int32_t source = -1, token = -1;
  buf_.mover->download(&source, mine_.src_rank + m->row, sizeof source);
  buf_.mover->download(&token, mine_.src_token + m->row, sizeof token);
  peer_rows_->raise_dispatch_row_mismatch(m->row, m->got, m->expected, mine_.row_bytes, source, token);
}

std::shared_ptr<const ReusableLayout> DispatchOp::reusable_layout() const {
  if (reused_) return reused_;
  auto layout = std::make_shared<ReusableLayout>();
  layout->exchange = std::shared_ptr<const void>(engine_.shared_from_this());
  layout->origin = seq_;
  layout->saved = save_layout(buf_.routes, mine_.layout, rail_rows_);
  return layout;
}

// In the slot, in the exchange's memory space (with device memory, GPU memory the
// finish kernel completed).
DispatchOp::RowMetadata DispatchOp::row_metadata() const { return {mine_.weight, mine_.src_rank, mine_.src_token}; }

void DispatchOp::decode_rows(void* out, DType dtype) const {
  const Engine& e = engine_;
  const int H = e.config().hidden;
  const std::size_t out_row = static_cast<std::size_t>(H) * dtype_size(dtype);
  const RecvLayoutView& layout = mine_.layout;
  RowMover& mover = *buf_.mover;
  // Each segment's real rows come first, its padding after.
  for (int j = 0; j < layout.num_local_experts; ++j) {
    const int64_t first = layout.expert_offset[j];
    mover.decode(e.config().dispatch_format, mine_.row(first), layout.expert_count[j], H,
                 static_cast<std::byte*>(out) + first * out_row, dtype);
  }
  mover.synchronize();
}

bool DispatchOp::advance() {
  bool moved = false;
  Engine& e = engine_;
  if (state_ == State::kLayout) {
    // Packing copies every remote row: it runs on the first progress step (the
    // progress thread, when on) rather than in the caller's dispatch_begin.
    if (!rail_packed_) {
      if (!rows_encoded_) encode_routed_tokens();
      pack_rail_sends();
      moved = true;
    }
    const std::vector<int>& arrived = layout_reqs_.test_some();
    if (!arrived.empty()) {
      note_layout_arrivals(arrived);
      moved = true;
    }
    if (layout_reqs_.all_done()) {
      on_layout_complete();
      state_ = State::kNodeLayout;
      moved = true;
    }
  }
  // Each chunk of the rail blocks goes as soon as it is packed (and its receiver
  // cleared it), while this rank goes on with the phases below.
  moved = post_cleared_rail_sends() || moved;
  if (state_ == State::kLayout) return moved;
  if (state_ == State::kNodeLayout) {
    if (e.first_local_behind(slot_, &SlotFlags::layout_ready, seq_) >= 0) return moved;
    const int me = e.group.node;
    const TokenRoutes& routes = buf_.routes;
    write_source(TokenSource{e.group.rank, me, routes.node_count(me),
                             routes.lists_on_device ? nullptr : routes.node_begin(me), nullptr, nullptr});
    state_ = State::kForward;
    moved = true;
  }
  if (state_ == State::kForward) {
    for (int i : rail_recvs_->test_some()) {
      moved = true;
      const IncomingBlocks::Chunk& c = rail_in_.chunk(i);
      // With device memory each chunk goes on to the GPU as it lands (unless the
      // tier wrote it there).
      if (e.device && !e.rails_on_device()) {
        buf_.mover->copy_bytes(buf_.rail_recv_staged + c.offset, buf_.rail_recv.data() + c.offset, c.bytes);
      }
      if (!rail_in_.arrived(i)) continue;
      const int n = c.node;
      const std::size_t at = block_offset(n, e.group.node, e.rail_block_bytes());
      const std::byte* block = buf_.rail_recv.data() + at;
      const std::size_t bytes = e.rail_bytes(rail_rows_[n]);
      const int sender = rail_recvs_->peer(i);
      // With device memory the block is checked whole before the GPU reads it; on
      // the host, by the pass that copies its rows (checked in kWritten).
      if (received_sums_ && e.device) received_sums_->require_intact(n, sender, block, bytes);
      try {
        write_source(
            TokenSource{sender, n, rail_rows_[n], nullptr, block, e.device ? buf_.rail_recv_staged + at : nullptr});
      } catch (const Error&) {
        // Records that make no sense (an expert of another node, too many rows) may
        // be a corrupted block: say so if it is.
        if (received_sums_) received_sums_->require_intact(n, sender, block, bytes);
        throw;
      }
    }
    if (rail_in_.blocks_left() > 0) return moved;
    state_ = State::kWritten;
    moved = true;
  }
  if (state_ == State::kWritten) {
    // Node peers read the rows once the flag says so: after they landed.
    if (!buf_.mover->idle()) return moved;
    if (e.device) {
      if (verdict_pending_) raise_if_routing_rejected();
      const std::string why = buf_.plan->placement_error();
      EPCOMM_REQUIRE(why.empty(), kMismatch, why);
    }
    if (received_sums_ && !e.device) require_received_blocks_intact();
    if (peer_rows_) publish_signed_rows();
    store_flag(mine_.flags->writes_done, seq_);
    state_ = State::kArrive;
    moved = true;
  }
  if (state_ == State::kArrive) {
    if (!rail_sends_->test_some().empty()) moved = true;
    if (!rail_blocks_.all_sent() || !rail_sends_->all_done()) return moved;
    if (e.first_local_behind(slot_, &SlotFlags::writes_done, seq_) >= 0) return moved;
    finish();
    state_ = State::kFinish;
    moved = true;
  }
  if (state_ == State::kFinish) {
    if (!buf_.mover->idle()) return moved;
    if (peer_rows_) raise_if_row_corrupt();
    state_ = State::kDone;
    mark_done();
    moved = true;
  }
  return moved;
}

std::string DispatchOp::phase() const {
  switch (state_) {
    case State::kLayout:
    case State::kNodeLayout: return "layout";
    case State::kForward: return "dispatch";
    case State::kWritten: return "dispatch (rows in flight on the GPU)";
    case State::kArrive: return "forward";
    case State::kFinish: return "finish (local copies on the GPU)";
    case State::kDone: return "done";
  }
  return "?";
}

std::string DispatchOp::outstanding() const {
  switch (state_) {
    case State::kLayout: return layout_reqs_.pending_peers();
    case State::kNodeLayout: return engine_.local_ranks_behind(slot_, &SlotFlags::layout_ready, seq_);
    case State::kForward: return rail_recvs_->pending_peers();
    case State::kWritten:
    case State::kFinish: return "none (this rank's GPU work)";
    case State::kArrive: {
      std::string s = engine_.local_ranks_behind(slot_, &SlotFlags::writes_done, seq_);
      std::string sends = rail_sends_->pending_peers();
      const std::string unsent = rail_blocks_.waiting(
          [this](int n) { return engine_.group.global_rank(n, engine_.group.local_rank); }, "clear to send");
      if (!unsent.empty()) sends += (sends.empty() ? "" : ", ") + unsent;
      return s.empty() ? sends : sends.empty() ? s : s + ", " + sends;
    }
    case State::kDone: return "";
  }
  return "";
}

}  // namespace epcomm::detail
