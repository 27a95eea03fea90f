//! PyTorch's own c10d from Rust: the rendezvous (`TCPStore`), Gloo process groups (CPU
//! tensors), NCCL groups (CUDA tensors, where libtorch has CUDA) and their collectives, through
//! a C++ shim compiled against the environment's libtorch (`shim/c10d.cpp`). Every c10d
//! exception is an [`Error`] with its message; nothing aborts the process. A collective blocks
//! until it is done or the group's timeout has passed.
//!
//! Above the raw binding: [`Distributed`] joins the job its launcher (srun, torchrun) started,
//! with checks that name the rank at fault, and [`DataParallel`] trains a `VarStore` on every
//! rank with averaged gradients. With one process both run the same code with no communication.

use std::ffi::{CStr, CString, c_char};
use std::time::Duration;
use tch::Tensor;

mod data_parallel;
mod distributed;

pub use data_parallel::{BUCKET_BYTES, DataParallel};
pub use distributed::{Backend, DEFAULT_TIMEOUT, Distributed, TIMEOUT_ENV};
pub use launch_env::{Launch, LaunchError, Launcher};

mod ffi {
    use std::ffi::c_char;
    #[repr(C)]
    pub struct Store {
        _private: [u8; 0],
    }
    #[repr(C)]
    pub struct Group {
        _private: [u8; 0],
    }
    #[repr(C)]
    pub struct Work {
        _private: [u8; 0],
    }
    #[repr(C)]
    pub struct Reducer {
        _private: [u8; 0],
    }
    unsafe extern "C" {
        pub fn c10d_free_error(err: *mut c_char);
        pub fn c10d_tcp_store(
            host: *const c_char,
            port: u16,
            is_server: bool,
            world_size: i64,
            timeout_ms: i64,
            err: *mut *mut c_char,
        ) -> *mut Store;
        pub fn c10d_store_free(store: *mut Store);
        pub fn c10d_gloo_group(
            store: *mut Store,
            rank: i32,
            size: i32,
            hostname: *const c_char,
            timeout_ms: i64,
            err: *mut *mut c_char,
        ) -> *mut Group;
        pub fn c10d_nccl_group(
            store: *mut Store,
            rank: i32,
            size: i32,
            timeout_ms: i64,
            err: *mut *mut c_char,
        ) -> *mut Group;
        pub fn c10d_has_nccl() -> bool;
        pub fn c10d_group_free(group: *mut Group);
        pub fn c10d_store_set(
            store: *mut Store,
            key: *const c_char,
            value: *const c_char,
            err: *mut *mut c_char,
        ) -> bool;
        pub fn c10d_store_check(
            store: *mut Store,
            key: *const c_char,
            err: *mut *mut c_char,
        ) -> i32;
        pub fn c10d_store_get(
            store: *mut Store,
            key: *const c_char,
            err: *mut *mut c_char,
        ) -> *mut c_char;
        pub fn c10d_all_reduce_start(
            group: *mut Group,
            tensor: *mut std::ffi::c_void,
            op: i32,
            err: *mut *mut c_char,
        ) -> *mut Work;
        pub fn c10d_work_wait(group: *mut Group, work: *mut Work, err: *mut *mut c_char) -> bool;
        pub fn c10d_work_free(work: *mut Work);
        pub fn c10d_all_reduce(
            group: *mut Group,
            tensor: *mut std::ffi::c_void,
            op: i32,
            err: *mut *mut c_char,
        ) -> bool;
        pub fn c10d_broadcast(
            group: *mut Group,
            tensor: *mut std::ffi::c_void,
            root: i64,
            err: *mut *mut c_char,
        ) -> bool;
        pub fn c10d_all_gather(
            group: *mut Group,
            tensor: *mut std::ffi::c_void,
            out: *mut *mut std::ffi::c_void,
            err: *mut *mut c_char,
        ) -> bool;
        pub fn c10d_barrier(group: *mut Group, err: *mut *mut c_char) -> bool;
        pub fn c10d_same_tensor(a: *mut std::ffi::c_void, b: *mut std::ffi::c_void) -> bool;
        pub fn c10d_reducer_new(
            group: *mut Group,
            variables: *const *mut std::ffi::c_void,
            count: usize,
            bucket_sizes: *const usize,
            bucket_count: usize,
            err: *mut *mut c_char,
        ) -> *mut Reducer;
        pub fn c10d_reducer_arm(reducer: *mut Reducer);
        pub fn c10d_reducer_finish(
            reducer: *mut Reducer,
            overlapped: *mut i64,
            err: *mut *mut c_char,
        ) -> bool;
        pub fn c10d_reducer_free(reducer: *mut Reducer);
    }
}

