// The C side of the c10d crate: libtorch's own c10d (TCPStore, ProcessGroupGloo) behind a C
// ABI. Every C++ exception becomes an error string for Rust (`*err`, freed with
// c10d_free_error); nothing throws across the boundary. Tensors are tch's: `at::Tensor*`.
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

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

struct c10d_group {
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
  std::chrono::milliseconds timeout;
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

void c10d_group_free(c10d_group* group) { delete group; }

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
