// The C side of the c10d crate: libtorch's own c10d (TCPStore, ProcessGroupGloo and, where
// libtorch has CUDA, ProcessGroupNCCL) behind a C ABI. Every C++ exception becomes an error
// string for Rust (`*err`, freed with c10d_free_error); nothing throws across the boundary.
// Tensors are tch's: `at::Tensor*`.
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef TCH_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

char* copy(const char* text) {
  size_t n = std::strlen(text);
  char* out = static_cast<char*>(std::malloc(n + 1));
  if (out != nullptr) {
    std::memcpy(out, text, n + 1);
  }
  return out;
}

// Runs `body`; an exception becomes `*err`. Returns whether it succeeded.
template <typename F>
bool guarded(char** err, F body) {
  try {
    body();
    return true;
  } catch (const c10::Error& e) {
    *err = copy(e.what_without_backtrace());
  } catch (const std::exception& e) {
    *err = copy(e.what());
  } catch (...) {
    *err = copy("an unknown C++ exception");
  }
  return false;
}

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 0:
      return c10d::ReduceOp(c10d::ReduceOp::SUM);
    case 1:
      return c10d::ReduceOp(c10d::ReduceOp::AVG);
    case 2:
      return c10d::ReduceOp(c10d::ReduceOp::MAX);
    case 3:
      return c10d::ReduceOp(c10d::ReduceOp::MIN);
    case 4:
      return c10d::ReduceOp(c10d::ReduceOp::PRODUCT);
    default:
      throw std::invalid_argument("unknown reduce operation " + std::to_string(op));
  }
}

}  // namespace

extern "C" {

struct c10d_store {
  c10::intrusive_ptr<c10d::Store> store;
};

// Gloo's and NCCL's groups alike: both are c10d backends with the same collectives.
struct c10d_group {
  c10::intrusive_ptr<c10d::Backend> group;
  std::chrono::milliseconds timeout;
};

// A collective in flight.
struct c10d_work {
  c10::intrusive_ptr<c10d::Work> work;
};

void c10d_free_error(char* err) { std::free(err); }

// A TCPStore: the server (rank 0) listens on `port`; the others connect to `host:port`.
c10d_store* c10d_tcp_store(const char* host, uint16_t port, bool is_server, int64_t world_size,
                           int64_t timeout_ms, char** err) {
  c10d_store* out = nullptr;
  guarded(err, [&] {
    c10d::TCPStoreOptions options;
    options.port = port;
    options.isServer = is_server;
    options.numWorkers = static_cast<size_t>(world_size);
    options.timeout = std::chrono::milliseconds(timeout_ms);
    out = new c10d_store{c10::make_intrusive<c10d::TCPStore>(std::string(host), options)};
  });
  return out;
}

void c10d_store_free(c10d_store* store) { delete store; }

// A Gloo group of `size` ranks over `store`; `hostname` names this rank's interface (empty:
// gloo's default device, which honours GLOO_SOCKET_IFNAME).
c10d_group* c10d_gloo_group(c10d_store* store, int rank, int size, const char* hostname,
                            int64_t timeout_ms, char** err) {
  c10d_group* out = nullptr;
  guarded(err, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    options->devices.push_back(hostname != nullptr && hostname[0] != '\0'
                                   ? c10d::ProcessGroupGloo::createDeviceForHostname(hostname)
                                   : c10d::ProcessGroupGloo::createDefaultDevice());
    out = new c10d_group{
        c10::make_intrusive<c10d::ProcessGroupGloo>(store->store, rank, size, options),
        timeout};
  });
  return out;
}

// An NCCL group (CUDA tensors), where this shim was compiled against a libtorch with CUDA and
// NCCL's header; elsewhere an error that says so.
c10d_group* c10d_nccl_group(c10d_store* store, int rank, int size, int64_t timeout_ms, char** err) {
  c10d_group* out = nullptr;
  guarded(err, [&] {
#ifdef TCH_C10D_NCCL
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;
    out = new c10d_group{
        c10::make_intrusive<c10d::ProcessGroupNCCL>(store->store, rank, size, options), timeout};
#else
    (void)store;
    (void)rank;
    (void)size;
    (void)timeout_ms;
    throw std::runtime_error(
        "this build of the c10d crate has no NCCL: its libtorch has no CUDA, or nccl.h was not "
        "found when it was compiled (see crates/c10d/build.rs)");
#endif
  });
  return out;
}

