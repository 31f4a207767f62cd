// SPDX-License-Identifier: MIT
#include "exchange/combine_op.hpp"

#include <algorithm>
#include <cstring>

#include "plan/pushed_partials.hpp"
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
  if (e.config().checksum) {
    sent_sums_.emplace(BlockKind::kCombine, seq);
    received_sums_.emplace(BlockKind::kCombine, seq);
    received_sums_->reset(e.topo().num_nodes(), crow);
  }
  for (int n = 0; n < e.topo().num_nodes(); ++n) {
    const int32_t count = routes.node_count(n);
    if (n == e.group.node || count == 0) continue;
    BlockChecksum* sum = nullptr;
    if (received_sums_) {
      received_sums_->add(n, count);
      sum = received_sums_->sent(n);
    }
    partials_in_.receive(net, *recvs_, BlockKind::kCombine, buf_.combine_recv_region,
                         block_offset(n, e.group.node, e.combine_block_bytes()), n, count * crow, seq_, sum);
    if (net.needs_clear_to_send()) net.announce_ready(n, seq_);
  }
  buf_.mover->after(options.stream);
  if (e.device) e.device->hold(options.stream, seq);
  if (e.node_checksums) peer_rows_.emplace(*e.node_checksums, "owner partial row", seq);
}

CombineOp::~CombineOp() {
  abandon_requests({recvs_.get(), sends_.get()});
  route_->combine_in_flight = false;
}

// As owner: for every entry of this rank's token list that a node peer forwards
// (the rank of this node with its source's local index: a source of this node
// forwards its own tokens, a remote source's rows arrive at its rail peer), the
// FP32 sum over the token's rows here, in expert order, of weight * output, encoded
// in the combine format into the slot's owner partials, which that peer reads: one
// row per (token, owner) crosses to the forwarder instead of one per expert row.
// The sums read the caller's expert_out where it is: nothing is staged. With
// device memory the owner pushes each partial straight into its forwarder's slot
// (plan/pushed_partials.hpp), where the forwarder reads it locally.
void CombineOp::sum_owner_partials() {
  Engine& e = engine_;
  const int H = e.config().hidden, R = e.topo().ranks_per_node, L = e.topo().max_rows_per_token_rank();
  const Format out_format = kernels::plain_format(e.config().dtype);
  const SlotView& mine = route_->output();
  const auto* expert_out = static_cast<const std::byte*>(expert_out_);
  if (e.device) {
    DevicePlanSteps& plan = *buf_.plan;
    if (peer_rows_) plan.begin_checksums();
    // A dispatch's combines share its pushes: computed and uploaded once.
    const DevicePlanSteps::PartialPushes* pushes = plan.partial_pushes(route_->seq());
    if (pushes == nullptr) pushes = &plan.set_partial_pushes(route_->seq(), partial_pushes());
    if (pushes->entries.empty()) return;
    plan.sum_owner_partials(out_format, e.config().combine_format, expert_out, options_.weighted);
    raise_if_owner_partial_unencodable(pushes->entries, 0);
    return;
  }
  const RecvLayoutView& layout = mine.layout;
  std::vector<int32_t> entries;
  for (int s = 0; s < layout.num_sources; ++s) {
    if (s % R == e.group.local_rank) continue;
    for (int32_t t = layout.token_base[s]; t < layout.token_base[s + 1]; ++t) entries.push_back(t);
  }
  if (entries.empty()) return;
  // Runs of consecutive entries, a scratch's worth at a time, encoded back to back.
  RowMover& mover = *buf_.mover;
  const int64_t batch = std::max<int64_t>(1, buf_.partial_acc_rows);
  RowSums sums;
  for (std::size_t b0 = 0; b0 < entries.size();) {
    std::size_t b1 = b0 + 1;
    while (b1 < entries.size() && static_cast<int64_t>(b1 - b0) < batch && entries[b1] == entries[b1 - 1] + 1) ++b1;
    sums.clear();
    for (std::size_t i = b0; i < b1; ++i) {
      const int32_t* rows = mine.token_rows + static_cast<std::size_t>(entries[i]) * L;
      for (int x = 0; x < L && rows[x] >= 0; ++x) {
        sums.add_source(expert_out + static_cast<std::size_t>(rows[x]) * mine.out_row_bytes,
                        options_.weighted ? mine.weight[rows[x]] : 1.0f);
      }
      sums.end_destination();
    }
    mover.accumulate(out_format, sums, H, true, buf_.partial_acc);
    // With checksums each partial is signed as it is encoded (a run's entries,
    // hence their checksums, are consecutive).
    BlockChecksum* signs = peer_rows_ ? peer_rows_->owner_partial_sums(mine, entries[b0]) : nullptr;
    mover.encode(e.config().combine_format, buf_.partial_acc, DType::kF32, static_cast<int64_t>(b1 - b0), H,
                 mine.partial_row(entries[b0]), signs);
    raise_if_owner_partial_unencodable(entries, static_cast<int64_t>(b0));
    b0 = b1;
  }
}

