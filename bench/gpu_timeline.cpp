// SPDX-License-Identifier: MIT
#include "gpu_timeline.hpp"

#include <cupti.h>
#include <cxxabi.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace epcomm_bench {
namespace {

void cupti_ok(CUptiResult r, const char* what) {
  if (r == CUPTI_SUCCESS) return;
  const char* s = nullptr;
  cuptiGetResultString(r, &s);
  throw std::runtime_error(std::string(what) + ": " + (s ? s : "CUPTI error"));
}

struct Activity {
  uint64_t start, end;
  std::string name;
  uint32_t stream;
};

struct Call {
  uint64_t start, end;
  std::string name;
};

// CUPTI delivers records to plain functions: one timeline per process.
std::mutex g_mu;
std::vector<Activity>* g_gpu = nullptr;
std::vector<Call>* g_calls = nullptr;

constexpr std::size_t kBufferBytes = 8u << 20;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = kBufferBytes;
  *max_records = 0;
}

// "void ns::(anonymous namespace)::kernel<...>(args)" -> "ns::kernel<...>", at most 70 chars.
std::string short_name(const char* mangled) {
  int status = 0;
  char* d = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string s = status == 0 && d ? d : mangled;
  std::free(d);
  for (std::size_t p; (p = s.find("(anonymous namespace)::")) != std::string::npos;) s.erase(p, 23);
  if (const std::size_t p = s.find('('); p != std::string::npos) s.resize(p);
  if (s.rfind("void ", 0) == 0) s.erase(0, 5);
  if (s.size() > 70) s = s.substr(0, 67) + "...";
  return s;
}

std::string call_name(CUpti_CallbackDomain domain, uint32_t cbid) {
  const char* name = nullptr;
  if (cuptiGetCallbackName(domain, cbid, &name) != CUPTI_SUCCESS || name == nullptr) return "?";
  return name;
}

const char* copy_kind(uint8_t kind) {
  switch (kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD: return "HtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH: return "DtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD: return "DtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_PTOP: return "PtoP";
    default: return "other";
  }
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  std::lock_guard<std::mutex> lock(g_mu);
  CUpti_Activity* rec = nullptr;
  while (g_gpu != nullptr && cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
    switch (rec->kind) {
      case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
        const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(rec);
        // The launch shape, blocks x threads: what an SM budget changes.
        const std::string shape = " <<<" + std::to_string(static_cast<int64_t>(k->gridX) * k->gridY * k->gridZ) +
                                  " x " + std::to_string(k->blockX * k->blockY * k->blockZ) + ">>>";
        g_gpu->push_back({k->start, k->end, short_name(k->name) + shape, k->streamId});
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMCPY: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(rec);
        g_gpu->push_back({m->start, m->end,
                          std::string("memcpy ") + copy_kind(m->copyKind) + " " + std::to_string(m->bytes) + " B",
                          m->streamId});
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMSET: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(rec);
        g_gpu->push_back({m->start, m->end, "memset " + std::to_string(m->bytes) + " B", m->streamId});
        break;
      }
      case CUPTI_ACTIVITY_KIND_RUNTIME:
      case CUPTI_ACTIVITY_KIND_DRIVER: {
        const auto* a = reinterpret_cast<const CUpti_ActivityAPI*>(rec);
        const auto domain =
            rec->kind == CUPTI_ACTIVITY_KIND_RUNTIME ? CUPTI_CB_DOMAIN_RUNTIME_API : CUPTI_CB_DOMAIN_DRIVER_API;
        g_calls->push_back({a->start, a->end, call_name(domain, a->cbid)});
        break;
      }
      default: break;
    }
  }
  std::free(buffer);
}

constexpr CUpti_ActivityKind kKinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY,
                                         CUPTI_ACTIVITY_KIND_MEMSET, CUPTI_ACTIVITY_KIND_RUNTIME,
                                         CUPTI_ACTIVITY_KIND_DRIVER};

}  // namespace

