// The C side of the c10d crate: libtorch's own c10d (TCPStore, ProcessGroupGloo and, where
// libtorch has CUDA, ProcessGroupNCCL) behind a C ABI. Every C++ exception becomes an error
// string for Rust (`*err`, freed with c10d_free_error); nothing throws across the boundary.
// Tensors are tch's: `at::Tensor*`.
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef TCH_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
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

// Averages a model's gradients over the ranks while backward still runs, as DDP's Reducer
// does: a post-accumulate-grad hook on each trainable variable copies its gradient into its
// bucket's flat tensor as soon as autograd has it, and a bucket whose variables are all in is
// reduced at once (buckets start in index order, the same on every rank, as c10d requires).
// What backward left out (variables it did not reach) goes in at the end. Each flat tensor holds
// a bucket's gradients, then one value per variable: 1 where this rank has a gradient for it.
struct Reducer {
  c10::intrusive_ptr<c10d::Backend> group;
  std::chrono::milliseconds timeout;
  std::vector<at::Tensor> variables;               // the trainable ones, bucket after bucket
  std::vector<size_t> bucket_of;                   // per variable
  std::vector<int64_t> offset_of;                  // per variable, in its bucket's flat tensor
  std::vector<int64_t> position_of;                // per variable, in its bucket
  std::vector<std::vector<size_t>> buckets;        // variables per bucket
  std::vector<int64_t> values;                     // gradient values per bucket
  std::vector<at::Tensor> flat;                    // per bucket
  std::vector<size_t> missing;                     // per bucket: variables not in yet
  std::vector<bool> in;                            // per variable: gradient copied this step
  std::vector<c10::intrusive_ptr<c10d::Work>> work;  // per bucket, once started
  size_t next = 0;          // the next bucket to start
  bool armed = false;       // between arm and finish: the hooks start buckets
  int64_t overlapped = 0;   // gradient values whose reduction started during backward
  int64_t before_last = 0;  // `overlapped` when the latest hook came: what started before the
                            // last gradient was computed, and so overlapped computing it
  std::string error;        // the first failure in a hook (thrown by finish)
  std::mutex mutex;

  // Copies variable i's gradient (zeros where it has none) into its bucket.
  void copy_in(size_t i) {
    size_t b = bucket_of[i];
    const at::Tensor& v = variables[i];
    at::Tensor grad = v.grad();
    at::Tensor slot = flat[b].narrow(0, offset_of[i], v.numel());
    bool has = grad.defined();
    if (has) {
      slot.copy_(grad.reshape({-1}));
    } else {
      slot.zero_();
    }
    flat[b].narrow(0, values[b] + position_of[i], 1).fill_(has ? 1 : 0);
    in[i] = true;
    missing[b]--;
  }

  // Starts every bucket, in order, that is complete and not started.
  void start_ready(bool during_backward) {
    while (next < buckets.size() && missing[next] == 0) {
      std::vector<at::Tensor> tensors{flat[next]};
      c10d::AllreduceOptions options;
      options.reduceOp = c10d::ReduceOp(c10d::ReduceOp::SUM);
      work[next] = group->allreduce(tensors, options);
      if (during_backward) {
        overlapped += values[next];
      }
      next++;
    }
  }

  void reset() {
    // A model moved to another device or kind since (VarStore::set_device, set_kind).
    for (size_t b = 0; b < buckets.size(); b++) {
      const at::Tensor& first = variables[buckets[b][0]];
      if (flat[b].device() != first.device() || flat[b].scalar_type() != first.scalar_type()) {
        flat[b] = at::zeros_like(flat[b], first.options());
      }
    }
    next = 0;
    overlapped = 0;
    before_last = 0;
    error.clear();
    std::fill(in.begin(), in.end(), false);
    for (size_t b = 0; b < buckets.size(); b++) {
      missing[b] = buckets[b].size();
      work[b].reset();
    }
  }

  // From autograd, on the thread that accumulated variable i's gradient.
  void ready(size_t i) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!armed || in[i]) {
      return;
    }
    before_last = overlapped;
    try {
      at::NoGradGuard no_grad;
      copy_in(i);
      start_ready(true);
    } catch (const c10::Error& e) {
      error = e.what_without_backtrace();
      armed = false;
    } catch (const std::exception& e) {
      error = e.what();
      armed = false;
    } catch (...) {
      error = "an unknown C++ exception";
      armed = false;
    }
  }
};

struct ReadyHook : torch::autograd::PostAccumulateGradHook {
  std::shared_ptr<Reducer> reducer;
  size_t index;
  ReadyHook(std::shared_ptr<Reducer> r, size_t i) : reducer(std::move(r)), index(i) {}
  void operator()(const torch::autograd::Variable& /*variable*/) override {
    reducer->ready(index);
  }
};

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

// A tensor handle for each, the same tensor (not only equal values).
bool c10d_same_tensor(at::Tensor* a, at::Tensor* b) { return a->is_same(*b); }

struct c10d_reducer {
  std::shared_ptr<Reducer> reducer;
};