// Where this dispatch's combines push owner partials, from the node's receive
// layouts: this rank's entries that node peers forward (those of sources whose
// local index is another's), and the bases of the rows pushed out and in.
DevicePlanSteps::PartialPushes CombineOp::partial_pushes() const {
  const Engine& e = engine_;
  const int R = e.topo().ranks_per_node, N = e.topo().num_nodes(), me = e.group.local_rank;
  const std::vector<SlotView> owners = node_slots();
  std::vector<const int32_t*> token_base;
  for (const SlotView& o : owners) token_base.push_back(o.layout.token_base);
  DevicePlanSteps::PartialPushes p;
  p.to_forwarders.assign(static_cast<std::size_t>(e.topo().num_ranks), 0);
  for (int f = 0; f < R; ++f) {
    if (f == me) continue;
    const std::vector<int64_t> bases = pushed_partial_bases(f, token_base, N);
    for (int n = 0; n < N; ++n) {
      p.to_forwarders[e.group.global_rank(n, f)] = bases[static_cast<std::size_t>(n) * R + me];
    }
  }
  p.from_owners = pushed_partial_bases(me, token_base, N);
  const RecvLayoutView& layout = owners[me].layout;
  for (int s = 0; s < layout.num_sources; ++s) {
    if (s % R == me) continue;
    for (int32_t t = layout.token_base[s]; t < layout.token_base[s + 1]; ++t) {
      p.entries.push_back(t);
      p.sources.push_back(s);
    }
  }
  return p;
}

// After the encoding of the owner partials of entries [first, ...): a value the
// combine format cannot encode (LogFMT: not finite) is an error naming the token.
void CombineOp::raise_if_owner_partial_unencodable(const std::vector<int32_t>& entries, int64_t first) {
  Engine& e = engine_;
  if (logfmt_bits(e.config().combine_format) == 0) return;  // only LogFMT can fail
  const int H = e.config().hidden, L = e.topo().max_rows_per_token_rank();
  RowMover& mover = *buf_.mover;
  const int64_t bad = e.device ? buf_.plan->owner_partials_bad() : mover.first_bad();
  if (bad < 0) return;
  const SlotView& mine = route_->output();
  const int32_t entry = entries[static_cast<std::size_t>(first + bad / H)];
  int32_t row = 0, source = -1, token = -1;
  mover.download(&row, mine.token_rows + static_cast<std::size_t>(entry) * L, sizeof row);
  mover.download(&source, mine.src_rank + row, sizeof source);
  mover.download(&token, mine.src_token + row, sizeof token);
  EPCOMM_FAIL(kInvalidArgument, "combine: the owner partial sum for token "
                                    << token << " of rank " << source << " is not finite at column " << bad % H
                                    << " (expert outputs hold a non-finite value), which combine_format "
                                    << to_string(e.config().combine_format) << " cannot encode");
}

// Once this rank's owner partials are signed (the mover is idle), before the
// flag that shows them (fault injection may flip a bit in one).
void CombineOp::publish_owner_partials() {
  if (!engine_.device) {
    peer_rows_->publish();
    return;
  }
  DevicePlanSteps& plan = *buf_.plan;
  if (peer_rows_->flip_due(plan.signed_any())) plan.flip_signed_row_bit(route_->output().partial_row_bytes);
}