/// What c10d reported, with its message. Its `Debug` is its text, so that an `unwrap()` or a
/// `main` returning it shows the message, not the enum.
#[derive(thiserror::Error)]
pub enum Error {
    #[error("c10d: {0}")]
    C10d(String),
    #[error("{0}")]
    Argument(String),
    /// The launcher's variables are wrong or missing.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// Joining the job failed: the rendezvous cannot be reached, or the ranks disagree.
    #[error("rank {rank}: {what}")]
    Rendezvous { rank: usize, what: String },
    /// A collective failed because other ranks are gone (exited, killed, stuck).
    #[error("rank {rank}: {op} failed: {}; c10d said: {cause}", gone_text(.gone, *.waited_s))]
    RanksGone {
        rank: usize,
        op: &'static str,
        gone: Vec<usize>,
        waited_s: u64,
        cause: String,
    },
    /// libtorch's backward pass failed (before any gradient was averaged).
    #[error("backward: {0}")]
    Backward(tch::TchError),
    /// The ranks' tensors or models differ where they must agree.
    #[error("rank {rank}: {what}")]
    Mismatch { rank: usize, what: String },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

fn gone_text(gone: &[usize], waited_s: u64) -> String {
    match gone {
        [] => "every rank is still there".to_owned(),
        [0] => "rank 0 is gone (it hosts the rendezvous: it exited or was killed)".to_owned(),
        [one] => format!(
            "rank {one} did not answer within {waited_s} s (it exited, was killed or is stuck)"
        ),
        many => format!(
            "ranks {} did not answer within {waited_s} s (they exited, were killed or are stuck)",
            many.iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The reductions of `all_reduce`. `Avg` is a sum divided by the world size (as Gloo does it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum = 0,
    Avg = 1,
    Max = 2,
    Min = 3,
    Product = 4,
}

fn take_error(err: *mut c_char) -> Error {
    if err.is_null() {
        return Error::C10d("failed without a message".to_owned());
    }
    // SAFETY: the shim wrote a malloc'ed NUL-terminated string; freed once, here.
    let text = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    unsafe { ffi::c10d_free_error(err) };
    Error::C10d(text)
}

/// `Ok` when the shim succeeded, else the error it wrote.
fn checked(ok: bool, err: *mut c_char) -> Result<()> {
    if ok { Ok(()) } else { Err(take_error(err)) }
}

/// A rank and a group size as the shim takes them, checked.
fn rank_and_size(rank: usize, size: usize) -> Result<(i32, i32)> {
    if rank >= size {
        return Err(Error::Argument(format!("rank {rank} in a group of {size}")));
    }
    let to_i32 = |n: usize| i32::try_from(n).map_err(|_| Error::Argument(format!("{n} ranks")));
    Ok((to_i32(rank)?, to_i32(size)?))
}

fn c_string(text: &str) -> Result<CString> {
    CString::new(text).map_err(|_| Error::Argument(format!("{text:?} has a NUL byte")))
}

fn millis(timeout: Duration) -> i64 {
    i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX)
}

/// A c10d `TCPStore`: the rendezvous of a group. Rank 0's is the server.
pub struct Store {
    raw: *mut ffi::Store,
}

impl Store {
    /// Connects to (or, with `is_server`, serves) the store at `host:port` for `world_size`
    /// processes, waiting at most `timeout` for the others.
    pub fn tcp(
        host: &str,
        port: u16,
        is_server: bool,
        world_size: usize,
        timeout: Duration,
    ) -> Result<Store> {
        let host = c_string(host)?;
        let world = i64::try_from(world_size)
            .map_err(|_| Error::Argument(format!("world size {world_size}")))?;
        let mut err = std::ptr::null_mut();
        // SAFETY: valid pointers; the shim returns null exactly when it set `err`.
        let raw = unsafe {
            ffi::c10d_tcp_store(
                host.as_ptr(),
                port,
                is_server,
                world,
                millis(timeout),
                &mut err,
            )
        };
        if raw.is_null() {
            return Err(take_error(err));
        }
        Ok(Store { raw })
    }
}

impl Store {
    /// Sets `key` to `value` for every rank to read.
    pub fn set(&self, key: &str, value: &str) -> Result<()> {
        let (key, value) = (c_string(key)?, c_string(value)?);
        let mut err = std::ptr::null_mut();
        // SAFETY: valid store and strings.
        let ok = unsafe { ffi::c10d_store_set(self.raw, key.as_ptr(), value.as_ptr(), &mut err) };
        checked(ok, err)
    }

    /// Whether `key` is set, without waiting.
    pub fn check(&self, key: &str) -> Result<bool> {
        let key = c_string(key)?;
        let mut err = std::ptr::null_mut();
        // SAFETY: valid store and string.
        match unsafe { ffi::c10d_store_check(self.raw, key.as_ptr(), &mut err) } {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(take_error(err)),
        }
    }

    /// The value of `key`, waiting for it as long as the store's timeout.
    pub fn get(&self, key: &str) -> Result<String> {
        let key = c_string(key)?;
        let mut err = std::ptr::null_mut();
        // SAFETY: valid store and string; the result is malloc'ed by the shim.
        let raw = unsafe { ffi::c10d_store_get(self.raw, key.as_ptr(), &mut err) };
        if raw.is_null() {
            return Err(take_error(err));
        }
        // SAFETY: NUL-terminated, freed once here.
        let text = unsafe { CStr::from_ptr(raw) }
            .to_string_lossy()
            .into_owned();
        unsafe { ffi::c10d_free_error(raw) };
        Ok(text)
    }
}

// c10d's stores and process groups are safe to use from any thread (Python's are). Collectives
// must still be issued in the same order on every rank, so a job issues them from one thread.
unsafe impl Send for Store {}
unsafe impl Sync for Store {}
unsafe impl Send for ProcessGroup {}
unsafe impl Sync for ProcessGroup {}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: made by c10d_tcp_store, dropped once.
        unsafe { ffi::c10d_store_free(self.raw) }
    }
}

/// A Gloo process group: `size` processes, this one being `rank`.
pub struct ProcessGroup {
    raw: *mut ffi::Group,
    rank: usize,
    size: usize,
}

impl ProcessGroup {
    /// Joins the group through `store`; `hostname` is this process's address for the others
    /// (empty: gloo's default, which honours `GLOO_SOCKET_IFNAME`). Collectives wait at most
    /// `timeout`.
    pub fn gloo(
        store: &Store,
        rank: usize,
        size: usize,
        hostname: &str,
        timeout: Duration,
    ) -> Result<ProcessGroup> {
        let (rank_i32, size_i32) = rank_and_size(rank, size)?;
        let hostname = c_string(hostname)?;
        let mut err = std::ptr::null_mut();
        // SAFETY: as in Store::tcp; the store outlives the call (the group keeps its own ref).
        let raw = unsafe {
            ffi::c10d_gloo_group(
                store.raw,
                rank_i32,
                size_i32,
                hostname.as_ptr(),
                millis(timeout),
                &mut err,
            )
        };
        if raw.is_null() {
            return Err(take_error(err));
        }
        Ok(ProcessGroup { raw, rank, size })
    }