struct GpuTimeline::Records {
  std::vector<Activity> gpu;
  std::vector<Call> calls;
};

GpuTimeline::GpuTimeline() : records_(std::make_unique<Records>()) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_gpu != nullptr) throw std::logic_error("one GpuTimeline per process");
  g_gpu = &records_->gpu;
  g_calls = &records_->calls;
  cupti_ok(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed), "cuptiActivityRegisterCallbacks");
}

GpuTimeline::~GpuTimeline() {
  for (CUpti_ActivityKind k : kKinds) cuptiActivityDisable(k);
  cuptiActivityFlushAll(1);
  std::lock_guard<std::mutex> lock(g_mu);
  g_gpu = nullptr;
  g_calls = nullptr;
}

void GpuTimeline::start() {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    records_->gpu.clear();
    records_->calls.clear();
  }
  for (CUpti_ActivityKind k : kKinds) cupti_ok(cuptiActivityEnable(k), "cuptiActivityEnable");
}

void GpuTimeline::stop() {
  for (CUpti_ActivityKind k : kKinds) cupti_ok(cuptiActivityDisable(k), "cuptiActivityDisable");
  cupti_ok(cuptiActivityFlushAll(1), "cuptiActivityFlushAll");
}

uint64_t GpuTimeline::now_ns() {
  uint64_t t = 0;
  cupti_ok(cuptiGetTimestamp(&t), "cuptiGetTimestamp");
  return t;
}

void GpuTimeline::print(std::FILE* f, const char* title, uint64_t begin_ns, uint64_t end_ns) const {
  std::lock_guard<std::mutex> lock(g_mu);
  const auto us = [&](uint64_t t) { return (static_cast<double>(t) - static_cast<double>(begin_ns)) / 1e3; };
  std::vector<Activity> gpu;
  for (const Activity& a : records_->gpu) {
    if (a.end > begin_ns && a.start < end_ns) gpu.push_back(a);
  }
  std::sort(gpu.begin(), gpu.end(), [](const Activity& a, const Activity& b) { return a.start < b.start; });
  std::fprintf(f, "-- %s: %.1f us from the call to the caller's stream being done\n", title, us(end_ns));
  std::fprintf(f, "   %9s %9s %6s  %s\n", "start_us", "dur_us", "stream", "GPU activity");
  double busy = 0, covered_to = static_cast<double>(begin_ns);
  for (const Activity& a : gpu) {
    std::fprintf(f, "   %9.1f %9.1f %6u  %s\n", us(a.start), (a.end - a.start) / 1e3, a.stream, a.name.c_str());
    // Union of the intervals: the GPU is busy when any stream runs something.
    const double s = std::max(static_cast<double>(a.start), covered_to), e = static_cast<double>(a.end);
    if (e > s) busy += e - s;
    covered_to = std::max(covered_to, e);
  }
  std::fprintf(f, "   GPU busy %.1f us of %.1f us\n", busy / 1e3, us(end_ns));
  struct Total {
    int count = 0;
    double sum = 0, max = 0, first = -1;
  };
  std::map<std::string, Total> totals;
  for (const Call& c : records_->calls) {
    if (c.end <= begin_ns || c.start >= end_ns) continue;
    Total& t = totals[c.name];
    const double d = (c.end - c.start) / 1e3;
    ++t.count;
    t.sum += d;
    t.max = std::max(t.max, d);
    if (t.first < 0 || us(c.start) < t.first) t.first = us(c.start);
  }
  std::fprintf(f, "   %6s %9s %9s %9s  %s\n", "calls", "total_us", "max_us", "first_us", "CUDA call (all threads)");
  for (const auto& [name, t] : totals) {
    std::fprintf(f, "   %6d %9.1f %9.1f %9.1f  %s\n", t.count, t.sum, t.max, t.first, name.c_str());
  }
}

}  // namespace epcomm_bench