bool c10d_has_nccl() {
#ifdef TCH_C10D_NCCL
  return true;
#else
  return false;
#endif
}

void c10d_group_free(c10d_group* group) {
#ifdef TCH_C10D_NCCL
  // NCCL wants its communicators shut down before the group goes (else it warns, and its
  // watchdog may still be running); a failure to do so must not throw out of a destructor.
  if (auto* nccl = dynamic_cast<c10d::ProcessGroupNCCL*>(group->group.get())) {
    try {
      nccl->shutdown();
    } catch (...) {
    }
  }
#endif
  delete group;
}

// Sets `variable`'s gradient to `grad` (the averaged gradient of a variable that this rank did
// not use but another did).
bool c10d_set_grad(at::Tensor* variable, at::Tensor* grad, char** err) {
  return guarded(err, [&] { variable->mutable_grad() = *grad; });
}

// The rendezvous store, for the checks around the collectives (world sizes, who is left).
bool c10d_store_set(c10d_store* store, const char* key, const char* value, char** err) {
  return guarded(err, [&] { store->store->set(std::string(key), std::string(value)); });
}

// 1 when `key` is set, 0 when not, -1 on an error.
int c10d_store_check(c10d_store* store, const char* key, char** err) {
  int out = -1;
  guarded(err, [&] { out = store->store->check({std::string(key)}) ? 1 : 0; });
  return out;
}

// The value of `key` (malloc'ed, freed with c10d_free_error), waiting for it as the store's
// timeout allows; null on an error.
char* c10d_store_get(c10d_store* store, const char* key, char** err) {
  char* out = nullptr;
  guarded(err, [&] {
    std::vector<uint8_t> value = store->store->get(std::string(key));
    std::string text(value.begin(), value.end());
    out = copy(text.c_str());
  });
  return out;
}

// Starts an all_reduce of `tensor` in place; c10d_work_wait finishes it.
c10d_work* c10d_all_reduce_start(c10d_group* group, at::Tensor* tensor, int op, char** err) {
  c10d_work* out = nullptr;
  guarded(err, [&] {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::AllreduceOptions options;
    options.reduceOp = reduce_op(op);
    out = new c10d_work{group->group->allreduce(tensors, options)};
  });
  return out;
}

bool c10d_work_wait(c10d_group* group, c10d_work* work, char** err) {
  return guarded(err, [&] { work->work->wait(group->timeout); });
}

void c10d_work_free(c10d_work* work) { delete work; }

bool c10d_all_reduce(c10d_group* group, at::Tensor* tensor, int op, char** err) {
  return guarded(err, [&] {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::AllreduceOptions options;
    options.reduceOp = reduce_op(op);
    group->group->allreduce(tensors, options)->wait(group->timeout);
  });
}

bool c10d_broadcast(c10d_group* group, at::Tensor* tensor, int64_t root, char** err) {
  return guarded(err, [&] {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    group->group->broadcast(tensors, options)->wait(group->timeout);
  });
}

// Fills `out[0..size)` with new tensors (tch owns them): every rank's `tensor`, by rank.
bool c10d_all_gather(c10d_group* group, at::Tensor* tensor, at::Tensor** out, char** err) {
  return guarded(err, [&] {
    int size = group->group->getSize();
    std::vector<std::vector<at::Tensor>> outputs(1);
    for (int i = 0; i < size; i++) {
      outputs[0].push_back(at::empty_like(*tensor));
    }
    std::vector<at::Tensor> inputs{*tensor};
    group->group->allgather(outputs, inputs)->wait(group->timeout);
    for (int i = 0; i < size; i++) {
      out[i] = new at::Tensor(outputs[0][i]);
    }
  });
}

bool c10d_barrier(c10d_group* group, char** err) {
  return guarded(err, [&] {
    c10d::BarrierOptions options;
    options.timeout = group->timeout;
    group->group->barrier(options)->wait(group->timeout);
  });
}

}  // extern "C"