    /// An NCCL group (CUDA tensors) through `store`. An error where this build has no NCCL
    /// ([`ProcessGroup::has_nccl`]).
    pub fn nccl(
        store: &Store,
        rank: usize,
        size: usize,
        timeout: Duration,
    ) -> Result<ProcessGroup> {
        let (rank_i32, size_i32) = rank_and_size(rank, size)?;
        let mut err = std::ptr::null_mut();
        // SAFETY: as in `gloo`.
        let raw = unsafe {
            ffi::c10d_nccl_group(store.raw, rank_i32, size_i32, millis(timeout), &mut err)
        };
        if raw.is_null() {
            return Err(take_error(err));
        }
        Ok(ProcessGroup { raw, rank, size })
    }

    /// Whether the shim was compiled with NCCL (libtorch with CUDA, and NCCL's header).
    pub fn has_nccl() -> bool {
        // SAFETY: no arguments.
        unsafe { ffi::c10d_has_nccl() }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Reduces `tensor` over all ranks, in place.
    pub fn all_reduce(&self, tensor: &mut Tensor, op: ReduceOp) -> Result<()> {
        let mut err = std::ptr::null_mut();
        // SAFETY: tch's tensor pointer is an `at::Tensor*`; the shim copies the handle.
        let ok = unsafe {
            ffi::c10d_all_reduce(self.raw, tensor.as_mut_ptr().cast(), op as i32, &mut err)
        };
        checked(ok, err)
    }

    /// Starts reducing `tensor` in place; [`Pending::wait`] finishes it and gives it back.
    /// Collectives must be started in the same order on every rank (from one thread).
    pub fn all_reduce_start(&self, mut tensor: Tensor, op: ReduceOp) -> Result<Pending<'_>> {
        let mut err = std::ptr::null_mut();
        // SAFETY: as in all_reduce; the shim keeps its own handle of the tensor in the work,
        // and `Pending` owns the tensor until the work is done.
        let raw = unsafe {
            ffi::c10d_all_reduce_start(self.raw, tensor.as_mut_ptr().cast(), op as i32, &mut err)
        };
        if raw.is_null() {
            return Err(take_error(err));
        }
        Ok(Pending {
            group: self,
            raw,
            tensor,
        })
    }

