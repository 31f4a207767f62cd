// SPDX-License-Identifier: MIT
#include "device/device_row_mover.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <vector>

#include "device/cuda_call.hpp"
#include "epcomm_kernels/cuda_codec.hpp"
#include "epcomm_kernels/cuda_rows.hpp"
#include "epcomm_kernels/sm_budget.hpp"

namespace epcomm::detail {
namespace {

// Pinned, device-mapped host memory for the lists of the batches in flight: one
// block, allocated up front. Allocating pinned memory later could wait for the
// whole device, and with it for a caller's stream that waits for this operation;
// so when the block is full the mover waits for its own stream (whose work waits
// for nothing of the caller's that is still to come) and starts over.
class PinnedLists {
 public:
  explicit PinnedLists(std::size_t bytes) : bytes_(bytes) {
    void* p = nullptr;
    EPCOMM_CUDA(cudaHostAlloc(&p, bytes_, cudaHostAllocMapped | cudaHostAllocPortable));
    base_ = static_cast<std::byte*>(p);
  }
  ~PinnedLists() { cudaFreeHost(base_); }
  PinnedLists(const PinnedLists&) = delete;
  PinnedLists& operator=(const PinnedLists&) = delete;

  static std::size_t room(std::size_t bytes) { return (bytes + 63) / 64 * 64; }
  // Makes room for the lists of one batch (the sum of room() of each), so that
  // its puts never wrap over each other; `drain` waits for the stream when the
  // block must be reused.
  template <class Drain>
  void reserve(std::size_t batch_room, Drain&& drain) {
    EPCOMM_REQUIRE(batch_room <= bytes_, kBufferTooSmall,
                   "a row batch needs " << batch_room << " bytes of lists, more than the mover's " << bytes_);
    if (used_ + batch_room > bytes_) {
      drain();
      used_ = 0;
    }
  }
  // Copies `bytes` from data (null: leaves them unset) into room reserved before.
  std::byte* put(const void* data, std::size_t bytes) {
    std::byte* at = base_ + used_;
    used_ += room(bytes);
    if (data != nullptr && bytes > 0) std::memcpy(at, data, bytes);
    return at;
  }
  void reset() { used_ = 0; }

 private:
  std::byte* base_ = nullptr;
  std::size_t bytes_, used_ = 0;
};

class DeviceRowMover final : public RowMover {
 public:
  DeviceRowMover(int device, std::size_t list_bytes, int sm_budget) : device_(device), lists_(list_bytes) {
    EPCOMM_CUDA(cudaSetDevice(device_));
    EPCOMM_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    EPCOMM_CUDA(cudaEventCreateWithFlags(&caller_ready_, cudaEventDisableTiming));
    void* bad = nullptr;
    EPCOMM_CUDA(cudaMalloc(&bad, sizeof(int64_t)));
    bad_ = static_cast<int64_t*>(bad);
    EPCOMM_CUDA(cudaMemset(bad_, 0xff, sizeof(int64_t)));
    // Every kernel on this stream, the plan steps' included, gets at most
    // sm_budget blocks.
    kernels::cuda::set_stream_sm_budget(stream_, sm_budget);
  }
  ~DeviceRowMover() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
    for (const Mark& m : marks_) cudaEventDestroy(m.event);
    for (cudaEvent_t e : spare_events_) cudaEventDestroy(e);
    cudaFree(bad_);
    cudaEventDestroy(caller_ready_);
    kernels::cuda::set_stream_sm_budget(stream_, 0);
    cudaStreamDestroy(stream_);
  }

