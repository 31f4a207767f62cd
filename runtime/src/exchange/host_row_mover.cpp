// SPDX-License-Identifier: MIT
// The host row mover: the CPU codecs (SIMD, epcomm_kernels) on the group's worker
// pool.
//
// Batches are queued, not run where they are enqueued: the engine calls step() in
// its progress passes, and each step runs one round of at most kRoundBytes per pool
// thread from the front of the queue, split across the pool by rows (or by whole
// destination rows of a sum, or by 64 KiB pieces of a contiguous range). With other
// operations in flight the engine runs one round per pass, so between rounds the
// pass goes on to them and a long copy or reduction of one micro-batch no longer
// holds back the other's transfers. Rounds run in queue order and every round
// ends with all of its threads done, so a batch sees every earlier batch's
// results, as the seam promises. A destination row of a sum is always summed by one thread in list
// order: splitting changes which thread computes a row, never how, so the results
// are bit-identical whatever the thread count.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>

#include "epcomm_kernels/codec.hpp"
#include "epcomm_kernels/stream_copy.hpp"
#include "exchange/row_mover.hpp"
#include "util/worker_pool.hpp"

namespace epcomm::detail {
namespace {

// Bytes one pool thread moves per round: a few hundred KiB keeps a round short
// (tens of microseconds) next to the other micro-batch's polls, yet long against
// the cost of waking the helpers.
constexpr std::size_t kRoundBytes = std::size_t{512} << 10;
// Contiguous ranges (copy_bytes, zero) are split into pieces of this size.
constexpr std::size_t kPieceBytes = std::size_t{64} << 10;
// Row copies bypass the caches (kernels::stream_copy) for rows of at least
// kStreamRowBytes in batches of at least kStreamBatchBytes.
constexpr std::size_t kStreamRowBytes = std::size_t{4} << 10;
constexpr std::size_t kStreamBatchBytes = std::size_t{256} << 10;

// One enqueued batch: `items` independent units of about item_bytes each.
struct Job {
  int64_t items = 0;
  std::size_t item_bytes = 1;
  std::function<void(int64_t, int64_t)> run;  // units [begin, end)
  int64_t next = 0;                           // first unit not yet run
};

// The smallest position any part found, or -1: the first bad element of an encode.
void keep_first(std::atomic<int64_t>& first, int64_t at) {
  int64_t seen = first.load(std::memory_order_relaxed);
  while ((seen < 0 || at < seen) && !first.compare_exchange_weak(seen, at, std::memory_order_relaxed)) {
  }
}

class HostRowMover final : public RowMover {
 public:
  explicit HostRowMover(WorkerPool& pool) : pool_(pool) {}