    /// Sets `tensor` on every rank to rank `root`'s.
    pub fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<()> {
        let root = i64::try_from(root).map_err(|_| Error::Argument(format!("root {root}")))?;
        let mut err = std::ptr::null_mut();
        // SAFETY: as in all_reduce.
        let ok =
            unsafe { ffi::c10d_broadcast(self.raw, tensor.as_mut_ptr().cast(), root, &mut err) };
        checked(ok, err)
    }

    /// Every rank's `tensor`, in rank order.
    pub fn all_gather(&self, tensor: &Tensor) -> Result<Vec<Tensor>> {
        let mut out: Vec<*mut std::ffi::c_void> = vec![std::ptr::null_mut(); self.size];
        let mut err = std::ptr::null_mut();
        // SAFETY: `out` has room for `size` pointers, which the shim fills on success.
        let ok = unsafe {
            ffi::c10d_all_gather(
                self.raw,
                tensor.as_ptr().cast_mut().cast(),
                out.as_mut_ptr(),
                &mut err,
            )
        };
        checked(ok, err)?;
        // SAFETY: each is a `new at::Tensor`, owned from here on by tch.
        Ok(out
            .into_iter()
            .map(|p| unsafe { Tensor::from_ptr(p.cast()) })
            .collect())
    }

    /// Waits until every rank has reached it.
    pub fn barrier(&self) -> Result<()> {
        let mut err = std::ptr::null_mut();
        // SAFETY: a valid group.
        let ok = unsafe { ffi::c10d_barrier(self.raw, &mut err) };
        checked(ok, err)
    }
}

/// A collective in flight (from [`ProcessGroup::all_reduce_start`]): it holds the tensor, so
/// nothing reads or writes it while c10d's threads do.
pub struct Pending<'g> {
    group: &'g ProcessGroup,
    raw: *mut ffi::Work,
    tensor: Tensor,
}