// Once the forwarder's checks ran (the mover is idle): throws if an owner
// partial it read arrived corrupted.
void CombineOp::raise_if_owner_partial_corrupt() {
  Engine& e = engine_;
  if (!e.device) {
    peer_rows_->raise_if_owner_partial_corrupt(node_slots());
    return;
  }
  const std::optional<PeerRowMismatch> m = buf_.plan->checksum_mismatch();
  if (!m) return;
  // The token's first row in the owner's slot names it (GPU memory, the error
  // path only).
  const SlotView owner = e.slot_view(m->owner, route_->slot());
  const int L = e.topo().max_rows_per_token_rank();
  int32_t row = 0, source = -1, token = -1;
  RowMover& mover = *buf_.mover;
  mover.download(&row, owner.token_rows + static_cast<std::size_t>(m->row) * L, sizeof row);
  if (row >= 0) {
    mover.download(&source, owner.src_rank + row, sizeof source);
    mover.download(&token, owner.src_token + row, sizeof token);
  }
  // The owner pushed it into this rank's slot.
  peer_rows_->raise_owner_partial_mismatch(m->owner, e.group.local_rank, m->row, m->got, m->expected,
                                           owner.partial_row_bytes, source, token);
}

std::vector<SlotView> CombineOp::node_slots() const {
  std::vector<SlotView> owners;
  for (int ld = 0; ld < engine_.topo().ranks_per_node; ++ld) owners.push_back(engine_.slot_view(ld, route_->slot()));
  return owners;
}

// As forwarder: for every token this rank wrote to its node in the dispatch, the
// sum over every local owner it reached, owners in route order, of that owner's
// part: this rank's own rows' FP32 subtotal (rows in expert order, never encoded)
// or the owner partial the peer encoded; one partial per (token, node). Keep it for
// own tokens, encode it for remote ones, to be sent back once their source is
// ready. Only bytes that leave a rank are rounded to the combine format.
void CombineOp::reduce_node_partials() {
  Engine& e = engine_;
  const int H = e.config().hidden, me = e.group.node;
  const Format out_format = kernels::plain_format(e.config().dtype);
  const std::size_t crow = e.combine_row_bytes();
  const std::vector<SlotView> owners = node_slots();
  std::size_t send_at = 0;
  partial_blocks_.reset(e.topo().num_nodes());
  if (sent_sums_) sent_sums_->reset(e.topo().num_nodes(), crow);
  stats.intranode_bytes += route_->tokens_to_node_peers() * static_cast<int64_t>(crow);
  if (!e.device) {
    const TokenRoutes& routes = buf_.routes;
    std::vector<int32_t> nodes(static_cast<std::size_t>(routes.num_tokens), 0);
    for (int n = 0; n < e.topo().num_nodes(); ++n) {
      for (int32_t i = 0; i < routes.node_count(n); ++i) ++nodes[routes.node_begin(n)[i]];
    }
    own_only_.assign(nodes.size(), 0);
    for (int32_t i = 0; i < routes.node_count(me); ++i) {
      const int32_t t = routes.node_begin(me)[i];
      own_only_[t] = nodes[t] == 1;
    }
  }
  for (int n = 0; n < e.topo().num_nodes(); ++n) {
    const int32_t first = buf_.handled_offset[n], count = buf_.handled_offset[n + 1] - first;
    // The device sums a node's tokens at once; the host a scratch's worth at a
    // time (its own subtotals and remote partials live in cache-sized scratches).
    const int64_t batch = e.device ? std::max<int64_t>(count, 1) : std::max<int64_t>(1, buf_.partial_acc_rows);
    if (sent_sums_ && n != me) sent_sums_->add(n, count);
    for (int64_t b0 = 0; b0 < count; b0 += batch) {
      const int64_t b1 = std::min<int64_t>(count, b0 + batch);
      if (e.device) {
        // The same sums from the forwarding record on the GPU.
        float* acc = n == me ? buf_.own_partials + b0 * H : buf_.partial_acc;
        buf_.plan->sum_routed(out_format, e.config().combine_format, static_cast<const std::byte*>(expert_out_), n,
                              first + b0, b1 - b0, options_.weighted, acc);
      } else {
        sum_routed_on_host(first + b0, first + b1, owners, buf_.partial_acc);
      }
      if (n != me) {
        encode_remote_partials(n, first + b0, b1 - b0, send_at, b0 * crow);
      } else if (!e.device) {
        keep_own_partials(b0, b1);
      }
    }
    if (n == me || count == 0) continue;
    partial_blocks_.add(n, send_at, count * crow);
    send_at += count * crow;
  }
}

