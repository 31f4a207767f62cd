// SPDX-License-Identifier: MIT
// The exchange's plan steps on the GPU: where each routed row of a dispatch lands
// on the owners of a node, the owners' local fan-out, and the source lists of a
// combine's sums, computed by kernels from the routing and the receive layouts
// instead of by the host row by row. Each gives exactly the positions and orders
// of the host plan (runtime/src/plan/row_placement.hpp and the combine op), so the
// device exchange stays bit-identical to the host one. Like cuda_rows.hpp, no CUDA
// type appears here: streams are cudaStream_t passed as void*, every call only
// enqueues work, and every pointer is memory the stream's GPU can address (its
// own, a node peer's through CUDA IPC, or pinned host memory).
#pragma once

#include <epcomm/types.hpp>

#include <cstddef>
#include <cstdint>

namespace epcomm::kernels::cuda {

// One slot of one owner rank as kernels address it: its received rows, expert
// outputs and owner partials, and the row metadata a dispatch writes
// (runtime/src/exchange/slot_layout.hpp).
struct SlotArrays {
  uint8_t* rows;
  uint8_t* expert_out;
  // Combine's owner partials node peers pushed to this rank as their forwarder
  // (runtime/src/plan/pushed_partials.hpp), combine format.
  uint8_t* partials;
  int32_t* src_rank;
  int32_t* src_token;
  float* weight;
  int32_t* first_row;   // the row holding the payload of each row
  int32_t* token_rows;  // [tokens][max_rows_per_token]: each received token's rows, -1 padded
  // With node peer checksums (ExchangeConfig::checksum), else null: the CRC32C of
  // each row a node peer wrote ([rows]) and of each partial pushed here.
  uint32_t* row_sum;
  uint32_t* partial_sum;
};

// What the node peer checksum kernels tell the host: a record in pinned host
// memory mapped for the GPU, read once the stream drained (no synchronisation of
// its own), written by plain stores from the one thread that won a claim in GPU
// memory (atomics on mapped host memory are not portable).
struct ChecksumRecord {
  // 1 once a row failed its check, written after the fields below; the host
  // clears it.
  int32_t found;
  int32_t owner;  // the local rank whose slot holds the row
  int64_t row;    // dispatch: the row; combine: the owner partial's token-list entry
  uint32_t got;   // the CRC32C the row has
  uint32_t expected;  // the CRC32C its writer took
  // The address of one row signed since the host cleared it (0: none), for fault
  // injection (a bit flipped after the checksum was taken).
  unsigned long long signed_row;
};
struct ChecksumReport {
  ChecksumRecord* record;  // pinned host memory
  int32_t* claims;         // GPU memory, [2]: the mismatch's and the signed row's, zeroed with the record
};

// The tokens of one source bound for one node, as the node's writer reads them:
// own input (token i is tokens[i], with its topk_idx / topk_weights rows and its
// payload in a staging matrix indexed by token) or a received inter-node block
// (records of token index, topk ids, topk weights, record_bytes apart, and the
// payload of record i at payload + i * row_bytes).
struct PlacedSource {
  int32_t count = 0;
  int32_t rank = 0;  // the source's global rank
  const int32_t* tokens = nullptr;
  const int32_t* topk_idx = nullptr;
  const float* topk_weights = nullptr;
  const uint8_t* records = nullptr;
  int64_t record_bytes = 0;
  const uint8_t* payload = nullptr;  // row 0 (own input: of token 0; block: of record 0)
  // GPU memory or null: while *rejected is not 0 (count_routes found the routing
  // bad, or its counts not those of a reused layout) nothing is placed or written.
  const int32_t* rejected = nullptr;
};

// What count_routes checks and counts: a source's [num_tokens, topk] routing over
// num_nodes nodes of ranks_per_node ranks, each owning experts_per_rank experts.
struct RouteShape {
  int64_t num_tokens = 0;
  int topk = 1;
  int num_experts = 1;
  int experts_per_rank = 1;
  int ranks_per_node = 1;
  int num_nodes = 1;
};
// counts[0 .. kRouteCountsHeader): the first bad pick's token and k (-1, -1 if
// none), and 1 if the dispatch is rejected (a bad pick, or counts other than
// `expected`), else 0.
constexpr int kRouteCountsHeader = 3;

// The host's build_token_routes on the GPU, for one source. Checks every pick as
// the host does (id in [-1, num_experts), finite weight, no expert twice in a
// token) and finds the first bad one in (token, pick) order; if there is none,
// writes after the header the tokens routed to each expert [num_experts], the
// distinct tokens reaching each rank [num_ranks] and the node offsets
// [num_nodes + 1] of node_tokens, where node n's tokens are, ascending, at
// [offset[n], offset[n + 1]) (each token once per node). expected: null, or a
// reused layout's counts (experts, ranks, then tokens per node) in GPU memory,
// which the counts must equal. The header is also written to report (pinned host
// memory mapped for the GPU, 3 ints), which the host may read once the stream
// passed the kernel without copying the counts. One block; its shared memory is
// route_count_shared_bytes(shape) beside a few hundred bytes of its own, within
// 48 KiB in all.
void count_routes(const int32_t* topk_idx, const float* topk_weights, const RouteShape& shape, const int32_t* expected,
                  int32_t* counts, int32_t* node_tokens, volatile int32_t* report, void* stream);
std::size_t route_count_shared_bytes(const RouteShape& shape);

// The node's shape and the owners' receive layouts as they concern one source:
// owner ld's rows of its local expert j for this source are
// [row_base[ld * J + j], row_end[ld * J + j]) and its token entries
// [token_begin[ld], token_end[ld]).
struct NodeLayouts {
  int ranks_per_node = 1;
  int experts_per_rank = 1;
  int topk = 1;
  int first_expert = 0;  // the node's first expert
  // The writing GPU's local rank: its own rows it writes in full, every row of a
  // token there holding the payload, so the owner's fan-out (finish_rows) copies
  // only the rows node peers wrote. -1: none of the owners is the writer.
  int writer = -1;
  const int32_t* row_base = nullptr;
  const int32_t* row_end = nullptr;
  const int32_t* token_begin = nullptr;
  const int32_t* token_end = nullptr;
};

// Positions of one source's rows on the node (place_source_rows): for token i and
// its topk pick k on the node, row_pos[i * topk + k] = row_base + the number of
// earlier tokens of the source (in its order) that chose that expert; for each owner
// ld the token reaches, entry[i * ranks_per_node + ld] = token_begin + the number of
// earlier tokens reaching that owner, -1 for the owners it does not reach (row_pos
// of picks off the node is left unwritten; a second pick of the same expert gets
// -1). A position past its end (the source sends more than its layout announced)
// is -1 and sets
// error[0] (error: int32_t[2], pinned host memory read once the stream drained)
// to 1 + the column (local expert ld * J + j of the node, or R * J + owner ld) and
// error[1] to the source's rank; error is left as it was otherwise.
void place_rows(const PlacedSource& source, const NodeLayouts& layouts, int32_t* row_pos, int32_t* entry,
                volatile int32_t* error, void* stream);

// Writes the placed rows into the owners' slots (owners: device array of
// ranks_per_node): the payload once per owner, at the first of its rows there
// (lowest expert), where first_row points its other rows; on the writer's own
// slot (layouts.writer) into every row, each its own first_row (local memory,
// written while the peers' rows cross NVLink); and every row's metadata and the owner's token_rows entry
// (rows in expert order, -1 padded to max_rows_per_token). Also the forwarding
// record combine reads back, for handled token first_handled + i: route_count, and
// (local rank, token entry) per reached owner in local-rank order, ranks_per_node
// apart. An owner whose rows of the token were not all placed is skipped.
// checksums (record null: off): each payload written into a node peer's slot (an owner
// other than layouts.writer) is signed, its CRC32C taken from the bytes copied
// by the warp that copies them, into that owner's row_sum at the row; the
// record's signed_row gets one such row.
void write_placed_rows(const PlacedSource& source, const NodeLayouts& layouts, const SlotArrays* owners,
                       int max_rows_per_token, int64_t row_bytes, const int32_t* row_pos, const int32_t* entry,
                       int64_t first_handled, int32_t* route_count, int32_t* route_local, int32_t* route_entry,
                       ChecksumReport checksums, void* stream);

// The owner's side once every writer is done, for rows [0, expert_offset[J]):
// a row whose first_row is another copies that row's payload (a token with several
// experts here that a node peer wrote arrived once); a padding row (past expert_count of its segment)
// gets src_rank = src_token = first_row = -1, weight 0 and a zero payload.
// expert_offset / expert_count: this GPU's copies of the layout. checksums
// (record null: off): every real row that holds a payload (first_row[r] == r)
// written by a node peer (its source's forwarder, the local rank src_rank[r] %
// ranks_per_node, is not local_rank) must have CRC32C row_sum[r]; the first that
// does not goes into the report (owner local_rank).
void finish_rows(const SlotArrays& mine, const int64_t* expert_offset, const int64_t* expert_count,
                 int num_local_experts, int64_t rows, int64_t row_bytes, int ranks_per_node, int local_rank,
                 ChecksumReport checksums, void* stream);

// Combine's owner partials, pushed to their forwarders: for i < count, with entry
// = entries[i] of this owner's token list (mine) and s = sources[i] the source of
// that token, row push_base[s] + entry of the owner partials of owners[s %
// ranks_per_node] (the forwarder's slot: a node peer's GPU memory over CUDA IPC,
// or mapped shared memory) = encode(partial_format, the FP32 sum from zero over
// the entry's rows p in token_rows order of (weighted ? weight[p] : 1) *
// decode(out_format, expert_out row p)), multiply and add rounded separately.
// owners: device array of ranks_per_node; push_base: device array by source
// (runtime/src/plan/pushed_partials.hpp). expert_out: this GPU's expert outputs
// in the dispatch's row order (out_format, the dtype's plain format). *bad_index
// must be -1 on entry; it becomes i * hidden + column of the first element the
// partial format cannot encode (as for encode_rows), else stays -1.
// checksums (record null: off): each partial pushed is signed, from the bytes as
// they landed, into the forwarder's partial_sum at the same row, once its block
// wrote it; the record's signed_row gets one of them.
void sum_owner_partials(Format out_format, Format partial_format, const SlotArrays* owners, int ranks_per_node,
                        const SlotArrays& mine, const uint8_t* expert_out, int max_rows_per_token,
                        const int32_t* entries, const int32_t* sources, const int64_t* push_base, int64_t count,
                        bool weighted, int hidden, int64_t* bad_index, ChecksumReport checksums, void* stream);

// What the forwarder's sums read: the node's slots (owners, device array of
// ranks_per_node; this rank is local_rank), the forwarding record of the tokens it
// wrote (write_placed_rows: route_count, and route_local / route_entry
// ranks_per_node apart), and where the owners pushed their partials of one node's
// tokens: owner ld's partial of its token-list entry e at row push_base[ld] + e of
// this rank's owner partials (push_base: device array of ranks_per_node).
struct RoutedPartials {
  const SlotArrays* owners = nullptr;
  int ranks_per_node = 1;
  int local_rank = 0;
  int max_rows_per_token = 1;
  const int32_t* route_count = nullptr;
  const int32_t* route_local = nullptr;
  const int32_t* route_entry = nullptr;
  const int64_t* push_base = nullptr;
};

// Combine's node partials: acc row d (FP32, [count, hidden]) for handled token h =
// first + d = the sum from zero, over the owners the token reached in route order,
// of this rank's (local_rank's) FP32 subtotal of its rows as sum_owner_partials
// forms it, from expert_out, when the owner is itself, else decode(partial_format,
// the partial that owner pushed here), each added as acc + 1 * part. checksums
// (record null: off): each pushed partial read must have the CRC32C pushed with
// it, checked as the block reads it; the first that does not goes into the report
// (owner: the local rank that pushed it, row: its token-list entry there).
void sum_routed_partials(Format out_format, Format partial_format, const RoutedPartials& routed,
                         const uint8_t* expert_out, int64_t first, int64_t count, bool weighted, int hidden, float* acc,
                         ChecksumReport checksums, void* stream);

// The same node partials summed straight into combine's output where this node is
// the only one any of them concerns: for t < num_tokens, out[t] (out_format, the
// dtype's plain format) = encode(0 + the node partial of handled token first + i)
// where tokens[i] = t in the node's ascending token list tokens[0, listed), +0 for
// a token not on it: bit-identical to sum_routed_partials followed by
// sum_node_partials over the one node. Checksums as for sum_routed_partials.
void sum_routed_to_output(Format out_format, Format partial_format, const RoutedPartials& routed,
                          const uint8_t* expert_out, int64_t first, const int32_t* tokens, int32_t listed,
                          int64_t num_tokens, bool weighted, int hidden, void* out, ChecksumReport checksums,
                          void* stream);

// One node's partials of a source's tokens, for sum_node_partials: the partial of
// the node's i-th token at rows + i * row_bytes, FP32 if f32 (the source's own
// node keeps its partials unencoded), else in the combine format.
struct NodePartials {
  const uint8_t* rows;
  int64_t row_bytes;
  int64_t f32;  // 0 or 1; 64 bits so the struct has no padding
};

// Combine's final sum, one pass: for t < num_tokens, out[t] = the sum in FP32, from
// zero, in node order, of decode(token t's partial) over the nodes whose list holds
// t, encoded in out_type (a token on no node gets +0). nodes: device array of
// num_nodes; node n's tokens, ascending, are node_tokens[node_offset[n] ..
// node_offset[n + 1]) (node_offset: device array of num_nodes + 1). Bit-identical
// to zeroing an FP32 accumulator, adding each node's partials with weight 1
// (accumulate_*) node by node, and encoding it: the host combine's steps.
void sum_node_partials(Format format, const NodePartials* nodes, int num_nodes, const int32_t* node_offset,
                       const int32_t* node_tokens, int64_t num_tokens, int hidden, DType out_type, void* out,
                       void* stream);

}  // namespace epcomm::kernels::cuda