  void after(void*) override {}
  void* stream() const override { return nullptr; }
  void copy(const RowCopies& c) override {
    if (c.size() == 0) return;
    if (!c.corrupt && std::none_of(c.sign.begin(), c.sign.end(), [](const BlockChecksum* s) { return s != nullptr; })) {
      // A batch of big rows goes around the caches: its destinations (node peers'
      // slots, send blocks, the fan-out's rows) are read later, by other ranks or
      // other phases, and would only push the data in use out of this core's cache.
      const bool stream = c.row_bytes >= kStreamRowBytes && c.size() * c.row_bytes >= kStreamBatchBytes;
      push(static_cast<int64_t>(c.size()), c.row_bytes,
           [src = c.src, dst = c.dst, bytes = c.row_bytes, stream](int64_t b, int64_t e) {
             for (int64_t i = b; i < e; ++i) {
               if (stream) {
                 kernels::stream_copy(dst[i], src[i], bytes);
               } else {
                 std::memcpy(dst[i], src[i], bytes);
               }
             }
           });
      return;
    }
    // With checksums: each row is hashed in the pass that copies it.
    push(static_cast<int64_t>(c.size()), c.row_bytes, [c, bytes = c.row_bytes](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        if (c.sign[i] == nullptr && c.check[i] == nullptr) {
          std::memcpy(c.dst[i], c.src[i], bytes);
          continue;
        }
        const BlockChecksum sum =
            c.dst[i] != nullptr ? copy_with_checksum(c.dst[i], c.src[i], bytes) : block_checksum(c.src[i], bytes);
        if (c.sign[i] != nullptr) *c.sign[i] = sum;
        if (c.check[i] != nullptr && !(sum == *c.check[i])) c.corrupt->report(c.src[i]);
      }
    });
  }
  void copy_bytes(void* dst, const void* src, std::size_t bytes) override {
    pieces(bytes, [d = static_cast<std::byte*>(dst), s = static_cast<const std::byte*>(src)](std::size_t at,
                                                                                             std::size_t n) {
      std::memcpy(d + at, s + at, n);
    });
  }
  void zero(void* dst, std::size_t bytes) override {
    pieces(bytes, [d = static_cast<std::byte*>(dst)](std::size_t at, std::size_t n) { std::memset(d + at, 0, n); });
  }
  void accumulate(Format format, const RowSums& sums, int hidden, bool from_zero, float* acc) override {
    const int64_t rows = sums.destinations();
    if (rows == 0) return;
    const std::size_t sources_per_row = sums.rows.size() / static_cast<std::size_t>(rows) + 1;
    const kernels::Codec& codec = kernels::codec_for(format);
    // With checksums: a source row is checked just before it is summed, while
    // the check has brought it into cache.
    std::vector<const BlockChecksum*> check;
    if (sums.corrupt) check = sums.check;
    std::vector<BlockChecksum*> sign;
    if (std::any_of(sums.sign.begin(), sums.sign.end(), [](const BlockChecksum* s) { return s != nullptr; })) {
      sign = sums.sign;
    }
    push(rows, sources_per_row * static_cast<std::size_t>(hidden) * sizeof(float),
         [&codec, offsets = sums.offsets, src = sums.rows, weights = sums.weights, check = std::move(check),
          sign = std::move(sign), corrupt = sums.corrupt, row_bytes = codec.row_bytes(hidden), hidden, from_zero,
          acc](int64_t b, int64_t e) {
           for (int64_t d = b; d < e; ++d) {
             float* out = acc + d * hidden;
             if (from_zero) std::fill(out, out + hidden, 0.0f);
             for (int32_t j = offsets[d]; j < offsets[d + 1]; ++j) {
               const bool checked = !check.empty() && check[j] != nullptr;
               const bool signed_row = !sign.empty() && sign[j] != nullptr;
               if (checked || signed_row) {
                 const BlockChecksum sum = block_checksum(src[j], row_bytes);
                 if (checked && !(sum == *check[j])) corrupt->report(src[j]);
                 if (signed_row) *sign[j] = sum;
               }
               codec.accumulate_row(src[j], hidden, weights[j], out);
             }
           }
         });
  }
  void encode(Format format, const void* src, DType src_type, int64_t rows, int hidden, void* dst,
              BlockChecksum* row_sums) override {
    const kernels::Codec& codec = kernels::codec_for(format);
    const std::size_t in_row = static_cast<std::size_t>(hidden) * dtype_size(src_type);
    const std::size_t out_row = codec.row_bytes(hidden);
    auto bad = new_bad();
    push(rows, in_row + out_row,
         [&codec, s = static_cast<const std::byte*>(src), d = static_cast<std::byte*>(dst), src_type, hidden, in_row,
          out_row, bad, row_sums](int64_t b, int64_t e) {
           for (int64_t r = b; r < e; ++r) {
             const int at = codec.encode_row(s + r * in_row, src_type, hidden, d + r * out_row);
             if (at >= 0) keep_first(*bad, r * hidden + at);
             if (row_sums != nullptr) row_sums[r] = block_checksum(d + r * out_row, out_row);
           }
         });
  }
  void decode(Format format, const void* src, int64_t rows, int hidden, void* dst, DType dst_type) override {
    const kernels::Codec& codec = kernels::codec_for(format);
    const std::size_t in_row = codec.row_bytes(hidden);
    const std::size_t out_row = static_cast<std::size_t>(hidden) * dtype_size(dst_type);
    push(rows, in_row + out_row,
         [&codec, s = static_cast<const std::byte*>(src), d = static_cast<std::byte*>(dst), dst_type, hidden, in_row,
          out_row](int64_t b, int64_t e) {
           for (int64_t r = b; r < e; ++r) codec.decode_row(s + r * in_row, hidden, d + r * out_row, dst_type);
         });
  }
  void encode_tokens(Format format, const void* x, DType x_type, int hidden, const std::vector<int32_t>& tokens,
                     void* dst) override {
    const kernels::Codec& codec = kernels::codec_for(format);
    const std::size_t in_row = static_cast<std::size_t>(hidden) * dtype_size(x_type);
    const std::size_t out_row = codec.row_bytes(hidden);
    auto bad = new_bad();
    push(static_cast<int64_t>(tokens.size()), in_row + out_row,
         [&codec, s = static_cast<const std::byte*>(x), d = static_cast<std::byte*>(dst), x_type, hidden, in_row,
          out_row, tokens, bad](int64_t b, int64_t e) {
           for (int64_t i = b; i < e; ++i) {
             const std::size_t t = static_cast<std::size_t>(tokens[i]);
             const int at = codec.encode_row(s + t * in_row, x_type, hidden, d + t * out_row);
             if (at >= 0) keep_first(*bad, i * hidden + at);
           }
         });
  }
  int64_t first_bad() override {
    synchronize();
    std::lock_guard<std::mutex> lk(mu_);
    return last_bad_ ? last_bad_->load(std::memory_order_relaxed) : -1;
  }
  // Host bytes may be the caller's temporaries: copied now, after the work before.
  void upload(void* dst, const void* src, std::size_t bytes) override {
    synchronize();
    if (dst != src && bytes > 0) std::memcpy(dst, src, bytes);
  }
  void download(void* dst, const void* src, std::size_t bytes) override { upload(dst, src, bytes); }
  bool step() override {
    std::lock_guard<std::mutex> lk(mu_);
    return run_round(kRoundBytes * static_cast<std::size_t>(pool_.threads()));
  }
  bool idle() override {
    std::lock_guard<std::mutex> lk(mu_);
    return queue_.empty();
  }
  // Jobs run in queue order: a mark is a count of jobs.
  uint64_t mark() override {
    std::lock_guard<std::mutex> lk(mu_);
    return pushed_;
  }
  bool reached(uint64_t m) override {
    std::lock_guard<std::mutex> lk(mu_);
    return finished_ >= m;
  }
  void forget_queued() override {
    std::lock_guard<std::mutex> lk(mu_);
    finished_ += queue_.size();
    queue_.clear();
  }
  void synchronize() override {
    std::lock_guard<std::mutex> lk(mu_);
    while (run_round(SIZE_MAX)) {
    }
  }

