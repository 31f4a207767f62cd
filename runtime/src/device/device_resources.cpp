// SPDX-License-Identifier: MIT
#include "device/device_resources.hpp"

#include <cuda_runtime_api.h>

#include <vector>

#include "device/cuda_call.hpp"
#include "device/device_row_mover.hpp"
#include "device/ipc_memory.hpp"
#include "device/sm_budget.hpp"
#include "device/stream_gate.hpp"
#include "epcomm_kernels/cuda_rows.hpp"
#include "util/agree.hpp"
#include "util/env.hpp"
#include "util/log.hpp"

namespace epcomm::detail {
namespace {

int chosen_device(int device) {
  int count = 0;
  const cudaError_t s = cudaGetDeviceCount(&count);
  if (s != cudaSuccess) cudaGetLastError();
  EPCOMM_REQUIRE(s == cudaSuccess && count > 0, kUnsupported,
                 "ExchangeConfig::memory is device but this rank sees no CUDA device ("
                     << (s == cudaSuccess ? "none found" : cudaGetErrorString(s)) << ")");
  if (device < 0) EPCOMM_CUDA(cudaGetDevice(&device));
  EPCOMM_REQUIRE(device < count, kInvalidArgument,
                 "ExchangeConfig::device=" << device << " but this rank sees " << count << " CUDA device(s)");
  return device;
}

class CudaResources final : public DeviceResources {
 public:
  CudaResources(GroupState& group, int device, int sm_budget, std::size_t shared_bytes, bool share,
                std::size_t private_bytes, std::size_t pinned_bytes)
      : device_(device),
        sm_budget_(sm_budget),
        shared_(group, device, shared_bytes, share),
        private_(device, private_bytes, "the exchange's staging buffers"),
        gate_(device, group.timeout_s),
        hold_streams_(env::hold_streams()) {
    if (pinned_bytes > 0) {
      void* p = nullptr;
      EPCOMM_CUDA(cudaHostAlloc(&p, pinned_bytes, cudaHostAllocMapped | cudaHostAllocPortable));
      pinned_ = static_cast<std::byte*>(p);
    }
  }
  ~CudaResources() override {
    if (pinned_ != nullptr) cudaFreeHost(pinned_);
  }

  int device() const override { return device_; }
  std::byte* shared_base(int local_rank) const override { return shared_.base(local_rank); }
  std::byte* private_base() const override { return private_.get(); }
  std::byte* pinned_base() const override { return pinned_; }
  std::unique_ptr<RowMover> make_mover(std::size_t list_bytes) override {
    return make_device_row_mover(device_, list_bytes, sm_budget_);
  }
  std::unique_ptr<DevicePlanSteps> make_plan_steps(RowMover& mover, PlanStepsShape shape) override {
    return make_cuda_plan_steps(device_, mover, std::move(shape));
  }
  std::shared_ptr<void> register_host(void* ptr, std::size_t bytes) override {
    EPCOMM_CUDA(cudaSetDevice(device_));
    return std::make_shared<HostRegistration>(ptr, bytes);
  }
  void check_pointer(const void* ptr, bool device, const char* what) const override {
    cudaPointerAttributes a{};
    EPCOMM_CUDA(cudaPointerGetAttributes(&a, ptr));
    if (device) {
      EPCOMM_REQUIRE(a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged, kInvalidArgument,
                     what << " (" << ptr << ") is host memory but the exchange's memory space is device");
      EPCOMM_REQUIRE(a.device == device_, kInvalidArgument,
                     what << " (" << ptr << ") is memory of CUDA device " << a.device << " but the exchange runs on device "
                          << device_);
    } else {
      EPCOMM_REQUIRE(a.type != cudaMemoryTypeDevice, kInvalidArgument,
                     what << " (" << ptr << ") is memory of CUDA device " << a.device
                          << " but the exchange's memory space is host");
    }
  }
  void check_stream(void* stream) const override {
    if (stream == nullptr) return;
    int d = -1;
    EPCOMM_CUDA(cudaStreamGetDevice(static_cast<cudaStream_t>(stream), &d));
    EPCOMM_REQUIRE(d == device_, kInvalidArgument,
                   "the stream passed belongs to CUDA device " << d << " but the exchange runs on device " << device_);
  }
  void read_async(void* stream, void* dst, const void* src, std::size_t bytes) const override {
    if (bytes == 0) return;
    EPCOMM_CUDA(cudaSetDevice(device_));
    EPCOMM_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(stream)));
  }
  void synchronize(void* stream) const override {
    EPCOMM_CUDA(cudaSetDevice(device_));
    EPCOMM_CUDA(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
  }
  void hold(void* stream, uint64_t seq) override {
    if (hold_streams_) gate_.hold(stream, seq);
  }
  void release(uint64_t seq) override { gate_.release(seq); }
  void release_all() override { gate_.release_all(); }
  bool stream_wait_timed_out() const override { return gate_.timed_out(); }

 private:
  int device_;
  int sm_budget_;
  IpcMemory shared_;
  DeviceBuffer private_;
  StreamGate gate_;
  bool hold_streams_;
  std::byte* pinned_ = nullptr;
};

}  // namespace

std::unique_ptr<DeviceResources> make_device_resources(GroupState& group, int device, int sm_budget,
                                                       std::size_t shared_bytes, bool share, std::size_t private_bytes,
                                                       std::size_t pinned_bytes) {
  // Every rank of the node checks its device first, so none waits in the mapping
  // collective for a peer that already gave up.
  std::string why;
  ErrorCode code = ErrorCode::kUnsupported;
  try {
    device = chosen_device(device);
    check_sm_budget(sm_budget, device, "ExchangeConfig");
    EPCOMM_CUDA(cudaSetDevice(device));
    // Before any stream is held: loading a kernel later could wait for a held one.
    kernels::cuda::preload_kernels();
  } catch (const Error& e) {
    why = e.what();
    code = e.code();
  }
  const std::string failed = ranks_that_failed(group.node_comm, why.empty(),
                                               [&](int ld) { return group.global_rank(group.node, ld); });
  if (!why.empty()) throw Error(code, why);
  EPCOMM_REQUIRE(failed.empty(), kUnsupported,
                 "node peer(s) " << failed << " cannot use a CUDA device for the exchange; see their errors");
  EPCOMM_LOG(kInfo, "exchange on CUDA device " << device << ": " << shared_bytes
                                               << (share ? " bytes shared with node peers, " : " bytes of slots, ")
                                               << private_bytes << " private, " << pinned_bytes << " pinned host");
  if (sm_budget > 0) EPCOMM_LOG(kInfo, "exchange kernels: " << sm_budget << " SMs at most (gpu_sm_budget)");
  return std::make_unique<CudaResources>(group, device, sm_budget, shared_bytes, share, private_bytes, pinned_bytes);
}

}  // namespace epcomm::detail