impl Pending<'_> {
    /// Waits for it, at most the group's timeout; the reduced tensor.
    pub fn wait(mut self) -> Result<Tensor> {
        let mut err = std::ptr::null_mut();
        // SAFETY: a live work of this group; freed by Drop.
        let ok = unsafe { ffi::c10d_work_wait(self.group.raw, self.raw, &mut err) };
        checked(ok, err)?;
        // The work is done: the handle can leave (Drop frees the work).
        Ok(std::mem::replace(&mut self.tensor, Tensor::new()))
    }
}

/// Whether `a` and `b` are handles of the same tensor (not only equal values).
pub(crate) fn same_tensor(a: &Tensor, b: &Tensor) -> bool {
    // SAFETY: two live tch tensors; the shim only compares them.
    unsafe { ffi::c10d_same_tensor(a.as_ptr().cast_mut().cast(), b.as_ptr().cast_mut().cast()) }
}

/// The shim's `Reducer`: a post-accumulate-grad hook on each trainable variable puts its
/// gradient in its bucket as soon as backward has it, and reduces a full bucket at once, so
/// that the reduction overlaps the rest of backward (DDP's design). Between [`arm`](Self::arm)
/// and [`finish`](Self::finish) only; outside them the hooks do nothing.
pub(crate) struct GradientReducer {
    raw: *mut ffi::Reducer,
}

// SAFETY: the shim's reducer locks its own mutex in every call and in its hooks.
unsafe impl Send for GradientReducer {}
unsafe impl Sync for GradientReducer {}

impl GradientReducer {
    /// Hooks `buckets` (trainable variables, each bucket of one kind on one device; in the
    /// order their reductions start, the same on every rank) into autograd.
    pub(crate) fn new(group: &ProcessGroup, buckets: &[Vec<Tensor>]) -> Result<GradientReducer> {
        let variables: Vec<*mut std::ffi::c_void> = buckets
            .iter()
            .flatten()
            .map(|t| t.as_ptr().cast_mut().cast())
            .collect();
        let sizes: Vec<usize> = buckets.iter().map(Vec::len).collect();
        let mut err = std::ptr::null_mut();
        // SAFETY: live tensors (the shim keeps its own handles) and a live group.
        let raw = unsafe {
            ffi::c10d_reducer_new(
                group.raw,
                variables.as_ptr(),
                variables.len(),
                sizes.as_ptr(),
                sizes.len(),
                &mut err,
            )
        };
        if raw.is_null() {
            return Err(take_error(err));
        }
        Ok(GradientReducer { raw })
    }

    /// From now until `finish`, gradients start reducing as backward produces them.
    pub(crate) fn arm(&self) {
        // SAFETY: a live reducer.
        unsafe { ffi::c10d_reducer_arm(self.raw) }
    }

    /// Reduces what is left, waits for every bucket and sets each gradient to the average over
    /// the ranks. The number of gradient values whose reduction started during backward.
    pub(crate) fn finish(&self) -> Result<i64> {
        let mut overlapped = 0i64;
        let mut err = std::ptr::null_mut();
        // SAFETY: a live reducer.
        let ok = unsafe { ffi::c10d_reducer_finish(self.raw, &mut overlapped, &mut err) };
        checked(ok, err)?;
        Ok(overlapped)
    }
}

impl Drop for GradientReducer {
    fn drop(&mut self) {
        // SAFETY: made by c10d_reducer_new, dropped once; takes the hooks off first.
        unsafe { ffi::c10d_reducer_free(self.raw) }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        // SAFETY: made by c10d_all_reduce_start, dropped once.
        unsafe { ffi::c10d_work_free(self.raw) }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: made by c10d_gloo_group, dropped once.
        unsafe { ffi::c10d_group_free(self.raw) }
    }
}
