// SPDX-License-Identifier: MIT
#include "device/device_plan_steps.hpp"

#include <cuda_runtime_api.h>

#include <epcomm/formats.hpp>

#include <algorithm>
#include <cstring>
#include <sstream>

#include "device/cuda_call.hpp"
#include "device/ipc_memory.hpp"
#include "epcomm_kernels/codec.hpp"
#include "epcomm_kernels/cuda_plan.hpp"
#include "epcomm_kernels/cuda_rows.hpp"
#include "plan/rail_block.hpp"

namespace epcomm::detail {
namespace {

namespace cuda = kernels::cuda;

// Pieces of one allocation, each 256-byte aligned.
class Pieces {
 public:
  explicit Pieces(std::byte* base) : base_(base) {}
  template <class T>
  T* take(std::size_t count) {
    const std::size_t at = (used_ + 255) / 256 * 256;
    used_ = at + count * sizeof(T);
    return base_ == nullptr ? nullptr : reinterpret_cast<T*>(base_ + at);
  }
  std::size_t bytes() const { return (used_ + 255) / 256 * 256; }

 private:
  std::byte* base_;
  std::size_t used_ = 0;
};

cuda::SlotArrays arrays_of(const SlotView& v) {
  return {reinterpret_cast<uint8_t*>(v.rows),
          reinterpret_cast<uint8_t*>(v.expert_out),
          reinterpret_cast<uint8_t*>(v.owner_partials),
          v.src_rank,
          v.src_token,
          v.weight,
          v.first_row,
          v.token_rows,
          reinterpret_cast<uint32_t*>(v.row_sum),
          reinterpret_cast<uint32_t*>(v.partial_sum)};
}
static_assert(kRouteCountsHeader == cuda::kRouteCountsHeader, "one header for the host and the GPU");
static_assert(sizeof(BlockChecksum) == sizeof(uint32_t), "the GPU's checksum tables hold bare CRC32Cs");

class CudaPlanSteps final : public DevicePlanSteps {
 public:
  CudaPlanSteps(int device, RowMover& mover, PlanStepsShape shape)
      : device_(device), mover_(mover), shape_(std::move(shape)) {
    const Topology& topo = shape_.topo;
    const std::size_t R = topo.ranks_per_node, J = topo.experts_per_rank(), K = topo.topk, N = topo.num_nodes();
    const std::size_t T = static_cast<std::size_t>(shape_.max_tokens);
    const std::size_t E = topo.num_experts, P = topo.num_ranks;
    const auto carve = [&](std::byte* base) {
      Pieces p(base);
      // count_routes' header and counts, the routes' node offsets, then their
      // token lists: one copy back, or one upload (offsets and lists).
      counts_ = p.take<int32_t>(count_ints() + T * N);
      node_offsets_ = counts_ == nullptr ? nullptr : counts_ + count_ints() - (N + 1);
      node_tokens_ = counts_ == nullptr ? nullptr : counts_ + count_ints();
      expected_ = p.take<int32_t>(E + P + N);
      owner_layouts_ = p.take<int32_t>(2 * R * J + 2 * R);
      own_layout_ = p.take<int64_t>(2 * J + 1);
      row_pos_ = p.take<int32_t>(T * K);
      entry_ = p.take<int32_t>(T * R);
      route_count_ = p.take<int32_t>(T * N);
      route_local_ = p.take<int32_t>(T * N * R);
      route_entry_ = p.take<int32_t>(T * N * R);
      owners_ = p.take<cuda::SlotArrays>(R);
      node_partials_ = p.take<cuda::NodePartials>(N);
      // A dispatch's partial pushes, one upload: the bases, then its entries and
      // their sources (set_partial_pushes).
      push_bases_ = p.take<int64_t>(topo.num_ranks + N * R + static_cast<std::size_t>(shape_.max_entries));
      bad_ = p.take<int64_t>(1);
      claims_ = p.take<int32_t>(2);
      return p.bytes();
    };
    memory_ = std::make_unique<DeviceBuffer>(device_, carve(nullptr), "the exchange's plan buffers");
    carve(memory_->get());
    // On the mover's stream, not the legacy default one, which would wait for
    // every blocking stream of the process (a caller's, held for another
    // exchange's operation, say).
    std::vector<cuda::SlotArrays> owners;
    for (const SlotView& v : shape_.owners) owners.push_back(arrays_of(v));
    mover_.upload(owners_, owners.data(), owners.size() * sizeof(cuda::SlotArrays));
    // Only LogFMT partials can be unencodable, and only those reset it after a
    // sum (sum_owner_partials); the others never touch it.
    mover_.upload(bad_, &kNone, sizeof kNone);
    EPCOMM_CUDA(cudaSetDevice(device_));
    void* error = nullptr;
    EPCOMM_CUDA(cudaHostAlloc(&error, 2 * sizeof(int32_t), cudaHostAllocMapped | cudaHostAllocPortable));
    error_ = static_cast<volatile int32_t*>(error);
    error_[0] = 0;
    error_[1] = 0;
    void* counts = nullptr;
    EPCOMM_CUDA(cudaHostAlloc(&counts, count_ints() * sizeof(int32_t), cudaHostAllocPortable));
    counts_host_ = static_cast<int32_t*>(counts);
    void* report = nullptr;
    EPCOMM_CUDA(cudaHostAlloc(&report, cuda::kRouteCountsHeader * sizeof(int32_t),
                              cudaHostAllocMapped | cudaHostAllocPortable));
    route_report_ = static_cast<volatile int32_t*>(report);
    EPCOMM_CUDA(cudaEventCreateWithFlags(&counted_, cudaEventDisableTiming));
    if (shape_.checksum) {
      void* record = nullptr;
      EPCOMM_CUDA(cudaHostAlloc(&record, sizeof(cuda::ChecksumRecord), cudaHostAllocMapped | cudaHostAllocPortable));
      record_ = static_cast<cuda::ChecksumRecord*>(record);
      *record_ = {};
    }
  }
  ~CudaPlanSteps() override {
    // Kernels still queued may read the plan buffers.
    cudaSetDevice(device_);
    cudaStreamSynchronize(static_cast<cudaStream_t>(mover_.stream()));
    cudaFreeHost(const_cast<int32_t*>(error_));
    cudaFreeHost(counts_host_);
    cudaFreeHost(const_cast<int32_t*>(route_report_));
    cudaEventDestroy(counted_);
    if (record_ != nullptr) cudaFreeHost(record_);
  }