  void after(void* stream) override {
    prepare();
    EPCOMM_CUDA(cudaEventRecord(caller_ready_, static_cast<cudaStream_t>(stream)));
    EPCOMM_CUDA(cudaStreamWaitEvent(stream_, caller_ready_, 0));
  }
  void copy(const RowCopies& c) override {
    if (c.size() == 0) return;
    prepare();
    bool aligned = c.row_bytes % 16 == 0;
    for (std::size_t i = 0; aligned && i < c.size(); ++i) {
      aligned = (reinterpret_cast<uintptr_t>(c.src[i]) | reinterpret_cast<uintptr_t>(c.dst[i])) % 16 == 0;
    }
    reserve({bytes_of(c.src), bytes_of(c.dst)});
    kernels::cuda::copy_row_list(put(c.src), put(c.dst), static_cast<int64_t>(c.size()),
                                 static_cast<int64_t>(c.row_bytes), aligned, stream_);
  }
  void copy_bytes(void* dst, const void* src, std::size_t bytes) override {
    if (bytes == 0) return;
    prepare();
    EPCOMM_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_));
  }
  void zero(void* dst, std::size_t bytes) override {
    if (bytes == 0) return;
    prepare();
    EPCOMM_CUDA(cudaMemsetAsync(dst, 0, bytes, stream_));
  }
  void accumulate(Format format, const RowSums& sums, int hidden, bool from_zero, float* acc) override {
    if (sums.destinations() == 0) return;
    prepare();
    reserve({bytes_of(sums.rows), bytes_of(sums.weights), bytes_of(sums.offsets)});
    kernels::cuda::accumulate_row_list(format, put(sums.rows), put(sums.weights), hidden,
                                       put(sums.offsets), sums.destinations(), from_zero, acc, stream_);
  }
  // Rows in device memory are not checksummed (row_sums is null: docs/failures.md).
  void encode(Format format, const void* src, DType src_type, int64_t rows, int hidden, void* dst,
              BlockChecksum*) override {
    prepare();
    kernels::cuda::encode_rows(format, src, src_type, rows, hidden, dst, bad_, stream_);
  }
  void decode(Format format, const void* src, int64_t rows, int hidden, void* dst, DType dst_type) override {
    if (rows == 0) return;
    prepare();
    kernels::cuda::decode_rows(format, src, rows, hidden, dst, dst_type, stream_);
  }
  void encode_tokens(Format format, const void* x, DType x_type, int hidden, const std::vector<int32_t>& tokens,
                     void* dst) override {
    prepare();
    reserve({bytes_of(tokens)});
    kernels::cuda::encode_token_rows(format, x, x_type, hidden, put(tokens),
                                     static_cast<int64_t>(tokens.size()), dst, bad_, stream_);
  }
  int64_t first_bad() override {
    int64_t bad = -1;
    download(&bad, bad_, sizeof bad);
    return bad;
  }
  // Host memory here is staged through the pinned block: a copy from or to
  // pageable memory goes through the driver's staging, where it can queue behind a
  // caller's pageable copy that waits for this very operation.
  void upload(void* dst, const void* src, std::size_t bytes) override {
    if (bytes == 0) return;
    prepare();
    reserve({bytes});
    const std::byte* pinned = put_bytes(src, bytes);
    EPCOMM_CUDA(cudaMemcpyAsync(dst, pinned, bytes, cudaMemcpyDefault, stream_));
  }
  void download(void* dst, const void* src, std::size_t bytes) override {
    if (bytes == 0) return;
    prepare();
    reserve({bytes});
    std::byte* pinned = put_bytes(nullptr, bytes);
    EPCOMM_CUDA(cudaMemcpyAsync(pinned, src, bytes, cudaMemcpyDefault, stream_));
    EPCOMM_CUDA(cudaStreamSynchronize(stream_));
    std::memcpy(dst, pinned, bytes);
  }
  void synchronize() override {
    EPCOMM_CUDA(cudaSetDevice(device_));
    EPCOMM_CUDA(cudaStreamSynchronize(stream_));
  }
  void* stream() const override { return stream_; }
  bool step() override { return false; }  // the stream runs the work by itself
  void forget_queued() override {}        // nothing waits outside the stream
  bool idle() override {
    const cudaError_t s = cudaStreamQuery(stream_);
    if (s == cudaErrorNotReady) return false;
    EPCOMM_CUDA(s);
    return true;
  }
  // An event recorded on the stream; events are reused once passed.
  uint64_t mark() override {
    prepare();
    cudaEvent_t event = nullptr;
    if (spare_events_.empty()) {
      EPCOMM_CUDA(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    } else {
      event = spare_events_.back();
      spare_events_.pop_back();
    }
    EPCOMM_CUDA(cudaEventRecord(event, stream_));
    marks_.push_back({++marked_, event});
    return marked_;
  }
  bool reached(uint64_t m) override {
    EPCOMM_CUDA(cudaSetDevice(device_));
    while (!marks_.empty() && marks_.front().seq <= m) {
      const cudaError_t s = cudaEventQuery(marks_.front().event);
      if (s == cudaErrorNotReady) return false;
      EPCOMM_CUDA(s);
      spare_events_.push_back(marks_.front().event);
      marks_.pop_front();
    }
    return true;
  }

 private:
  // Every entry point may run on the caller's thread or the progress thread: make
  // this mover's device current, and reuse the lists once the stream drained.
  void prepare() {
    EPCOMM_CUDA(cudaSetDevice(device_));
    if (idle()) lists_.reset();
  }

  // Room for a batch whose lists are these byte counts.
  void reserve(std::initializer_list<std::size_t> list_bytes) {
    std::size_t total = 0;
    for (std::size_t b : list_bytes) total += PinnedLists::room(b);
    lists_.reserve(total, [this] { EPCOMM_CUDA(cudaStreamSynchronize(stream_)); });
  }
  std::byte* put_bytes(const void* data, std::size_t bytes) { return lists_.put(data, bytes); }
  template <class T>
  const T* put(const std::vector<T>& v) {
    return reinterpret_cast<const T*>(put_bytes(v.data(), v.size() * sizeof(T)));
  }
  template <class T>
  static std::size_t bytes_of(const std::vector<T>& v) {
    return v.size() * sizeof(T);
  }

  int device_;
  PinnedLists lists_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t caller_ready_ = nullptr;
  int64_t* bad_ = nullptr;
  // Marks not yet known to be passed, oldest first (mark(), reached()).
  struct Mark {
    uint64_t seq;
    cudaEvent_t event;
  };
  std::deque<Mark> marks_;
  std::vector<cudaEvent_t> spare_events_;
  uint64_t marked_ = 0;
};

}  // namespace

std::unique_ptr<RowMover> make_device_row_mover(int device, std::size_t list_bytes, int sm_budget) {
  return std::make_unique<DeviceRowMover>(device, list_bytes, sm_budget);
}

}  // namespace epcomm::detail