// Device memory, no partial crossing nodes: the node partials of this rank's
// tokens are its combine's output, summed and stored in one pass (no FP32 node
// partials in memory, no final-sum pass over them).
void CombineOp::reduce_into_output() {
  Engine& e = engine_;
  partial_blocks_.reset(e.topo().num_nodes());
  stats.intranode_bytes += route_->tokens_to_node_peers() * static_cast<int64_t>(e.combine_row_bytes());
  buf_.plan->sum_routed_to_output(e.config().combine_format, static_cast<const std::byte*>(expert_out_),
                                  buf_.handled_offset[e.group.node], options_.weighted, e.config().dtype, out_);
}

// Host: the node partials of own tokens [b0, b1) of this node's list, summed in
// partial_acc: encoded into out for a token that reached no other node, else
// kept in own_partials for the final sum; consecutive rows of either kind at once.
void CombineOp::keep_own_partials(int64_t b0, int64_t b1) {
  const Engine& e = engine_;
  const int H = e.config().hidden;
  const int32_t* tokens = buf_.routes.node_begin(e.group.node);
  RowMover& mover = *buf_.mover;
  for (int64_t i = b0; i < b1;) {
    const bool only = own_only_[tokens[i]] != 0;
    int64_t j = i + 1;
    while (j < b1 && (own_only_[tokens[j]] != 0) == only && (!only || tokens[j] == tokens[j - 1] + 1)) ++j;
    const float* acc = buf_.partial_acc + (i - b0) * H;
    if (only) {
      encode_output(acc, tokens[i], j - i);
    } else {
      mover.copy_bytes(buf_.own_partials + i * H, acc, static_cast<std::size_t>(j - i) * H * sizeof(float));
    }
    i = j;
  }
}

// out rows [token, token + count) = the FP32 rows at acc in the caller's dtype.
void CombineOp::encode_output(const float* acc, int64_t token, int64_t count) {
  const Engine& e = engine_;
  const std::size_t out_row = static_cast<std::size_t>(e.config().hidden) * dtype_size(e.config().dtype);
  buf_.mover->encode(kernels::plain_format(e.config().dtype), acc, DType::kF32, count, e.config().hidden,
                     static_cast<std::byte*>(out_) + token * out_row, nullptr);
}

