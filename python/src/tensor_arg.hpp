// SPDX-License-Identifier: MIT
// A tensor argument from Python, taken through DLPack: any object with __dlpack__
// (torch tensors of any version that has it, numpy arrays). The binding never sees a
// torch type, so one build serves every torch. Checks throw epcomm::Error with the
// rank, the operation and the argument's name, like the library's own errors.
#pragma once

#include <dlpack/dlpack.h>
#include <epcomm/error.hpp>
#include <epcomm/types.hpp>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

namespace epcomm_py {

namespace py = pybind11;

// Where an error is reported from: "epcomm rank R: <op>: ...".
struct Site {
  int rank;
  const char* op;
};

[[noreturn]] void fail(const Site& site, epcomm::ErrorCode code, const std::string& what);

// Where an exchange's tensors live: host memory, or CUDA memory of one device
// (ExchangeConfig::memory and ::device, the ordinal resolved).
struct Space {
  epcomm::MemorySpace memory = epcomm::MemorySpace::kHost;
  int device = -1;
};

// Element types the binding accepts, by name in messages.
enum class Elem { kF32, kBF16, kI32, kI64, kU8 };
const char* elem_name(Elem e);

class TensorArg {
 public:
  // Borrows obj's memory for the life of this object (the DLPack capsule is kept).
  TensorArg(const Site& site, const char* name, const py::handle& obj);

  // Checks; each throws epcomm::Error naming the argument and the bad value.
  // on_host: CPU (or CUDA-pinned host) memory, for the host-only helpers (router,
  // expert load). in: the exchange's memory space; a device exchange takes CUDA
  // memory of its own device only (pinned host memory would be read over PCIe).
  TensorArg& on_host();
  TensorArg& in(const Space& space);
  TensorArg& contiguous();
  TensorArg& of(std::initializer_list<Elem> allowed);
  // dims: the expected sizes, -1 for any.
  TensorArg& shaped(std::initializer_list<int64_t> dims);

  Elem elem() const;
  int64_t dim(int i) const { return t_->shape[i]; }
  int ndim() const { return t_->ndim; }
  int64_t numel() const;
  void* data() const { return static_cast<char*>(t_->data) + t_->byte_offset; }
  template <class T>
  T* as() const {
    return static_cast<T*>(data());
  }
  std::string shape_string() const;

 private:
  Site site_;
  std::string name_;
  py::object capsule_;
  DLTensor* t_ = nullptr;
};

}  // namespace epcomm_py