  bool can_count_routes() const override {
    // A launch's shared memory without opting in is 48 KiB, the kernel's own
    // arrays (a few hundred bytes) included.
    return cuda::route_count_shared_bytes(route_shape(0)) <= 47 * 1024;
  }

  void count_routes(const int32_t* topk_idx, const float* topk_weights, int num_tokens,
                    const std::vector<int32_t>* expected) override {
    const int32_t* compare = nullptr;
    if (expected != nullptr) {
      mover_.upload(expected_, expected->data(), expected->size() * sizeof(int32_t));
      compare = expected_;
    }
    use_device();
    const auto stream = static_cast<cudaStream_t>(mover_.stream());
    cuda::count_routes(topk_idx, topk_weights, route_shape(num_tokens), compare, counts_, node_tokens_,
                       route_report_, stream);
    rejected_ = counts_ + 2;  // the header's rejection word
    if (expected != nullptr) return;
    EPCOMM_CUDA(cudaMemcpyAsync(counts_host_, counts_, count_ints() * sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
    EPCOMM_CUDA(cudaEventRecord(counted_, stream));
  }

  const int32_t* counted_routes() override {
    use_device();
    EPCOMM_CUDA(cudaEventSynchronize(counted_));
    return counts_host_;
  }

  RouteVerdict route_verdict() override {
    return {route_report_[2] != 0, route_report_[0], route_report_[1]};
  }

  std::vector<int32_t> download_route_counts() override {
    std::vector<int32_t> counts(count_ints());
    mover_.download(counts.data(), counts_, counts.size() * sizeof(int32_t));
    return counts;
  }

  void set_routes(const TokenRoutes& routes) override {
    node_offset_ = routes.node_offset;
    num_tokens_ = routes.num_tokens;
    if (routes.lists_on_device) return;  // count_routes wrote them
    rejected_ = nullptr;
    route_lists_.assign(routes.node_offset.begin(), routes.node_offset.end());
    route_lists_.insert(route_lists_.end(), routes.node_tokens.begin(), routes.node_tokens.end());
    mover_.upload(node_offsets_, route_lists_.data(), route_lists_.size() * sizeof(int32_t));
  }

  BadElement encode_routed_tokens(Format format, const void* x, DType x_type, void* dst) override {
    // One node: its list holds every routed token once.
    const int64_t count = node_offset_[1] - node_offset_[0];
    use_device();
    cuda::encode_token_rows(format, x, x_type, shape_.hidden, node_tokens_, count, dst, bad_, mover_.stream());
    if (logfmt_bits(format) == 0) return {};  // only LogFMT can fail
    int64_t bad = -1;
    mover_.download(&bad, bad_, sizeof bad);
    if (bad < 0) return {};
    BadElement b;
    mover_.download(&b.token, node_tokens_ + bad / shape_.hidden, sizeof b.token);
    b.column = static_cast<int>(bad % shape_.hidden);
    return b;
  }

  void write_own_tokens(int source, const int32_t* topk_idx, const float* topk_weights, const std::byte* token_rows,
                        int32_t first_handled, const std::vector<RecvLayoutView>& owners) override {
    cuda::PlacedSource s;
    s.count = node_offset_[shape_.node + 1] - node_offset_[shape_.node];
    s.rank = source;
    s.tokens = node_tokens_ + node_offset_[shape_.node];
    s.topk_idx = topk_idx;
    s.topk_weights = topk_weights;
    s.payload = reinterpret_cast<const uint8_t*>(token_rows);
    s.rejected = rejected_;
    write(s, first_handled, owners);
  }

  void write_block_tokens(int source, int32_t count, const std::byte* block, int32_t first_handled,
                          const std::vector<RecvLayoutView>& owners) override {
    const std::size_t record_bytes = shape_.record_bytes;
    cuda::PlacedSource s;
    s.count = count;
    s.rank = source;
    s.records = reinterpret_cast<const uint8_t*>(block);
    s.record_bytes = static_cast<int64_t>(record_bytes);
    s.payload =
        reinterpret_cast<const uint8_t*>(block + rail_records_bytes(static_cast<std::size_t>(count), record_bytes));
    write(s, first_handled, owners);
  }

  std::string placement_error() override {
    const int32_t code = error_[0];
    if (code == 0) return "";
    const int32_t source = error_[1];
    error_[0] = 0;
    const Topology& topo = shape_.topo;
    const int R = topo.ranks_per_node, J = topo.experts_per_rank();
    const int col = code - 1;
    std::ostringstream why;
    if (col < R * J) {
      why << "rank " << source << " sent more rows for expert " << shape_.node * R * J + col
          << " than its layout announced";
    } else {
      why << "rank " << source << " sent more tokens to rank " << shape_.node * R + (col - R * J)
          << " than its layout announced";
    }
    return why.str();
  }

  void set_own_layout(const RecvLayoutView& mine) override {
    const int J = mine.num_local_experts;
    std::vector<int64_t> layout(mine.expert_offset, mine.expert_offset + J + 1);
    layout.insert(layout.end(), mine.expert_count, mine.expert_count + J);
    mover_.upload(own_layout_, layout.data(), layout.size() * sizeof(int64_t));
    own_rows_ = mine.num_rows();
  }

  void finish() override {
    const int J = shape_.topo.experts_per_rank();
    const SlotView& me = shape_.owners[shape_.local_rank];
    use_device();
    // With checksums the fan-out checks the rows node peers wrote; the host
    // raises a mismatch before the dispatch completes.
    cuda::finish_rows(arrays_of(me), own_layout_, own_layout_ + J + 1, J, own_rows_,
                      static_cast<int64_t>(me.row_bytes), shape_.topo.ranks_per_node, shape_.local_rank,
                      checksums(), mover_.stream());
  }

  const PartialPushes* partial_pushes(uint64_t dispatch) const override {
    return pushes_dispatch_ == dispatch && pushes_dispatch_ != 0 ? &pushes_ : nullptr;
  }

  const PartialPushes& set_partial_pushes(uint64_t dispatch, PartialPushes pushes) override {
    const std::size_t count = pushes.entries.size();
    EPCOMM_REQUIRE(static_cast<int64_t>(count) <= shape_.max_entries && pushes.sources.size() == count,
                   kBufferTooSmall,
                   "partial pushes of " << count << " entries for a token list of " << shape_.max_entries);
    pushes_ = std::move(pushes);
    pushes_dispatch_ = dispatch;
    const std::size_t bases = pushes_.to_forwarders.size() + pushes_.from_owners.size();
    std::vector<std::byte> upload(bases * sizeof(int64_t) + 2 * count * sizeof(int32_t));
    auto put = [at = upload.data()](const auto& v) mutable {
      if (v.empty()) return;
      std::memcpy(at, v.data(), v.size() * sizeof(v[0]));
      at += v.size() * sizeof(v[0]);
    };
    put(pushes_.to_forwarders);
    put(pushes_.from_owners);
    put(pushes_.entries);
    put(pushes_.sources);
    mover_.upload(push_bases_, upload.data(), upload.size());
    entries_ = reinterpret_cast<int32_t*>(push_bases_ + bases);
    sources_ = entries_ + count;
    return pushes_;
  }

  void sum_owner_partials(Format out_format, Format partial_format, const std::byte* expert_out,
                          bool weighted) override {
    const Topology& topo = shape_.topo;
    // Lowered only by LogFMT, and left at -1 by every other sum.
    if (logfmt_bits(partial_format) != 0) mover_.upload(bad_, &kNone, sizeof kNone);
    use_device();
    cuda::sum_owner_partials(out_format, partial_format, owners_, topo.ranks_per_node,
                             arrays_of(shape_.owners[shape_.local_rank]), reinterpret_cast<const uint8_t*>(expert_out),
                             topo.max_rows_per_token_rank(), entries_, sources_, push_bases_,
                             static_cast<int64_t>(pushes_.entries.size()), weighted, shape_.hidden, bad_, checksums(),
                             mover_.stream());
  }

  int64_t owner_partials_bad() override {
    int64_t bad = -1;
    mover_.download(&bad, bad_, sizeof bad);
    return bad;
  }

  void sum_routed(Format out_format, Format partial_format, const std::byte* expert_out, int node, int64_t first,
                  int64_t count, bool weighted, float* acc) override {
    if (count <= 0) return;
    use_device();
    // With checksums the sums check the owner partials they read; the host raises
    // a mismatch before anything summed from them is sent.
    cuda::sum_routed_partials(out_format, partial_format, routed(node), reinterpret_cast<const uint8_t*>(expert_out),
                              first, count, weighted, shape_.hidden, acc, checksums(), mover_.stream());
  }

  void sum_routed_to_output(Format partial_format, const std::byte* expert_out, int64_t first, bool weighted,
                            DType dtype, void* out) override {
    if (num_tokens_ == 0) return;
    const int n = shape_.node;
    use_device();
    cuda::sum_routed_to_output(kernels::plain_format(dtype), partial_format, routed(n),
                               reinterpret_cast<const uint8_t*>(expert_out), first, node_tokens_ + node_offset_[n],
                               node_offset_[n + 1] - node_offset_[n], num_tokens_, weighted, shape_.hidden, out,
                               checksums(), mover_.stream());
  }

  void sum_node_partials(Format format, const std::vector<NodePartialRows>& nodes, DType dtype, void* out) override {
    if (num_tokens_ == 0) return;
    std::vector<cuda::NodePartials> partials;
    for (std::size_t n = 0; n < nodes.size(); ++n) {
      partials.push_back({static_cast<const uint8_t*>(nodes[n].rows), static_cast<int64_t>(nodes[n].row_bytes),
                          static_cast<int>(n) == shape_.node ? 1 : 0});
    }
    // The same slot's buffers every time: uploaded once.
    if (!same_partials(partials)) {
      mover_.upload(node_partials_, partials.data(), partials.size() * sizeof(cuda::NodePartials));
      uploaded_partials_ = partials;
    }
    use_device();
    cuda::sum_node_partials(format, node_partials_, static_cast<int>(nodes.size()), node_offsets_, node_tokens_,
                            num_tokens_, shape_.hidden, dtype, out, mover_.stream());
  }

  void first_route(int64_t h, int32_t* local_rank, int32_t* entry) override {
    const std::size_t at = static_cast<std::size_t>(h) * shape_.topo.ranks_per_node;
    mover_.download(local_rank, route_local_ + at, sizeof(int32_t));
    mover_.download(entry, route_entry_ + at, sizeof(int32_t));
  }

  void begin_checksums() override {
    record_->found = 0;
    record_->signed_row = 0;
    const int32_t zero[2] = {0, 0};
    mover_.upload(claims_, zero, sizeof zero);
  }

  std::optional<PeerRowMismatch> checksum_mismatch() override {
    const volatile cuda::ChecksumRecord* r = record_;
    if (r == nullptr || r->found == 0) return std::nullopt;
    return PeerRowMismatch{r->owner, r->row, r->got, r->expected};
  }

  bool signed_any() override {
    return record_ != nullptr && static_cast<volatile cuda::ChecksumRecord*>(record_)->signed_row != 0;
  }

  bool flip_signed_row_bit(std::size_t row_bytes) override {
    if (!signed_any() || row_bytes == 0) return false;
    auto* byte = reinterpret_cast<std::byte*>(static_cast<uintptr_t>(record_->signed_row)) + row_bytes / 2;
    std::byte b{};
    mover_.download(&b, byte, 1);
    b ^= std::byte{0x10};
    mover_.upload(byte, &b, 1);
    mover_.synchronize();
    return true;
  }

 private:
  static constexpr int64_t kNone = -1;  // bad_ when every element was encodable
  void use_device() { EPCOMM_CUDA(cudaSetDevice(device_)); }
  // count_routes' header, expert counts, rank counts and node offsets.
  std::size_t count_ints() const {
    const Topology& topo = shape_.topo;
    return cuda::kRouteCountsHeader + topo.num_experts + topo.num_ranks + topo.num_nodes() + 1;
  }
  cuda::RouteShape route_shape(int num_tokens) const {
    const Topology& topo = shape_.topo;
    return {num_tokens, topo.topk, topo.num_experts, topo.experts_per_rank(), topo.ranks_per_node, topo.num_nodes()};
  }
  // Where the checksum kernels report; all null with checksums off.
  cuda::ChecksumReport report() const { return {record_, claims_}; }
  cuda::ChecksumReport checksums() const { return shape_.checksum ? report() : cuda::ChecksumReport{nullptr, nullptr}; }

  // The forwarding record, and the bases of node n's pushes here.
  cuda::RoutedPartials routed(int n) const {
    const Topology& topo = shape_.topo;
    cuda::RoutedPartials r;
    r.owners = owners_;
    r.ranks_per_node = topo.ranks_per_node;
    r.local_rank = shape_.local_rank;
    r.max_rows_per_token = topo.max_rows_per_token_rank();
    r.route_count = route_count_;
    r.route_local = route_local_;
    r.route_entry = route_entry_;
    r.push_base = push_bases_ + topo.num_ranks + static_cast<std::ptrdiff_t>(n) * topo.ranks_per_node;
    return r;
  }

  bool same_partials(const std::vector<cuda::NodePartials>& p) const {
    const auto same = [](const cuda::NodePartials& a, const cuda::NodePartials& b) {
      return a.rows == b.rows && a.row_bytes == b.row_bytes && a.f32 == b.f32;
    };
    return std::equal(p.begin(), p.end(), uploaded_partials_.begin(), uploaded_partials_.end(), same);
  }

  // The owners' layouts for this source, then its positions, then its rows.
  void write(const cuda::PlacedSource& s, int32_t first_handled, const std::vector<RecvLayoutView>& owners) {
    if (s.count == 0) return;
    const Topology& topo = shape_.topo;
    const int R = topo.ranks_per_node, J = topo.experts_per_rank();
    std::vector<int32_t> layouts(2 * static_cast<std::size_t>(R) * J + 2 * R);
    int32_t* row_base = layouts.data();
    int32_t* row_end = row_base + R * J;
    int32_t* token_begin = row_end + R * J;
    int32_t* token_end = token_begin + R;
    for (int ld = 0; ld < R; ++ld) {
      const RecvLayoutView& d = owners[ld];
      for (int j = 0; j < J; ++j) {
        row_base[ld * J + j] = d.row_base[s.rank * J + j];
        row_end[ld * J + j] = static_cast<int32_t>(d.expert_offset[j] + d.expert_count[j]);
      }
      token_begin[ld] = d.token_base[s.rank];
      token_end[ld] = d.token_base[s.rank + 1];
    }
    mover_.upload(owner_layouts_, layouts.data(), layouts.size() * sizeof(int32_t));
    cuda::NodeLayouts n;
    n.ranks_per_node = R;
    n.experts_per_rank = J;
    n.topk = topo.topk;
    n.first_expert = shape_.node * R * J;
    n.writer = shape_.local_rank;
    n.row_base = owner_layouts_;
    n.row_end = owner_layouts_ + R * J;
    n.token_begin = owner_layouts_ + 2 * R * J;
    n.token_end = owner_layouts_ + 2 * R * J + R;
    use_device();
    cuda::place_rows(s, n, row_pos_, entry_, error_, mover_.stream());
    cuda::write_placed_rows(s, n, owners_, topo.max_rows_per_token_rank(),
                            static_cast<int64_t>(shape_.owners[0].row_bytes), row_pos_, entry_, first_handled,
                            route_count_, route_local_, route_entry_, checksums(), mover_.stream());
  }

  int device_;
  RowMover& mover_;
  PlanStepsShape shape_;
  std::vector<int32_t> node_offset_;
  int num_tokens_ = 0;
  std::vector<int32_t> route_lists_;  // node_offset_ then the token lists, as uploaded
  std::vector<cuda::NodePartials> uploaded_partials_;  // what node_partials_ holds
  int64_t own_rows_ = 0;  // rows of this rank's layout (set_own_layout)
  std::unique_ptr<DeviceBuffer> memory_;
  volatile int32_t* error_ = nullptr;
  int32_t* counts_host_ = nullptr;               // pinned: count_routes' counts, copied back
  volatile int32_t* route_report_ = nullptr;     // pinned, mapped: its header
  cudaEvent_t counted_ = nullptr;                // passed once counts_host_ holds them
  const int32_t* rejected_ = nullptr;            // its rejection word, while the routes are its
  // In memory_:
  int32_t* counts_ = nullptr;  // count_routes' header and counts; node_offsets_ is their tail
  int32_t* expected_ = nullptr;  // a reused layout's counts, compared by count_routes
  int32_t* node_offsets_ = nullptr;
  int32_t* node_tokens_ = nullptr;
  int32_t* owner_layouts_ = nullptr;
  int64_t* own_layout_ = nullptr;
  int32_t* row_pos_ = nullptr;
  int32_t* entry_ = nullptr;
  int32_t* route_count_ = nullptr;
  int32_t* route_local_ = nullptr;
  int32_t* route_entry_ = nullptr;
  cuda::SlotArrays* owners_ = nullptr;
  cuda::NodePartials* node_partials_ = nullptr;
  // The partial pushes of dispatch pushes_dispatch_ (0: none), as uploaded in
  // memory_: push_bases_ (to_forwarders, then from_owners), then entries_ and
  // sources_.
  PartialPushes pushes_;
  uint64_t pushes_dispatch_ = 0;
  int32_t* entries_ = nullptr;
  int32_t* sources_ = nullptr;
  int64_t* push_bases_ = nullptr;
  int64_t* bad_ = nullptr;      // its first unencodable element
  int32_t* claims_ = nullptr;   // the checksum report's claims (ChecksumReport)
  cuda::ChecksumRecord* record_ = nullptr;  // pinned, mapped; with checksums only
};

}  // namespace

std::unique_ptr<DevicePlanSteps> make_cuda_plan_steps(int device, RowMover& mover, PlanStepsShape shape) {
  return std::make_unique<CudaPlanSteps>(device, mover, std::move(shape));
}

}  // namespace epcomm::detail