// A reducer of `count` trainable variables, listed bucket after bucket (`bucket_sizes`: how
// many in each of `bucket_count`; a bucket holds one kind on one device). Hooks each variable.
c10d_reducer* c10d_reducer_new(c10d_group* group, at::Tensor** variables, size_t count,
                               const size_t* bucket_sizes, size_t bucket_count, char** err) {
  c10d_reducer* out = nullptr;
  guarded(err, [&] {
    auto r = std::make_shared<Reducer>();
    r->group = group->group;
    r->timeout = group->timeout;
    size_t i = 0;
    for (size_t b = 0; b < bucket_count; b++) {
      std::vector<size_t> members;
      int64_t total = 0;
      for (size_t k = 0; k < bucket_sizes[b]; k++, i++) {
        if (i >= count) {
          throw std::invalid_argument("the bucket sizes add up to more than the variables");
        }
        r->variables.push_back(*variables[i]);
        r->bucket_of.push_back(b);
        r->offset_of.push_back(total);
        r->position_of.push_back(static_cast<int64_t>(members.size()));
        total += variables[i]->numel();
        members.push_back(i);
      }
      if (members.empty()) {
        throw std::invalid_argument("an empty bucket");
      }
      const at::Tensor& first = *variables[members[0]];
      r->flat.push_back(at::zeros({total + static_cast<int64_t>(members.size())},
                                  at::TensorOptions().dtype(first.scalar_type()).device(first.device())));
      r->values.push_back(total);
      r->buckets.push_back(std::move(members));
    }
    if (i != count) {
      throw std::invalid_argument("the bucket sizes add up to fewer than the variables");
    }
    r->missing.resize(bucket_count);
    r->in.resize(count);
    r->work.resize(bucket_count);
    r->reset();
    for (size_t v = 0; v < count; v++) {
      torch::autograd::impl::set_post_acc_grad_hooks(r->variables[v],
                                                     std::make_unique<ReadyHook>(r, v));
    }
    out = new c10d_reducer{std::move(r)};
  });
  return out;
}

// From here to c10d_reducer_finish, gradients go to their buckets as backward produces them.
void c10d_reducer_arm(c10d_reducer* reducer) {
  std::lock_guard<std::mutex> lock(reducer->reducer->mutex);
  reducer->reducer->reset();
  reducer->reducer->armed = true;
}

// Puts in what backward did not reach (or everything, when not armed), starts the remaining
// buckets, waits for all, and sets each gradient to the average over the ranks: a variable that
// some rank used gets one (zeros count for the ranks that did not); one no rank used keeps none.
// `*overlapped`: how many gradient values started reducing while backward still computed
// gradients (before the last one came in).
bool c10d_reducer_finish(c10d_reducer* reducer, int64_t* overlapped, char** err) {
  Reducer& r = *reducer->reducer;
  std::lock_guard<std::mutex> lock(r.mutex);
  bool armed = r.armed;
  r.armed = false;
  return guarded(err, [&] {
    if (!r.error.empty()) {
      std::string error = r.error;
      r.reset();
      throw std::runtime_error(error);
    }
    if (!armed) {
      r.reset();
    }
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < r.variables.size(); i++) {
      if (!r.in[i]) {
        r.copy_in(i);
      }
    }
    r.start_ready(false);
    *overlapped = r.before_last;
    double world = static_cast<double>(r.group->getSize());
    for (size_t b = 0; b < r.buckets.size(); b++) {
      r.work[b]->wait(r.timeout);
      r.work[b].reset();
      at::Tensor& flat = r.flat[b];
      flat.div_(world);
      auto count = static_cast<int64_t>(r.buckets[b].size());
      at::Tensor users = flat.narrow(0, r.values[b], count).to(at::kCPU, at::kDouble);
      const double* used = users.data_ptr<double>();
      for (int64_t k = 0; k < count; k++) {
        size_t i = r.buckets[b][k];
        at::Tensor& v = r.variables[i];
        if (used[k] <= 0.0) {
          continue;
        }
        at::Tensor average = flat.narrow(0, r.offset_of[i], v.numel()).view(v.sizes());
        at::Tensor& grad = v.mutable_grad();
        if (grad.defined()) {
          grad.copy_(average);
        } else {
          grad = average.clone();
        }
      }
    }
  });
}

// Takes its hooks off (they hold the reducer, which holds the variables; another reducer's
// hooks, set later on the same variables, stay) and frees it.
void c10d_reducer_free(c10d_reducer* reducer) {
  {
    std::lock_guard<std::mutex> lock(reducer->reducer->mutex);
    reducer->reducer->armed = false;
  }
  for (auto& v : reducer->reducer->variables) {
    try {
      auto& hook = torch::autograd::impl::post_acc_grad_hooks(v);
      auto* ours = dynamic_cast<ReadyHook*>(hook.get());
      if (ours != nullptr && ours->reducer == reducer->reducer) {
        hook.reset();
      }
    } catch (...) {
    }
  }
  delete reducer;
}

}  // extern "C"
