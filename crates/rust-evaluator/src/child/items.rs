// Compiled into the first cell of every evaluation child (see child_init.rs), after the module
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
/// Like `input`, but the frontend hides what is typed.
pub fn password(prompt: &str) -> String {
    __tch_kernel_input(prompt, true)
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
/// How many items of a `for` loop run between two polls (loop_poll.rs's `CHUNK`; a test checks
/// they agree).
#[doc(hidden)]
pub const __TCH_KERNEL_CHUNK: usize = 4096;
/// The end of the next chunk of an integer range loop `for i in start..end`, which the kernel
/// cuts into sub-ranges of at most 4096 with one poll each: each stays a counted loop that the
/// optimiser sees whole.
#[doc(hidden)]
#[inline(always)]
pub fn __tch_kernel_chunk_end<T: __TchKernelChunk>(start: T, end: T) -> T {
    start.__tch_chunk_end(end)
}
/// The last item of the next chunk of `for i in start..=end` (`start <= end`).
#[doc(hidden)]
#[inline(always)]
pub fn __tch_kernel_chunk_last<T: __TchKernelChunk>(start: T, end: T) -> T {
    start.__tch_chunk_last(end)
}
#[doc(hidden)]
pub trait __TchKernelChunk: Copy {
    fn __tch_chunk_end(self, end: Self) -> Self;
    fn __tch_chunk_last(self, end: Self) -> Self;
}
// One impl for every integer type, through i128 (no macro: evcxr keeps a macro's expansion in
// the cell that ran it). A u128 beyond i128 is one chunk to the end.
impl<T: Copy + TryInto<i128> + TryFrom<i128>> __TchKernelChunk for T {
    #[inline(always)]
    fn __tch_chunk_end(self, end: Self) -> Self {
        const CHUNK: i128 = __TCH_KERNEL_CHUNK as i128;
        match (self.try_into(), end.try_into()) {
            // checked: i128::MIN..0 spans more than i128 holds.
            (Ok(lo), Ok(hi)) if hi.checked_sub(lo).is_none_or(|d| d > CHUNK) => {
                T::try_from(lo + CHUNK).unwrap_or(end)
            }
            _ => end,
        }
    }
    #[inline(always)]
    fn __tch_chunk_last(self, end: Self) -> Self {
        const CHUNK: i128 = __TCH_KERNEL_CHUNK as i128;
        match (self.try_into(), end.try_into()) {
            (Ok(lo), Ok(hi)) if hi.checked_sub(lo).is_none_or(|d| d >= CHUNK) => {
                T::try_from(lo + CHUNK - 1).unwrap_or(end)
            }
            _ => end,
        }
    }
}
/// The chunks of a `for` loop over an iterator (the kernel's loop_poll.rs writes the loop):
/// `(&&__TchKernelSplit::of(&it)).__tch_split(&mut it)` gives the next chunk, the most items it
/// runs, the count per item and whether it is the last. A slice's or an integer range's chunk
/// is a sub-iterator of at most 4096 items run to its end uncounted, so the loop over it
/// compiles as the plain loop does; any other iterator is its own chunk, for 4096 counted items.
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
    fn __tch_split(&self, it: &mut Self::Iter) -> (Self::Chunk, usize, usize, bool);
}
impl<'a, T> __TchKernelSplitFast for &__TchKernelSplit<std::slice::Iter<'a, T>> {
    type Iter = std::slice::Iter<'a, T>;
    type Chunk = __TchKernelPart<std::slice::Iter<'a, T>>;
    #[inline(always)]
    fn __tch_split(&self, it: &mut Self::Iter) -> (Self::Chunk, usize, usize, bool) {
        let (part, rest) = it.as_slice().split_at(it.len().min(__TCH_KERNEL_CHUNK));
        *it = rest.iter();
        (__TchKernelPart(part.iter()), usize::MAX, 0, rest.is_empty())
    }
}
impl<'a, T> __TchKernelSplitFast for &__TchKernelSplit<std::slice::IterMut<'a, T>> {
    type Iter = std::slice::IterMut<'a, T>;
    type Chunk = __TchKernelPart<std::slice::IterMut<'a, T>>;
    #[inline(always)]
    fn __tch_split(&self, it: &mut Self::Iter) -> (Self::Chunk, usize, usize, bool) {
        let all = std::mem::take(it).into_slice();
        let len = all.len().min(__TCH_KERNEL_CHUNK);
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
    fn __tch_split(&self, it: &mut Self::Iter) -> (Self::Chunk, usize, usize, bool) {
        let (lo, hi) = (it.start, it.end);
        if lo >= hi {
            return (__TchKernelPart(lo..lo), usize::MAX, 0, true);
        }
        let top = lo.__tch_chunk_end(hi);
        it.start = top;
        (__TchKernelPart(lo..top), usize::MAX, 0, top == hi)
    }
}
#[doc(hidden)]
pub trait __TchKernelSplitAny {
    type Iter;
    fn __tch_split(&self, it: &mut Self::Iter) -> (__TchKernelWhole, usize, usize, bool);
}
impl<I: Iterator> __TchKernelSplitAny for __TchKernelSplit<I> {
    type Iter = I;
    #[inline(always)]
    fn __tch_split(&self, _: &mut I) -> (__TchKernelWhole, usize, usize, bool) {
        (__TchKernelWhole, __TCH_KERNEL_CHUNK, 1, true)
    }
}
/// Called at the top of every loop body in cell code (the kernel inserts the call): an
/// interrupt (■) then stops the loop as `check_interrupt()` does, keeping earlier variables.
/// One relaxed load per iteration; the counter's address is looked up once per cell.
#[doc(hidden)]
#[inline(always)]
pub fn __tch_kernel_poll() {
    use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
    static COUNTER: AtomicPtr<AtomicUsize> = AtomicPtr::new(std::ptr::null_mut());
    let mut counter = COUNTER.load(Ordering::Relaxed);
    if counter.is_null() {
        counter = __tch_kernel_find_counter();
        COUNTER.store(counter, Ordering::Relaxed);
    }
    // SAFETY: the address of a static AtomicUsize of this process (or of NO_COUNTER below).
    if unsafe { &*counter }.load(Ordering::Relaxed) != 0 {
        __tch_kernel_stop();
    }
}
#[doc(hidden)]
#[cold]
#[inline(never)]
pub fn __tch_kernel_find_counter() -> *mut std::sync::atomic::AtomicUsize {
    use std::sync::atomic::AtomicUsize;
    static NO_COUNTER: AtomicUsize = AtomicUsize::new(0);
    // The evaluation process publishes the address of its interrupt counter (see evcxr's
    // runtime.rs); cells are separate shared objects and cannot link to it.
    std::env::var(__tch_kernel_protocol::INTERRUPT_COUNTER_ENV)
        .ok()
        .and_then(|a| __tch_kernel_protocol::counter_address(&a))
        .map_or(&NO_COUNTER as *const AtomicUsize, |a| a as *const AtomicUsize) as *mut AtomicUsize
}
#[doc(hidden)]
#[cold]
#[inline(never)]
pub fn __tch_kernel_stop() {
    // A loop in a `drop` that runs while a panic unwinds must not panic again (that aborts).
    if !std::thread::panicking() {
        std::panic::panic_any(__tch_kernel_protocol::INTERRUPT_PANIC);
    }
}
