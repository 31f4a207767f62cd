// SPDX-License-Identifier: MIT
#include "tensor_arg.hpp"

#include <sstream>

namespace epcomm_py {

void fail(const Site& site, epcomm::ErrorCode code, const std::string& what) {
  throw epcomm::Error(code, "epcomm rank " + std::to_string(site.rank) + ": " + site.op + ": " + what);
}

const char* elem_name(Elem e) {
  switch (e) {
    case Elem::kF32: return "float32";
    case Elem::kBF16: return "bfloat16";
    case Elem::kI32: return "int32";
    case Elem::kI64: return "int64";
    case Elem::kU8: return "uint8";
  }
  return "?";
}

namespace {

std::string dl_type_name(const DLDataType& t) {
  std::ostringstream os;
  switch (t.code) {
    case kDLInt: os << "int"; break;
    case kDLUInt: os << "uint"; break;
    case kDLFloat: os << "float"; break;
    case kDLBfloat: os << "bfloat"; break;
    default: os << "type" << static_cast<int>(t.code) << "_"; break;
  }
  os << static_cast<int>(t.bits);
  if (t.lanes != 1) os << "x" << t.lanes;
  return os.str();
}

bool matches(const DLDataType& t, Elem e) {
  if (t.lanes != 1) return false;
  switch (e) {
    case Elem::kF32: return t.code == kDLFloat && t.bits == 32;
    case Elem::kBF16: return t.code == kDLBfloat && t.bits == 16;
    case Elem::kI32: return t.code == kDLInt && t.bits == 32;
    case Elem::kI64: return t.code == kDLInt && t.bits == 64;
    case Elem::kU8: return t.code == kDLUInt && t.bits == 8;
  }
  return false;
}

}  // namespace

TensorArg::TensorArg(const Site& site, const char* name, const py::handle& obj) : site_(site), name_(name) {
  if (!py::hasattr(obj, "__dlpack__")) {
    fail(site_, epcomm::ErrorCode::kInvalidArgument,
         name_ + " is a " + std::string(py::str(py::type::of(obj).attr("__name__"))) +
             ", not a tensor (it has no __dlpack__)");
  }
  try {
    capsule_ = obj.attr("__dlpack__")();
  } catch (py::error_already_set& e) {
    // torch refuses tensors that require grad, meta tensors, ...: say which argument.
    fail(site_, epcomm::ErrorCode::kInvalidArgument, name_ + " cannot be exported through DLPack: " + e.what());
  }
  auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule_.ptr(), "dltensor"));
  if (managed == nullptr) {
    PyErr_Clear();
    fail(site_, epcomm::ErrorCode::kInvalidArgument, name_ + ".__dlpack__() did not return a DLPack capsule");
  }
  // The capsule keeps its name, so its destructor (when capsule_ goes) calls the
  // producer's deleter: the memory is borrowed exactly as long as this object lives.
  t_ = &managed->dl_tensor;
}

namespace {

std::string device_name(const DLDevice& d) {
  switch (d.device_type) {
    case kDLCPU: return "cpu";
    case kDLCUDAHost: return "cpu (CUDA-pinned)";
    case kDLCUDA: return "cuda:" + std::to_string(d.device_id);
    default: return "DLPack device type " + std::to_string(static_cast<int>(d.device_type)) + " id " +
                    std::to_string(d.device_id);
  }
}

}  // namespace

TensorArg& TensorArg::on_host() {
  if (t_->device.device_type == kDLCPU || t_->device.device_type == kDLCUDAHost) return *this;
  fail(site_, epcomm::ErrorCode::kInvalidArgument,
       name_ + " lives on " + device_name(t_->device) + "; this function takes CPU tensors");
}

TensorArg& TensorArg::in(const Space& space) {
  if (space.memory == epcomm::MemorySpace::kHost) {
    if (t_->device.device_type == kDLCPU || t_->device.device_type == kDLCUDAHost) return *this;
    fail(site_, epcomm::ErrorCode::kInvalidArgument,
         name_ + " lives on " + device_name(t_->device) + " but the buffer exchanges CPU tensors");
  }
  if (t_->device.device_type == kDLCUDA && t_->device.device_id == space.device) return *this;
  fail(site_, epcomm::ErrorCode::kInvalidArgument,
       name_ + " lives on " + device_name(t_->device) + " but the buffer exchanges tensors on cuda:" +
           std::to_string(space.device));
}

TensorArg& TensorArg::contiguous() {
  // An empty tensor has no layout to get wrong (producers give it any strides).
  if (t_->strides == nullptr || numel() == 0) return *this;
  int64_t expect = 1;
  for (int i = t_->ndim - 1; i >= 0; --i) {
    if (t_->shape[i] != 1 && t_->strides[i] != expect) {
      std::ostringstream os;
      os << name_ << " is not contiguous (shape " << shape_string() << ", stride " << t_->strides[i]
         << " in dimension " << i << " where " << expect << " is needed); pass .contiguous()";
      fail(site_, epcomm::ErrorCode::kInvalidArgument, os.str());
    }
    expect *= t_->shape[i];
  }
  return *this;
}

TensorArg& TensorArg::of(std::initializer_list<Elem> allowed) {
  for (Elem e : allowed) {
    if (matches(t_->dtype, e)) return *this;
  }
  std::string want;
  for (Elem e : allowed) want += (want.empty() ? "" : " or ") + std::string(elem_name(e));
  fail(site_, epcomm::ErrorCode::kInvalidArgument,
       name_ + " has dtype " + dl_type_name(t_->dtype) + " where " + want + " is needed");
}

TensorArg& TensorArg::shaped(std::initializer_list<int64_t> dims) {
  bool ok = static_cast<int>(dims.size()) == t_->ndim;
  int i = 0;
  for (int64_t d : dims) {
    if (ok && d >= 0 && t_->shape[i] != d) ok = false;
    ++i;
  }
  if (ok) return *this;
  std::ostringstream want;
  want << "[";
  i = 0;
  for (int64_t d : dims) {
    want << (i++ ? ", " : "");
    if (d < 0) {
      want << "*";
    } else {
      want << d;
    }
  }
  want << "]";
  fail(site_, epcomm::ErrorCode::kInvalidArgument,
       name_ + " has shape " + shape_string() + " where " + want.str() + " is needed");
}

Elem TensorArg::elem() const {
  for (Elem e : {Elem::kF32, Elem::kBF16, Elem::kI32, Elem::kI64, Elem::kU8}) {
    if (matches(t_->dtype, e)) return e;
  }
  fail(site_, epcomm::ErrorCode::kInvalidArgument, name_ + " has unsupported dtype " + dl_type_name(t_->dtype));
}

int64_t TensorArg::numel() const {
  int64_t n = 1;
  for (int i = 0; i < t_->ndim; ++i) n *= t_->shape[i];
  return n;
}

std::string TensorArg::shape_string() const {
  std::ostringstream os;
  os << "[";
  for (int i = 0; i < t_->ndim; ++i) os << (i ? ", " : "") << t_->shape[i];
  os << "]";
  return os.str();
}

}  // namespace epcomm_py
