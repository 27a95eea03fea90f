// Compiled into the first cell of every evaluation child (see child_cells.rs), after the module
// `__tch_kernel_protocol` (child-protocol's source). Functions every cell can call:
// `input(prompt)` / `password(prompt)`, the Debug display of a cell's value, and rich output.

/// Shows a cell's final value. The engine first compiles `(&value).evcxr_display()` and only on
/// a compile error falls back to Debug formatting in a second compile; providing the method for
/// every `Debug` type saves that second compile on most cells. It is implemented for `&T`, so
/// that a rich `evcxr_display` for `T` itself (the prelude's, for tensors and plots) is found
/// first.
#[doc(hidden)]
pub trait __TchKernelDisplay {
    fn evcxr_display(&self);
}
impl<T: std::fmt::Debug + ?Sized> __TchKernelDisplay for &T {
    fn evcxr_display(&self) {
        // A cell ending in a loop or a `()` call shows nothing, as in Python.
        if std::any::type_name::<T>() == "()" {
            return;
        }
        use __tch_kernel_protocol::{BEGIN_CONTENT, END_CONTENT};
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{BEGIN_CONTENT} text/plain\n{:?}\n{END_CONTENT}", self);
        let _ = out.flush();
    }
}
/// Writes a rich-output record (display, update, clear) and flushes, in order with printed text.
#[doc(hidden)]
pub fn __tch_kernel_emit(kind: &str, id: &str, data: &[(&str, &str)]) {
    let line = __tch_kernel_protocol::output_record(kind, id, data);
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
/// Asks the notebook user for a line of text (Jupyter `input_request`).
/// Panics with a clear message when the frontend does not allow input (e.g. nbconvert).
pub fn input(prompt: &str) -> String {
    __tch_kernel_input(prompt, false)
}
/// Like `input`, but the frontend hides what is typed, and a variable holding what it returned
/// is never written to a snapshot.
pub fn password(prompt: &str) -> String {
    let value = __tch_kernel_input(prompt, true);
    // The evaluation process's record of passwords (see evcxr's runtime.rs).
    if let Some(address) = std::env::var(__tch_kernel_protocol::PASSWORDS_ENV)
        .ok()
        .and_then(|a| __tch_kernel_protocol::counter_address(&a))
    {
        // SAFETY: the address of a static PasswordRecord of this process.
        unsafe { &*(address as *const __tch_kernel_protocol::PasswordRecord) }.add(&value);
    }
    value
}
#[doc(hidden)]
pub fn __tch_kernel_input(prompt: &str, password: bool) -> String {
    use __tch_kernel_protocol as protocol;
    let tag = if password {
        protocol::INPUT_REQUEST_PASSWORD
    } else {
        protocol::INPUT_REQUEST
    };
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}:{}", tag, protocol::escape(prompt));
        let _ = out.flush();
    }
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        panic!("input(): the kernel closed the input channel");
    }
    let line = line.trim_end_matches(['\n', '\r']);
    if let Some(value) = line.strip_prefix(protocol::INPUT_OK) {
        protocol::unescape(value)
    } else {
        let reason = line.strip_prefix(protocol::INPUT_ERR).unwrap_or(line);
        panic!("input(): {}", protocol::unescape(reason))
    }
}
/// The most items of a loop that run between two polls (see `__TchKernelSite`).
#[doc(hidden)]
pub const __TCH_KERNEL_CHUNK: usize = 4096;
/// How long a chunk of a loop should take, in `__tch_kernel_ticks`: about a millisecond (TSC
/// cycles on x86-64; the generic timer on aarch64, 1 GHz on recent cores, slower on old ones).
#[doc(hidden)]
pub const __TCH_KERNEL_CHUNK_TICKS: u64 = if cfg!(target_arch = "x86_64") { 1 << 22 } else { 1 << 20 };
/// A clock that costs no call (a call in the loop would make LLVM keep float accumulators in
/// memory, see `__tch_kernel_poll`): the time-stamp counter, or nanoseconds elsewhere.
#[doc(hidden)]
#[inline(always)]
pub fn __tch_kernel_ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    #[allow(unused_unsafe)]
    // SAFETY: rdtsc has no preconditions.
    let ticks = unsafe { core::arch::x86_64::_rdtsc() };
    #[cfg(target_arch = "aarch64")]
    let ticks = {
        let t: u64;
        // SAFETY: reads the virtual counter, which EL0 may read on Linux and macOS.
        unsafe {
            core::arch::asm!("mrs {}, cntvct_el0", out(reg) t, options(nomem, nostack, preserves_flags))
        };
        t
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let ticks = {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        EPOCH.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
    };
    ticks
}
/// Ends every chunked loop (loop_poll.rs's `LOOP_END` says why).
#[doc(hidden)]
#[inline(always)]
pub fn __tch_kernel_loop_end() {
    // SAFETY: an empty asm that touches nothing.
    unsafe { core::arch::asm!("", options(nomem, nostack, preserves_flags)) }
}
/// One loop of the cell's code (a static per loop): how many of its items run between two
/// polls, learnt from the time its chunks take, so that an interrupt reaches a loop over slow
/// items (a training step each) at the next item, and a loop over cheap ones polls once per
/// CHUNK. A loop starts at one item per poll and grows at most 16-fold per chunk.
#[doc(hidden)]
pub struct __TchKernelSite(std::sync::atomic::AtomicUsize);
impl __TchKernelSite {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        __TchKernelSite(std::sync::atomic::AtomicUsize::new(1))
    }
    #[inline(always)]
    pub fn size(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// After a chunk of `size` items that began at `start` (ticks) and did not end the loop:
    /// the size of the next.
    #[inline(always)]
    pub fn learn(&self, size: usize, start: u64) -> usize {
        let next = Self::next_size(size, __tch_kernel_ticks().wrapping_sub(start));
        self.0.store(next, std::sync::atomic::Ordering::Relaxed);
        next
    }
    /// The size of the chunk after one of `size` items that took `took` ticks.
    #[inline(always)]
    pub fn next_size(size: usize, took: u64) -> usize {
        let most = (size.saturating_mul(16)).min(__TCH_KERNEL_CHUNK) as u64;
        (size as u64 * __TCH_KERNEL_CHUNK_TICKS / took.max(1)).clamp(1, most.max(1)) as usize
    }
}
/// The end of the next chunk of `size` items of an integer range loop `for i in start..end`:
/// each chunk stays a counted loop that the optimiser sees whole.
#[doc(hidden)]
#[inline(always)]
pub fn __tch_kernel_chunk_end<T: __TchKernelChunk>(start: T, end: T, size: usize) -> T {
    start.__tch_chunk_end(end, size)
}
/// The last item of the next chunk of `size` items of `for i in start..=end` (`start <= end`).
#[doc(hidden)]
#[inline(always)]
pub fn __tch_kernel_chunk_last<T: __TchKernelChunk>(start: T, end: T, size: usize) -> T {
    start.__tch_chunk_last(end, size)
}
#[doc(hidden)]
pub trait __TchKernelChunk: Copy {
    fn __tch_chunk_end(self, end: Self, size: usize) -> Self;
    fn __tch_chunk_last(self, end: Self, size: usize) -> Self;
}
// One impl for every type whose ranges step (the integers, `char`): `nth` on a range is one
// checked addition, and less code for LLVM in every loop than arithmetic through i128.
impl<T: Copy> __TchKernelChunk for T
where
    std::ops::Range<T>: Iterator<Item = T>,
    std::ops::RangeInclusive<T>: Iterator<Item = T>,
{
    #[inline(always)]
    fn __tch_chunk_end(self, end: Self, size: usize) -> Self {
        (self..end).nth(size.max(1)).unwrap_or(end)
    }
    #[inline(always)]
    fn __tch_chunk_last(self, end: Self, size: usize) -> Self {
        (self..=end).nth(size.max(1) - 1).unwrap_or(end)
    }
}
/// The chunks of a `for` loop over an iterator (the kernel's loop_poll.rs writes the loop):
/// `(&&__TchKernelSplit::of(&it)).__tch_split(&mut it, size)` gives the next chunk, the most
/// items it runs, the count per item and whether its end is the loop's. A slice's or an integer
/// range's chunk is a sub-iterator of at most `size` items (learnt per loop, see
/// `__TchKernelSite`) run to its end uncounted (most `usize::MAX`), so the loop over it compiles
/// as the plain loop does; any other iterator is its own chunk, for `size` counted items, and
/// its end is always the loop's.
/// Method resolution tries `&__TchKernelSplit<I>` (the kinds cut by their own type) before
/// `__TchKernelSplit<I>`.
#[doc(hidden)]
pub struct __TchKernelSplit<I>(std::marker::PhantomData<fn() -> I>);
impl<I> __TchKernelSplit<I> {
    /// Takes the iterator only for its type.
    #[inline(always)]
    pub fn of(_: &I) -> Self {
        __TchKernelSplit(std::marker::PhantomData)
    }
}
/// A chunk that is a sub-iterator of its own.
#[doc(hidden)]
pub struct __TchKernelPart<C>(C);
/// A chunk that is the iterator itself.
#[doc(hidden)]
pub struct __TchKernelWhole;
#[doc(hidden)]
pub trait __TchKernelChunkNext<I> {
    type Item;
    fn __tch_next(&mut self, it: &mut I) -> Option<Self::Item>;
}
impl<C: Iterator, I> __TchKernelChunkNext<I> for __TchKernelPart<C> {
    type Item = C::Item;
    #[inline(always)]
    fn __tch_next(&mut self, _: &mut I) -> Option<C::Item> {
        self.0.next()
    }
}
impl<I: Iterator> __TchKernelChunkNext<I> for __TchKernelWhole {
    type Item = I::Item;
    #[inline(always)]
    fn __tch_next(&mut self, it: &mut I) -> Option<I::Item> {
        it.next()
    }
}
#[doc(hidden)]
pub trait __TchKernelSplitFast {
    type Iter;
    type Chunk;
    fn __tch_split(&self, it: &mut Self::Iter, size: usize) -> (Self::Chunk, usize, usize, bool);
}
impl<'a, T> __TchKernelSplitFast for &__TchKernelSplit<std::slice::Iter<'a, T>> {
    type Iter = std::slice::Iter<'a, T>;
    type Chunk = __TchKernelPart<std::slice::Iter<'a, T>>;
    #[inline(always)]
    fn __tch_split(&self, it: &mut Self::Iter, size: usize) -> (Self::Chunk, usize, usize, bool) {
        let (part, rest) = it.as_slice().split_at(it.len().min(size.max(1)));
        *it = rest.iter();
        (__TchKernelPart(part.iter()), usize::MAX, 0, rest.is_empty())
    }
}
impl<'a, T> __TchKernelSplitFast for &__TchKernelSplit<std::slice::IterMut<'a, T>> {
    type Iter = std::slice::IterMut<'a, T>;
    type Chunk = __TchKernelPart<std::slice::IterMut<'a, T>>;
    #[inline(always)]
    fn __tch_split(&self, it: &mut Self::Iter, size: usize) -> (Self::Chunk, usize, usize, bool) {
        let all = std::mem::take(it).into_slice();
        let len = all.len().min(size.max(1));
        let (part, rest) = all.split_at_mut(len);
        let last = rest.is_empty();
        *it = rest.iter_mut();
        (__TchKernelPart(part.iter_mut()), usize::MAX, 0, last)
    }
}
impl<T: __TchKernelChunk + PartialOrd> __TchKernelSplitFast for &__TchKernelSplit<std::ops::Range<T>>
where
    std::ops::Range<T>: Iterator<Item = T>,
{
    type Iter = std::ops::Range<T>;
    type Chunk = __TchKernelPart<std::ops::Range<T>>;
    #[inline(always)]
    fn __tch_split(&self, it: &mut Self::Iter, size: usize) -> (Self::Chunk, usize, usize, bool) {
        let (lo, hi) = (it.start, it.end);
        if lo >= hi {
            return (__TchKernelPart(lo..lo), usize::MAX, 0, true);
        }
        let top = lo.__tch_chunk_end(hi, size);
        it.start = top;
        (__TchKernelPart(lo..top), usize::MAX, 0, top == hi)
    }
}
#[doc(hidden)]
pub trait __TchKernelSplitAny {
    type Iter;
    fn __tch_split(&self, it: &mut Self::Iter, size: usize) -> (__TchKernelWhole, usize, usize, bool);
}
impl<I: Iterator> __TchKernelSplitAny for __TchKernelSplit<I> {
    type Iter = I;
    #[inline(always)]
    fn __tch_split(&self, _: &mut I, size: usize) -> (__TchKernelWhole, usize, usize, bool) {
        (__TchKernelWhole, size.max(1), 1, true)
    }
}
// Zipped and enumerated slices by sub-slices (`__TchKernelPair`, from the loop-chunks crate:
// the prelude's, or in the first cell of a kernel without it).
impl<A: __TchKernelSlice, B: __TchKernelSlice> __TchKernelSplitFast
    for &__TchKernelSplit<__TchKernelZipSlices<A, B>>
{
    type Iter = __TchKernelZipSlices<A, B>;
    type Chunk = __TchKernelPart<__TchKernelZipPart<A::Iter, B::Iter>>;
    #[inline(always)]
    fn __tch_split(&self, it: &mut Self::Iter, size: usize) -> (Self::Chunk, usize, usize, bool) {
        let part = it.cut(size.max(1));
        (__TchKernelPart(part), usize::MAX, 0, it.is_empty())
    }
}
impl<A: __TchKernelSlice> __TchKernelSplitFast for &__TchKernelSplit<__TchKernelEnumSlice<A>> {
    type Iter = __TchKernelEnumSlice<A>;
    type Chunk = __TchKernelPart<__TchKernelEnumPart<A::Iter>>;
    #[inline(always)]
    fn __tch_split(&self, it: &mut Self::Iter, size: usize) -> (Self::Chunk, usize, usize, bool) {
        let part = it.cut(size.max(1));
        (__TchKernelPart(part), usize::MAX, 0, it.is_empty())
    }
}
/// Called at the top of every loop body in cell code (the kernel inserts the call): an
/// interrupt (■) then stops the loop as `check_interrupt()` does, keeping earlier variables.
/// Two relaxed loads per iteration, and no call that returns: a call that may return inside a
/// loop makes LLVM keep the loop's float accumulators in memory across it (no vector register
/// survives a call on x86-64), which cost a zipped dot product 1.5x. So the counter's address
/// is set when the cell's library is loaded (a constructor), not looked up on first use, and
/// the stop never returns.
#[doc(hidden)]
#[inline(always)]
pub fn __tch_kernel_poll() {
    use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
    static COUNTER: AtomicPtr<AtomicUsize> =
        AtomicPtr::new(&__TCH_KERNEL_NO_COUNTER as *const AtomicUsize as *mut AtomicUsize);
    // Where no constructor runs, COUNTER stays the one nothing raises: loops never stop, and an
    // interrupt restarts the evaluation process as for code without loops.
    #[used]
    #[cfg_attr(
        any(target_os = "linux", target_os = "android", target_os = "freebsd"),
        unsafe(link_section = ".init_array")
    )]
    #[cfg_attr(target_vendor = "apple", unsafe(link_section = "__DATA,__mod_init_func"))]
    static FIND_COUNTER: extern "C" fn() = {
        extern "C" fn find_counter() {
            COUNTER.store(__tch_kernel_find_counter(), Ordering::Relaxed);
        }
        find_counter
    };
    // SAFETY: the address of a static AtomicUsize of this process.
    if unsafe { &*COUNTER.load(Ordering::Relaxed) }.load(Ordering::Relaxed) != 0 {
        __tch_kernel_stop();
    }
}
#[doc(hidden)]
#[cold]
#[inline(never)]
pub fn __tch_kernel_find_counter() -> *mut std::sync::atomic::AtomicUsize {
    use std::sync::atomic::AtomicUsize;
    // The evaluation process publishes the address of its interrupt counter (see evcxr's
    // runtime.rs); cells are separate shared objects and cannot link to it.
    std::env::var(__tch_kernel_protocol::INTERRUPT_COUNTER_ENV)
        .ok()
        .and_then(|a| __tch_kernel_protocol::counter_address(&a))
        .map_or(&__TCH_KERNEL_NO_COUNTER as *const AtomicUsize, |a| a as *const AtomicUsize)
        as *mut AtomicUsize
}
/// The counter of code outside a kernel (no address published): nothing raises it.
static __TCH_KERNEL_NO_COUNTER: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);
/// Ends the cell with a KeyboardInterrupt; never returns (see `__tch_kernel_poll`).
#[doc(hidden)]
#[cold]
#[inline(never)]
pub fn __tch_kernel_stop() -> ! {
    if std::thread::panicking() {
        // A loop reached while a panic unwinds: one in a destructor defined in a cell, after a
        // second interrupt (`__tch_kernel_in_drop` catches this), or elsewhere (a panic leaving
        // a destructor during unwinding aborts the process; the kernel then restores the
        // snapshot). No second report through the panic hook.
        std::panic::resume_unwind(Box::new(__tch_kernel_protocol::INTERRUPT_PANIC));
    }
    std::panic::panic_any(__tch_kernel_protocol::INTERRUPT_PANIC)
}
/// The body of every `Drop::drop` defined in a cell (the kernel wraps it). While a panic
/// unwinds (an interrupt's, say), the destructor runs to its end as it would without the
/// kernel: the interrupt that started the unwinding is set aside while it runs, so its loops
/// and `check_interrupt()` go on (a second panic leaving it would abort the process), and a
/// new interrupt that stops one of its loops ends the destructor there.
#[doc(hidden)]
pub fn __tch_kernel_in_drop(body: impl FnOnce()) {
    use std::sync::atomic::Ordering;
    if !std::thread::panicking() {
        return body();
    }
    // SAFETY: the address of a static AtomicUsize of this process.
    let counter = unsafe { &*__tch_kernel_find_counter() };
    let pending = counter.swap(0, Ordering::Relaxed);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    counter.fetch_add(pending, Ordering::Relaxed);
    match result {
        Err(payload)
            if payload.downcast_ref::<&str>() != Some(&__tch_kernel_protocol::INTERRUPT_PANIC) =>
        {
            std::panic::resume_unwind(payload)
        }
        _ => {}
    }
}