// acc rows = the node partials of handled tokens [h0, h1), in passes that keep
// each token's order: the own rows' subtotals (into own_subtotals), then the
// owners before this rank in route order, this rank's subtotal, the owners after.
void CombineOp::sum_routed_on_host(int64_t h0, int64_t h1, const std::vector<SlotView>& owners, float* acc) {
  Engine& e = engine_;
  const int H = e.config().hidden, R = e.topo().ranks_per_node, L = e.topo().max_rows_per_token_rank();
  const int me = e.group.local_rank;
  const Format cf = e.config().combine_format;
  const SlotView& mine = owners[me];
  const auto* expert_out = static_cast<const std::byte*>(expert_out_);
  RowSums own, before, self, after;
  if (peer_rows_) before.corrupt = after.corrupt = peer_rows_->corrupt();
  for (int64_t i = h0; i < h1; ++i) {
    const std::size_t h = static_cast<std::size_t>(i);
    bool past_self = false;
    for (int c = 0; c < buf_.route_count[h]; ++c) {
      const int ld = buf_.route_local[h * R + c];
      const int32_t entry = buf_.route_entry[h * R + c];
      if (ld == me) {
        const int32_t* rows = mine.token_rows + static_cast<std::size_t>(entry) * L;
        for (int x = 0; x < L && rows[x] >= 0; ++x) {
          own.add_source(expert_out + static_cast<std::size_t>(rows[x]) * mine.out_row_bytes,
                         options_.weighted ? mine.weight[rows[x]] : 1.0f);
        }
        self.add_source(buf_.own_subtotals + (i - h0) * H, 1.0f);
        past_self = true;
      } else {
        const SlotView& owner = owners[ld];
        const BlockChecksum* sum = peer_rows_ ? peer_rows_->owner_partial_sum(owner, entry) : nullptr;
        (past_self ? after : before).add_source(owner.partial_row(entry), 1.0f, sum);
      }
    }
    for (RowSums* s : {&own, &before, &self, &after}) s->end_destination();
  }
  RowMover& mover = *buf_.mover;
  if (!own.rows.empty()) mover.accumulate(kernels::plain_format(e.config().dtype), own, H, true, buf_.own_subtotals);
  // The first pass run starts every row from zero; a pass with no source at all
  // is skipped (adding nothing), unless no other pass runs.
  bool started = false;
  const auto pass = [&](Format format, const RowSums& sums, bool last) {
    if (sums.rows.empty() && (started || !last)) return;
    mover.accumulate(format, sums, H, !started, acc);
    started = true;
  };
  pass(cf, before, false);
  pass(Format::kF32, self, false);
  pass(cf, after, true);
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
  // With checksums on the host each row is signed as it is encoded.
  BlockChecksum* sums = sent_sums_ && !e.device ? sent_sums_->row(node, static_cast<int32_t>(at / crow)) : nullptr;
  for (int64_t done = 0; done < count;) {
    // Up to the end of the chunk the piece starts in (the rest without chunks).
    const std::size_t from = at + done * crow, room = chunk == 0 ? 0 : (from / chunk + 1) * chunk - from;
    const int64_t rows = chunk == 0 ? count - done : std::min<int64_t>(count - done, (room + crow - 1) / crow);
    mover.encode(e.config().combine_format, buf_.partial_acc + done * H, DType::kF32, rows, H,
                 buf_.combine_send_block + block + from, sums ? sums + done : nullptr);
    done += rows;
    partial_blocks_.written_at(node, at + done * crow, mover.mark());
  }
  if (logfmt_bits(e.config().combine_format) == 0) return;  // only LogFMT can fail
  const int64_t bad = mover.first_bad();
  if (bad < 0) return;
  // A corrupted owner partial may be what made the partial unencodable.
  if (peer_rows_) raise_if_owner_partial_corrupt();
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
  // With checksums: the combination of the sums the encode took, or with device
  // memory (the GPU encodes) a hash of the whole block.
  std::function<BlockChecksum(int, std::size_t, std::size_t)> checksum;
  if (sent_sums_ && e.device) {
    checksum = [this](int, std::size_t offset, std::size_t bytes) {
      return block_checksum(buf_.combine_send.data() + offset, bytes);
    };
  } else if (sent_sums_) {
    checksum = [this](int node, std::size_t, std::size_t) { return sent_sums_->block(node); };
  }
  return partial_blocks_.send_cleared(
      {net, *sends_, BlockKind::kCombine, buf_.combine_send_region, buf_.combine_recv_region, e.group.node,
       e.combine_block_bytes(), seq_, *buf_.mover, std::move(checksum)},
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
  if (e.device) {
    // The same sum per token in registers, written once in the output dtype, each
    // token's partials found on the GPU from the routes.
    std::vector<DevicePlanSteps::NodePartialRows> nodes(e.topo().num_nodes());
    for (int n = 0; n < e.topo().num_nodes(); ++n) {
      if (n == me) {
        nodes[n] = {buf_.own_partials, static_cast<std::size_t>(H) * sizeof(float)};
      } else {
        nodes[n] = {buf_.combine_recv_staged + block_offset(n, me, e.combine_block_bytes()), crow};
      }
    }
    buf_.plan->sum_node_partials(e.config().combine_format, nodes, e.config().dtype, out_);
    return;
  }
  // A scratch's worth of tokens at a time (in cache, like the forwarder's sums),
  // one pass per node adding that node's partial to its tokens' rows, the first
  // pass starting every row from zero; then the batch is encoded into out, but for
  // the tokens whose output the forwarder's sum wrote (own_only_). With checksums a
  // received partial is signed for its block's check as it is summed.
  const int N = e.topo().num_nodes();
  std::vector<const void*> partial(static_cast<std::size_t>(N) * T, nullptr);  // [node][token]
  std::vector<BlockChecksum*> sign(partial.size(), nullptr);
  for (int n = 0; n < N; ++n) {
    const int32_t* tokens = routes.node_begin(n);
    const std::size_t region = block_offset(n, me, e.combine_block_bytes());
    for (int32_t i = 0; i < routes.node_count(n); ++i) {
      if (own_only_[tokens[i]] != 0) continue;  // in out already
      const std::size_t at = static_cast<std::size_t>(n) * T + tokens[i];
      partial[at] = n == me ? static_cast<const void*>(buf_.own_partials + static_cast<std::size_t>(i) * H)
                            : buf_.combine_recv.data() + region + i * crow;
      if (n != me && received_sums_) sign[at] = received_sums_->row(n, i);
    }
  }
  const int64_t batch = std::max<int64_t>(1, buf_.partial_acc_rows);
  RowSums sums;
  for (int64_t t0 = 0; t0 < T; t0 += batch) {
    const int64_t t1 = std::min<int64_t>(T, t0 + batch);
    if (std::all_of(own_only_.begin() + t0, own_only_.begin() + t1, [](char only) { return only != 0; })) continue;
    float* acc = buf_.partial_acc;
    bool started = false;
    for (int n = 0; n < N; ++n) {
      sums.clear();
      for (int64_t t = t0; t < t1; ++t) {
        const std::size_t at = static_cast<std::size_t>(n) * T + t;
        if (partial[at] != nullptr) sums.add_source(partial[at], 1.0f, nullptr, sign[at]);
        sums.end_destination();
      }
      if (sums.rows.empty()) continue;
      mover.accumulate(n == me ? Format::kF32 : e.config().combine_format, sums, H, !started, acc);
      started = true;
    }
    // Tokens routed to no expert at all sum to zero.
    if (!started) mover.zero(acc, static_cast<std::size_t>(t1 - t0) * H * sizeof(float));
    for (int64_t t = t0; t < t1;) {
      int64_t u = t;
      while (u < t1 && own_only_[u] == 0) ++u;
      if (u > t) encode_output(acc + (t - t0) * H, t, u - t);
      t = u + 1;
    }
  }
}

// Each received block must make the checksum its sender sent: hashed `whole`, or
// as the summing pass signed its rows.
void CombineOp::require_received_blocks_intact(bool whole) const {
  const Engine& e = engine_;
  const std::size_t crow = e.combine_row_bytes();
  for (int n = 0; n < e.topo().num_nodes(); ++n) {
    const int32_t count = buf_.routes.node_count(n);
    if (n == e.group.node || count == 0) continue;
    const int sender = e.group.global_rank(n, e.group.local_rank);
    if (whole) {
      const std::size_t at = block_offset(n, e.group.node, e.combine_block_bytes());
      received_sums_->require_intact(n, sender, buf_.combine_recv.data() + at, count * crow);
    } else {
      received_sums_->require_intact(n, sender, count * crow);
    }
  }
}

bool CombineOp::partials_all_local() const {
  const Engine& e = engine_;
  for (int n = 0; n < e.topo().num_nodes(); ++n) {
    if (n == e.group.node) continue;
    if (buf_.routes.node_count(n) > 0 || buf_.handled_offset[n + 1] > buf_.handled_offset[n]) return false;
  }
  return true;
}

bool CombineOp::advance() {
  Engine& e = engine_;
  bool moved = false;
  RowMover& mover = *buf_.mover;
  if (state_ == State::kOwner) {
    // Summing reads every expert output: on the first progress step (the progress
    // thread, when on) rather than in the caller's combine_begin.
    if (!owner_partials_enqueued_) {
      sum_owner_partials();
      owner_partials_enqueued_ = true;
      moved = true;
    }
    if (!mover.idle()) return moved;
    if (peer_rows_) publish_owner_partials();
    store_flag(route_->output().flags->outputs_ready, seq_);
    state_ = State::kPartials;
    moved = true;
  }
  if (state_ == State::kPartials) {
    if (e.first_local_behind(route_->slot(), &SlotFlags::outputs_ready, seq_) >= 0) return moved;
    // With no partial crossing nodes (always so on one node), the final sum reads
    // only the own partials just enqueued on the same mover, and no send waits for
    // the mover to drain: the sum follows at once, with no round trip through the
    // host (on the GPU in the same pass). Not with checksums on the host, which
    // must clear the owner partials before anything summed from them is kept; on
    // the GPU the sum goes on, and a mismatch its checks record fails the combine
    // before it completes (the caller trusts out only once wait() returned,
    // docs/failures.md).
    if (e.device && partials_all_local()) {
      reduce_into_output();
      summed_ = true;
    } else {
      reduce_node_partials();
      if (!peer_rows_ && partials_all_local()) {
        sum_node_partials();
        summed_ = true;
      }
    }
    state_ = State::kReduced;
    moved = true;
  }
  if (state_ == State::kReduced) {
    // Without rows to verify first, each chunk goes as soon as it is encoded.
    if (!peer_rows_ && !partial_blocks_.all_sent() && post_ready_sends()) moved = true;
    if (!mover.idle()) return moved;
    // Before anything summed from a corrupted row is sent or kept.
    if (peer_rows_) raise_if_owner_partial_corrupt();
    store_flag(route_->output().flags->outputs_read, seq_);
    state_ = State::kReturn;
    moved = true;
  }
  if (state_ == State::kReturn) {
    if (!partial_blocks_.all_sent() && post_ready_sends()) moved = true;
    for (int i : recvs_->test_some()) {
      moved = true;
      const IncomingBlocks::Chunk& c = partials_in_.chunk(i);
      // With device memory each chunk goes on to the GPU as it lands (unless the
      // tier wrote it there).
      if (e.device && !e.rails_on_device()) {
        mover.copy_bytes(buf_.combine_recv_staged + c.offset, buf_.combine_recv.data() + c.offset, c.bytes);
      }
    }
    if (!sends_->test_some().empty()) moved = true;
    // The final sum as soon as its partials are in: it needs neither the sends'
    // completion nor the node's outputs_read flags; once every block is posted it
    // holds up no send waiting for the mover to drain.
    if (!summed_ && partial_blocks_.all_sent() && recvs_->all_done()) {
      // With device memory the blocks are checked whole before the GPU sums them;
      // on the host, by the summing pass (checked in kSum).
      if (received_sums_ && e.device) require_received_blocks_intact(true);
      sum_node_partials();
      summed_ = true;
      moved = true;
    }
    if (!summed_ || !sends_->all_done()) return moved;
    // Owners may reuse their partials (and the slot) only after every forwarder read them.
    if (e.first_local_behind(route_->slot(), &SlotFlags::outputs_read, seq_) >= 0) return moved;
    state_ = State::kSum;
    moved = true;
  }
  if (state_ == State::kSum) {
    if (!mover.idle()) return moved;
    // Before the caller may read an output summed from a corrupted block.
    if (received_sums_ && !e.device) require_received_blocks_intact(false);
    state_ = State::kDone;
    route_->combine_in_flight = false;
    mark_done();
    moved = true;
  }
  return moved;
}

std::string CombineOp::phase() const {
  switch (state_) {
    case State::kOwner: return "combine (owner partials on the GPU)";
    case State::kReduced: return "combine (node partials on the GPU)";
    case State::kSum: return "combine (final sums on the GPU)";
    default: return "combine";
  }
}

std::string CombineOp::outstanding() const {
  const int slot = route_->slot();
  if (state_ == State::kOwner || state_ == State::kReduced || state_ == State::kSum) {
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
