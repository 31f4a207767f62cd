// SPDX-License-Identifier: MIT
// Where combine's owner partials land when owners push them to their forwarders
// (device memory): each owner writes the partial of every token a node peer
// forwards straight into that forwarder's receive region (SlotView::owner_partials
// of the forwarder's slot), which the forwarder then reads locally. Forwarder f
// handles, per node n, the tokens of source s = n * R + f; its region holds, for n
// in order and within n for each owner ld != f in order, owner ld's partials of
// source s's tokens in the order of ld's token list. Owner and forwarder compute
// the same positions from the node's receive layouts, which every rank of the
// node reads in shared memory: no position crosses between them. Pure.
#pragma once

#include <cstdint>
#include <vector>

namespace epcomm::detail {

// token_base[ld]: local rank ld's token list offsets by source ([num_sources +
// 1]). Returns base[n * R + ld] such that owner ld's partial of its token-list
// entry e, a token of source n * R + forwarder, sits at row base + e of the
// forwarder's region (base[n * R + forwarder] is 0: a forwarder's own rows are
// never pushed). The rows used are [0, the sum of the counts), at most
// (R - 1) * min(max_tokens_per_rank * num_nodes, the longest token list).
std::vector<int64_t> pushed_partial_bases(int forwarder, const std::vector<const int32_t*>& token_base, int num_nodes);

}  // namespace epcomm::detail