 private:
  void push(int64_t items, std::size_t item_bytes, std::function<void(int64_t, int64_t)> run) {
    if (items <= 0) return;
    std::lock_guard<std::mutex> lk(mu_);
    queue_.push_back(Job{items, std::max<std::size_t>(1, item_bytes), std::move(run), 0});
    ++pushed_;
  }
  // A contiguous range as kPieceBytes pieces: fn(offset, bytes).
  template <class Fn>
  void pieces(std::size_t bytes, Fn fn) {
    if (bytes == 0) return;
    push(static_cast<int64_t>((bytes + kPieceBytes - 1) / kPieceBytes), kPieceBytes, [fn, bytes](int64_t b, int64_t e) {
      const std::size_t from = static_cast<std::size_t>(b) * kPieceBytes;
      fn(from, std::min(bytes, static_cast<std::size_t>(e) * kPieceBytes) - from);
    });
  }
  std::shared_ptr<std::atomic<int64_t>> new_bad() {
    auto bad = std::make_shared<std::atomic<int64_t>>(-1);
    std::lock_guard<std::mutex> lk(mu_);
    last_bad_ = bad;
    return bad;
  }
  // Runs up to `budget` bytes of queued work, front first; true if any ran. Holds mu_.
  bool run_round(std::size_t budget) {
    bool ran = false;
    while (!queue_.empty() && budget > 0) {
      Job& job = queue_.front();
      const int64_t fit = static_cast<int64_t>(std::max<std::size_t>(1, budget / job.item_bytes));
      const int64_t n = std::min(job.items - job.next, fit);
      const int64_t base = job.next;
      pool_.run(n, [&job, base](int64_t b, int64_t e) { job.run(base + b, base + e); });
      job.next += n;
      budget -= std::min(budget, static_cast<std::size_t>(n) * job.item_bytes);
      ran = true;
      if (job.next == job.items) {
        queue_.pop_front();
        ++finished_;
      }
    }
    return ran;
  }

  WorkerPool& pool_;
  std::mutex mu_;  // the queue; held while a round runs
  std::deque<Job> queue_;
  uint64_t pushed_ = 0, finished_ = 0;  // jobs ever queued, and run (or forgotten)
  std::shared_ptr<std::atomic<int64_t>> last_bad_;  // the last encode's result
};

}  // namespace

std::unique_ptr<RowMover> make_host_row_mover(WorkerPool& pool) { return std::make_unique<HostRowMover>(pool); }

}  // namespace epcomm::detail
