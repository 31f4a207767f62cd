// SPDX-License-Identifier: MIT
// epcomm._epcomm: the C++ API for Python. Tensors come in through DLPack
// (tensor_arg.hpp) and results are written into tensors the caller allocated, so
// nothing here depends on torch; epcomm/torch.py builds the tensor API on top.
#include <epcomm/epcomm.hpp>
#include <mpi.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <climits>
#include <memory>
#include <vector>

#include "tensor_arg.hpp"

namespace py = pybind11;
using epcomm_py::Elem;
using epcomm_py::Site;
using epcomm_py::TensorArg;

namespace {

int world_rank() {
  int initialized = 0, rank = -1;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

Elem elem_of(epcomm::DType t) { return t == epcomm::DType::kF32 ? Elem::kF32 : Elem::kBF16; }

using Inputs = std::vector<std::unique_ptr<TensorArg>>;

// An exchange that Python may close before the interpreter (and mpi4py's
// MPI_Finalize) ends; operations keep the C++ exchange alive on their own.
class PyExchange {
 public:
  PyExchange(const std::shared_ptr<epcomm::Group>& group, const epcomm::ExchangeConfig& config)
      : group_(group), rank_(group->rank()), space_{config.memory, config.device} {
    py::gil_scoped_release nogil;  // collective: peers may need time to arrive
    ex_ = std::make_shared<epcomm::Exchange>(*group, config);
  }
  epcomm::Exchange& get(const char* op) const {
    if (!ex_) epcomm_py::fail(site(op), epcomm::ErrorCode::kInvalidArgument, "the buffer was closed");
    return *ex_;
  }
  const std::shared_ptr<epcomm::Exchange>& shared(const char* op) const {
    get(op);
    return ex_;
  }
  void close() { ex_.reset(); }
  Site site(const char* op) const { return Site{rank_, op}; }
  int rank() const { return rank_; }
  const epcomm_py::Space& space() const { return space_; }

 private:
  std::shared_ptr<epcomm::Group> group_;
  std::shared_ptr<epcomm::Exchange> ex_;
  int rank_;
  epcomm_py::Space space_;
};

// One dispatch: its handle and, until wait() returned, the inputs it reads.
struct PyDispatch {
  std::shared_ptr<epcomm::Exchange> ex;
  epcomm::DispatchHandle handle;
  Inputs inputs;
  std::vector<int32_t> idx32;  // topk_idx converted from int64
  int rank = 0;
  epcomm_py::Space space;

  Site site(const char* op) const { return Site{rank, op}; }
  const epcomm::ExchangeConfig& config() const { return ex->config(); }
  void wait() {
    {
      py::gil_scoped_release nogil;
      handle.wait();
    }
    inputs.clear();
  }
};

struct PyCombine {
  epcomm::CombineHandle handle;
  Inputs inputs;
  void wait() {
    {
      py::gil_scoped_release nogil;
      handle.wait();
    }
    inputs.clear();
  }
};

std::shared_ptr<PyDispatch> dispatch_begin(PyExchange& self, const py::handle& x, const py::handle& topk_idx,
                                           const py::handle& topk_weights, const std::shared_ptr<PyDispatch>& route,
                                           uintptr_t stream) {
  const Site site = self.site("dispatch");
  const epcomm_py::Space& space = self.space();
  auto d = std::make_shared<PyDispatch>();
  d->ex = self.shared("dispatch");
  d->rank = self.rank();
  d->space = space;
  const epcomm::ExchangeConfig& c = d->ex->config();
  auto& xa = *d->inputs.emplace_back(std::make_unique<TensorArg>(site, "x", x));
  xa.in(space).of({elem_of(c.dtype)}).shaped({-1, c.hidden}).contiguous();
  const int64_t T = xa.dim(0);
  if (T > c.max_tokens_per_rank) {
    epcomm_py::fail(site, epcomm::ErrorCode::kBufferTooSmall,
                    "x has " + std::to_string(T) + " tokens, more than max_tokens_per_rank=" +
                        std::to_string(c.max_tokens_per_rank));
  }
  auto& ia = *d->inputs.emplace_back(std::make_unique<TensorArg>(site, "topk_idx", topk_idx));
  // int64 ids are narrowed here for host tensors; device ids must come as int32
  // (epcomm.torch narrows them on the GPU), since this module runs no kernels.
  if (space.memory == epcomm::MemorySpace::kDevice) {
    ia.in(space).of({Elem::kI32});
  } else {
    ia.in(space).of({Elem::kI32, Elem::kI64});
  }
  ia.shaped({T, c.topk}).contiguous();
  auto& wa = *d->inputs.emplace_back(std::make_unique<TensorArg>(site, "topk_weights", topk_weights));
  wa.in(space).of({Elem::kF32}).shaped({T, c.topk}).contiguous();

  const int32_t* idx = nullptr;
  if (ia.elem() == Elem::kI32) {
    idx = ia.as<int32_t>();
  } else {
    // Out-of-range ids are the library's to report; only values int32 cannot hold
    // are caught here, so they are not wrapped into valid-looking ids.
    const int64_t* src = ia.as<int64_t>();
    d->idx32.resize(static_cast<std::size_t>(ia.numel()));
    for (int64_t i = 0; i < ia.numel(); ++i) {
      if (src[i] < INT32_MIN || src[i] > INT32_MAX) {
        epcomm_py::fail(site, epcomm::ErrorCode::kInvalidArgument,
                        "topk_idx[" + std::to_string(i / c.topk) + "][" + std::to_string(i % c.topk) +
                            "]=" + std::to_string(src[i]) + " is outside [-1, " + std::to_string(c.num_experts) + ")");
      }
      d->idx32[i] = static_cast<int32_t>(src[i]);
    }
    idx = d->idx32.data();
  }
  epcomm::DispatchInput in;
  in.x = xa.data();
  in.topk_idx = idx;
  in.topk_weights = wa.as<float>();
  in.num_tokens = static_cast<int>(T);
  in.memory = space.memory;
  in.stream = reinterpret_cast<void*>(stream);
  if (route) {
    if (route->ex != d->ex) {
      epcomm_py::fail(site, epcomm::ErrorCode::kInvalidArgument, "handle comes from another buffer");
    }
    d->handle = d->ex->dispatch_begin(in, route->handle);
  } else {
    d->handle = d->ex->dispatch_begin(in);
  }
  return d;
}

std::shared_ptr<PyCombine> combine_begin(PyExchange& self, PyDispatch& route, const py::handle& expert_out,
                                         const py::handle& out, bool weighted, uintptr_t stream) {
  const Site site = self.site("combine");
  epcomm::Exchange& ex = self.get("combine");
  if (route.ex.get() != &ex) {
    epcomm_py::fail(site, epcomm::ErrorCode::kInvalidArgument, "handle comes from another buffer");
  }
  if (!route.handle.done()) {
    epcomm_py::fail(site, epcomm::ErrorCode::kInvalidArgument, "the dispatch of this handle has not been waited for");
  }
  const epcomm::ExchangeConfig& c = ex.config();
  auto op = std::make_shared<PyCombine>();
  auto& ya = *op->inputs.emplace_back(std::make_unique<TensorArg>(site, "expert_out", expert_out));
  ya.in(self.space()).of({elem_of(c.dtype)}).shaped({route.handle.num_rows(), c.hidden}).contiguous();
  auto& oa = *op->inputs.emplace_back(std::make_unique<TensorArg>(site, "out", out));
  oa.in(self.space()).of({elem_of(c.dtype)}).shaped({route.handle.num_tokens(), c.hidden}).contiguous();
  epcomm::CombineOptions options;
  options.weighted = weighted;
  options.stream = reinterpret_cast<void*>(stream);
  op->handle = ex.combine_begin(route.handle, ya.data(), ya.dim(0), oa.data(), static_cast<int>(oa.dim(0)), options);
  return op;
}

// Decoded rows into out [num_rows, hidden] of float32 or bfloat16 (padding rows
// untouched: the caller passes zeros). With device memory the decode runs on the
// exchange's stream and is finished when this returns.
void copy_rows(const PyDispatch& d, const py::handle& out) {
  const Site site = d.site("dispatch");
  TensorArg o(site, "out", out);
  o.in(d.space).of({Elem::kF32, Elem::kBF16}).shaped({d.handle.num_rows(), d.config().hidden}).contiguous();
  d.handle.decode_rows(o.data(), o.elem() == Elem::kF32 ? epcomm::DType::kF32 : epcomm::DType::kBF16);
}

// A DLPack view of one of the handle's buffers, in the exchange's memory space: the
// caller copies what it keeps (epcomm.torch clones at once), so rows and row
// metadata reach torch without a detour through host memory on device exchanges.
// The view keeps the dispatch (and so its slot) alive until the consumer drops it.
struct View {
  std::shared_ptr<PyDispatch> owner;
  int64_t shape[2] = {0, 0};
  DLManagedTensor managed{};
};

void delete_view(DLManagedTensor* m) {
  // The last reference to a PyDispatch may go here, and it holds Python objects;
  // consumers may call deleters without the GIL (torch frees storage anywhere).
  const PyGILState_STATE gil = PyGILState_Ensure();
  delete static_cast<View*>(m->manager_ctx);
  PyGILState_Release(gil);
}

py::capsule view_of(const std::shared_ptr<PyDispatch>& d, const std::string& what) {
  const Site site = d->site("view");
  const int64_t R = d->handle.num_rows();
  auto v = std::make_unique<View>();
  v->owner = d;
  const void* data = nullptr;
  DLDataType type{kDLInt, 32, 1};
  int ndim = 1;
  v->shape[0] = R;
  if (what == "rows") {
    data = d->handle.rows();
    type = DLDataType{kDLUInt, 8, 1};
    ndim = 2;
    v->shape[1] = static_cast<int64_t>(d->handle.row_bytes());
  } else if (what == "weights") {
    data = d->handle.row_weights();
    type = DLDataType{kDLFloat, 32, 1};
  } else if (what == "src_rank") {
    data = d->handle.row_src_rank();
  } else if (what == "src_token") {
    data = d->handle.row_src_token();
  } else {
    epcomm_py::fail(site, epcomm::ErrorCode::kInvalidArgument,
                    "no view named '" + what + "' (rows, weights, src_rank, src_token)");
  }
  DLTensor& t = v->managed.dl_tensor;
  t.data = const_cast<void*>(data);
  t.device = d->space.memory == epcomm::MemorySpace::kDevice ? DLDevice{kDLCUDA, d->space.device}
                                                              : DLDevice{kDLCPU, 0};
  t.ndim = ndim;
  t.dtype = type;
  t.shape = v->shape;
  t.strides = nullptr;  // compact, row-major
  t.byte_offset = 0;
  v->managed.manager_ctx = v.get();
  v->managed.deleter = delete_view;
  DLManagedTensor* managed = &v.release()->managed;
  // A capsule that no consumer took (still named "dltensor") frees its view itself.
  return py::capsule(managed, "dltensor", [](PyObject* capsule) {
    if (PyCapsule_IsValid(capsule, "dltensor")) {
      auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
      m->deleter(m);
    }
  });
}

void route(const py::handle& logits, const py::object& bias, const py::handle& topk_idx,
           const py::handle& topk_weights, const epcomm::RouterConfig& config) {
  const Site site{world_rank(), "route"};
  const epcomm::NodeLimitedRouter router(config);
  TensorArg l(site, "logits", logits);
  l.on_host().of({Elem::kF32}).shaped({-1, config.num_experts}).contiguous();
  const int64_t T = l.dim(0);
  if (T > INT_MAX) epcomm_py::fail(site, epcomm::ErrorCode::kInvalidArgument, "too many tokens");
  std::unique_ptr<TensorArg> b;
  if (!bias.is_none()) {
    b = std::make_unique<TensorArg>(site, "bias", bias);
    b->on_host().of({Elem::kF32}).shaped({config.num_experts}).contiguous();
  }
  TensorArg i(site, "topk_idx", topk_idx);
  i.on_host().of({Elem::kI32}).shaped({T, config.topk}).contiguous();
  TensorArg w(site, "topk_weights", topk_weights);
  w.on_host().of({Elem::kF32}).shaped({T, config.topk}).contiguous();
  router.route(l.as<float>(), static_cast<int>(T), b ? b->as<float>() : nullptr, i.as<int32_t>(), w.as<float>());
}

void count_expert_load(const py::handle& topk_idx, int num_experts, const py::handle& load) {
  const Site site{world_rank(), "count_expert_load"};
  TensorArg i(site, "topk_idx", topk_idx);
  i.on_host().of({Elem::kI32}).shaped({-1, -1}).contiguous();
  TensorArg o(site, "load", load);
  o.on_host().of({Elem::kI64}).shaped({num_experts}).contiguous();
  epcomm::count_expert_load(i.as<int32_t>(), static_cast<int>(i.dim(0)), static_cast<int>(i.dim(1)), num_experts,
                            o.as<int64_t>());
}

void update_expert_bias(const py::handle& bias, const py::handle& load, float gamma) {
  const Site site{world_rank(), "update_expert_bias"};
  TensorArg b(site, "bias", bias);
  b.on_host().of({Elem::kF32}).shaped({-1}).contiguous();
  TensorArg l(site, "load", load);
  l.on_host().of({Elem::kI64}).shaped({b.dim(0)}).contiguous();
  epcomm::update_expert_bias(b.as<float>(), l.as<int64_t>(), static_cast<int>(b.dim(0)), gamma);
}

}  // namespace

PYBIND11_MODULE(_epcomm, m) {
  m.doc() = "epcomm C++ API over DLPack tensors (use the epcomm package, not this module)";

  // epcomm.Error(RuntimeError) with .code, the ErrorCode's name.
  static py::exception<epcomm::Error> error(m, "Error", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const epcomm::Error& e) {
      py::object instance = py::reinterpret_borrow<py::object>(error.ptr())(e.what());
      instance.attr("code") = epcomm::to_string(e.code());
      PyErr_SetObject(error.ptr(), instance.ptr());
    }
  });

  py::class_<epcomm::Group, std::shared_ptr<epcomm::Group>>(m, "Group")
      .def(py::init([](uintptr_t comm_address, int ranks_per_node, double timeout_s, int progress) {
             epcomm::GroupOptions o;
             o.ranks_per_node = ranks_per_node;
             o.timeout_s = timeout_s;
             o.progress = static_cast<epcomm::GroupOptions::Progress>(progress);
             // The address of an MPI_Comm (mpi4py's MPI._addressof): works for
             // handle types that are pointers (Open MPI) and ints (MPICH) alike.
             const MPI_Comm comm = *reinterpret_cast<const MPI_Comm*>(comm_address);
             py::gil_scoped_release nogil;
             return std::make_shared<epcomm::Group>(comm, o);
           }),
           py::arg("comm_address"), py::arg("ranks_per_node") = 0, py::arg("timeout_s") = 0.0,
           py::arg("progress") = 0)
      .def_property_readonly("rank", &epcomm::Group::rank)
      .def_property_readonly("size", &epcomm::Group::size)
      .def_property_readonly("node", &epcomm::Group::node)
      .def_property_readonly("num_nodes", &epcomm::Group::num_nodes)
      .def_property_readonly("local_rank", &epcomm::Group::local_rank)
      .def_property_readonly("ranks_per_node", &epcomm::Group::ranks_per_node);

  py::class_<PyExchange>(m, "Exchange")
      .def(py::init([](const std::shared_ptr<epcomm::Group>& g, int num_experts, int topk, int hidden,
                       int max_tokens_per_rank, const std::string& dtype, const std::string& dispatch_format,
                       const std::string& combine_format, int expert_alignment, int64_t max_recv_rows,
                       int max_inflight, int device) {
             epcomm::ExchangeConfig c;
             c.num_experts = num_experts;
             c.topk = topk;
             c.hidden = hidden;
             c.max_tokens_per_rank = max_tokens_per_rank;
             c.dtype = epcomm::parse_dtype(dtype.c_str());
             c.dispatch_format = epcomm::parse_format(dispatch_format.c_str());
             c.combine_format = epcomm::parse_format(combine_format.c_str());
             c.expert_alignment = expert_alignment;
             c.max_recv_rows = max_recv_rows;
             c.max_inflight = max_inflight;
             // device: a CUDA ordinal (epcomm.torch resolves "cuda" to one), or -1
             // for host tensors.
             if (device >= 0) {
               c.memory = epcomm::MemorySpace::kDevice;
               c.device = device;
             }
             return std::make_unique<PyExchange>(g, c);
           }),
           py::arg("group"), py::arg("num_experts"), py::arg("topk"), py::arg("hidden"),
           py::arg("max_tokens_per_rank"), py::arg("dtype"), py::arg("dispatch_format"), py::arg("combine_format"),
           py::arg("expert_alignment"), py::arg("max_recv_rows"), py::arg("max_inflight"), py::arg("device") = -1)
      // stream: a cudaStream_t as an integer (torch's Stream.cuda_stream), 0 for
      // the legacy default stream; ignored by host exchanges.
      .def("dispatch_begin", &dispatch_begin, py::arg("x"), py::arg("topk_idx"), py::arg("topk_weights"),
           py::arg("route") = nullptr, py::arg("stream") = 0)
      .def("combine_begin", &combine_begin, py::arg("route"), py::arg("expert_out"), py::arg("out"),
           py::arg("weighted") = true, py::arg("stream") = 0)
      .def("close", &PyExchange::close)
      .def_property_readonly("transport", [](const PyExchange& e) { return e.get("transport").transport(); });

  py::class_<PyDispatch, std::shared_ptr<PyDispatch>>(m, "Dispatch")
      .def("wait", &PyDispatch::wait)
      .def("done", [](const PyDispatch& d) { return d.handle.done(); })
      .def_property_readonly("num_rows", [](const PyDispatch& d) { return d.handle.num_rows(); })
      .def_property_readonly("num_tokens", [](const PyDispatch& d) { return d.handle.num_tokens(); })
      .def_property_readonly("row_format", [](const PyDispatch& d) { return epcomm::to_string(d.handle.row_format()); })
      .def("expert_counts",
           [](const PyDispatch& d) {
             std::vector<int64_t> v;
             for (int j = 0; j < d.handle.num_local_experts(); ++j) v.push_back(d.handle.expert_count(j));
             return v;
           })
      .def("expert_offsets",
           [](const PyDispatch& d) {
             std::vector<int64_t> v;
             for (int j = 0; j <= d.handle.num_local_experts(); ++j) v.push_back(d.handle.expert_offset(j));
             return v;
           })
      .def("copy_rows", &copy_rows, py::arg("out"))
      .def("view", &view_of, py::arg("what"))
      .def("stats", [](const PyDispatch& d) {
        const epcomm::ExchangeStats s = d.handle.stats();
        return py::dict(py::arg("internode_bytes") = s.internode_bytes, py::arg("intranode_bytes") = s.intranode_bytes,
                        py::arg("layout_bytes") = s.layout_bytes);
      });

  py::class_<PyCombine, std::shared_ptr<PyCombine>>(m, "Combine")
      .def("wait", &PyCombine::wait)
      .def("done", [](const PyCombine& c) { return c.handle.done(); });

  py::class_<epcomm::RouterConfig>(m, "RouterConfig")
      .def(py::init<>())
      .def_readwrite("num_experts", &epcomm::RouterConfig::num_experts)
      .def_readwrite("topk", &epcomm::RouterConfig::topk)
      .def_readwrite("num_nodes", &epcomm::RouterConfig::num_nodes)
      .def_readwrite("max_nodes", &epcomm::RouterConfig::max_nodes)
      .def_readwrite("node_topk", &epcomm::RouterConfig::node_topk)
      .def_readwrite("route_scale", &epcomm::RouterConfig::route_scale)
      .def_readwrite("normalize_weights", &epcomm::RouterConfig::normalize_weights)
      .def_property(
          "softmax", [](const epcomm::RouterConfig& c) { return c.score == epcomm::ScoreFunction::kSoftmax; },
          [](epcomm::RouterConfig& c, bool on) {
            c.score = on ? epcomm::ScoreFunction::kSoftmax : epcomm::ScoreFunction::kSigmoid;
          })
      .def_property(
          "node_score_max_without_bias",
          [](const epcomm::RouterConfig& c) { return c.node_score == epcomm::NodeScore::kMaxWithoutBias; },
          [](epcomm::RouterConfig& c, bool on) {
            c.node_score = on ? epcomm::NodeScore::kMaxWithoutBias : epcomm::NodeScore::kTopSum;
          });
  m.def("route", &route, py::arg("logits"), py::arg("bias"), py::arg("topk_idx"), py::arg("topk_weights"),
        py::arg("config"));
  m.def("count_expert_load", &count_expert_load, py::arg("topk_idx"), py::arg("num_experts"), py::arg("load"));
  m.def("update_expert_bias", &update_expert_bias, py::arg("bias"), py::arg("load"), py::arg("gamma"));
  m.def("row_layout", [](const std::string& format, int hidden) {
    const epcomm::RowLayout L = epcomm::row_layout(epcomm::parse_format(format.c_str()), hidden);
    return py::dict(py::arg("row_bytes") = L.row_bytes, py::arg("payload_offset") = L.payload_offset,
                    py::arg("payload_bytes") = L.payload_bytes, py::arg("meta_offset") = L.meta_offset,
                    py::arg("meta_bytes") = L.meta_bytes, py::arg("meta_bytes_per_tile") = L.meta_bytes_per_tile);
  });
}
