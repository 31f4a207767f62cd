// SPDX-License-Identifier: MIT
// The row-mover seam: the operations (dispatch, combine) decide which rows go where
// and in which order partial sums are formed; a mover carries the batches out.
// The host mover queues them and runs them a round at a time on the group's worker
// pool with the CPU codecs (step()); the device mover enqueues them on its CUDA
// stream (kernels/cuda), rows addressed by pointer, so one batch
// may read and write this GPU's memory, node peers' (CUDA IPC) and pinned host
// memory. Because both follow the same lists in the same order, the device path is
// bit-identical to the host one: the host path is its test oracle.
//
// Work is ordered: a batch sees every earlier batch's results. idle() says whether
// everything enqueued has completed; an operation publishes results to other
// ranks (shared-memory flags, network sends) only once its mover is idle. The
// engine steps every mover in each progress pass, under its lock.
#pragma once

#include <epcomm/types.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "util/crc32c.hpp"

namespace epcomm::detail {

// Row checksums (ExchangeConfig::checksum, rows in host memory) are taken and
// checked by the batches that move the rows anyway, in the same pass over their
// bytes (node_peer_checksums.hpp): a row that fails its check is reported here,
// and the operation that owns the batch raises the error once the batch ran.
class CorruptRows {
 public:
  // The first row reported wins: one is enough to name in the error.
  void report(const void* row) {
    const void* none = nullptr;
    first_.compare_exchange_strong(none, row, std::memory_order_relaxed);
  }
  // A row that failed its check (its address, as the batch had it), or null.
  const void* first() const { return first_.load(std::memory_order_relaxed); }

 private:
  std::atomic<const void*> first_{nullptr};
};

// dst[i] <- src[i], row_bytes bytes each. With checksums (host mover only), per
// copy: sign[i], if not null, receives the checksum of the bytes copied; check[i],
// if not null, is the checksum src[i] must have, compared as it is copied and a
// mismatch reported to `corrupt`; dst[i] may then be null (checked, not copied).
struct RowCopies {
  std::size_t row_bytes = 0;
  std::vector<const void*> src;
  std::vector<void*> dst;
  std::vector<BlockChecksum*> sign;
  std::vector<const BlockChecksum*> check;
  std::shared_ptr<CorruptRows> corrupt;

  void clear(std::size_t bytes) {
    row_bytes = bytes;
    src.clear();
    dst.clear();
    sign.clear();
    check.clear();
    corrupt.reset();
  }
  void add(const void* s, void* d, BlockChecksum* signed_into = nullptr,
           const BlockChecksum* checked_against = nullptr) {
    src.push_back(s);
    dst.push_back(d);
    sign.push_back(signed_into);
    check.push_back(checked_against);
  }
  std::size_t size() const { return src.size(); }
};

// acc row d = sum, in list order, of weight[j] * decode(row[j]) for j in
// [offsets[d], offsets[d + 1]): the fixed reduction order of a combine. With
// checksums (host mover only), hashed just before the row is summed (the sum then
// finds it in cache): check[j], if not null, is the checksum row[j] must have, a
// mismatch reported to `corrupt`; sign[j], if not null, receives row[j]'s
// checksum (for the check of the block it belongs to, once the batch ran).
struct RowSums {
  std::vector<int32_t> offsets{0};
  std::vector<const void*> rows;
  std::vector<float> weights;
  std::vector<const BlockChecksum*> check;
  std::vector<BlockChecksum*> sign;
  std::shared_ptr<CorruptRows> corrupt;

  void clear() {
    offsets.assign(1, 0);
    rows.clear();
    weights.clear();
    check.clear();
    sign.clear();
    corrupt.reset();
  }
  void add_source(const void* row, float weight, const BlockChecksum* checked_against = nullptr,
                  BlockChecksum* signed_into = nullptr) {
    rows.push_back(row);
    weights.push_back(weight);
    check.push_back(checked_against);
    sign.push_back(signed_into);
  }
  void end_destination() { offsets.push_back(static_cast<int32_t>(rows.size())); }
  int64_t destinations() const { return static_cast<int64_t>(offsets.size()) - 1; }
};

class RowMover {
 public:
  virtual ~RowMover() = default;

  // Later batches wait for the work the caller enqueued on `stream` (a
  // cudaStream_t; null: none) so far: the caller's inputs are complete.
  virtual void after(void* stream) = 0;
  virtual void copy(const RowCopies& copies) = 0;
  // bytes from src to dst (contiguous): staging a whole matrix.
  virtual void copy_bytes(void* dst, const void* src, std::size_t bytes) = 0;
  virtual void zero(void* dst, std::size_t bytes) = 0;
  // acc ([destinations, hidden] FP32) = the sums (from_zero) or acc + the sums.
  virtual void accumulate(Format format, const RowSums& sums, int hidden, bool from_zero, float* acc) = 0;
  // dst row i = encode(format, src row i) for i < rows, rows back to back. With
  // row_sums (checksums; host mover only, else null), row_sums[i] receives the
  // checksum of dst row i, hashed right after it was encoded (still in cache).
  virtual void encode(Format format, const void* src, DType src_type, int64_t rows, int hidden, void* dst,
                      BlockChecksum* row_sums) = 0;
  // dst row i = decode(format, src row i) as dst_type, for i < rows.
  virtual void decode(Format format, const void* src, int64_t rows, int hidden, void* dst, DType dst_type) = 0;
  // dst row t = encode(format, x row t) for t in tokens (a staging matrix indexed
  // by token).
  virtual void encode_tokens(Format format, const void* x, DType x_type, int hidden, const std::vector<int32_t>& tokens,
                             void* dst) = 0;
  // The first element the last encode / encode_tokens could not represent, as
  // (position in its list) * hidden + column, or -1. May wait for that work.
  virtual int64_t first_bad() = 0;
  // Copies bytes the host computed (row metadata) into memory the mover's work
  // and the caller read; a plain copy on the host.
  virtual void upload(void* dst, const void* src, std::size_t bytes) = 0;
  // Reads bytes of mover memory on the host, after the work before it (error
  // messages).
  virtual void download(void* dst, const void* src, std::size_t bytes) = 0;
  // Runs a bounded share of the enqueued work on the calling thread and the
  // group's worker pool, then returns so the engine's lock can go to the other
  // operations; true if any work ran. A mover whose work runs by itself (the
  // device's stream) returns false.
  virtual bool step() = 0;
  virtual bool idle() = 0;
  // A point in the work enqueued so far: reached(m) is true once everything
  // enqueued before the mark() that returned m has completed, so a chunk of a
  // packed block can be sent while later ones are still being packed.
  virtual uint64_t mark() = 0;
  virtual bool reached(uint64_t m) = 0;
  // Forgets enqueued work that has not run: the operations it belonged to were
  // dropped (a failure, the exchange's teardown) and their buffers may be freed
  // before a later call would run it. Work a device stream already holds runs on.
  virtual void forget_queued() = 0;
  // Returns once everything enqueued has completed.
  virtual void synchronize() = 0;
  // The CUDA stream the work runs on (a cudaStream_t), for the device plan steps
  // (device/device_plan_steps.hpp) that run in the mover's order; null on the host.
  virtual void* stream() const = 0;
};

class WorkerPool;
// `pool` (the group's) outlives the mover.
std::unique_ptr<RowMover> make_host_row_mover(WorkerPool& pool);

}  // namespace epcomm::detail
