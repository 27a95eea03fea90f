// Included by lib.rs as the module `pairs`, and compiled as it is into the first cell of a
// kernel without the prelude (`SOURCE`): no paths from the crate root, no inner attributes.

/// `for PAT in A.zip(B)` and `for PAT in A.enumerate()` over slices, which a chunk of the
/// iterator itself would run with two exits per item (its count, the iterator's end), too slow
/// for a tight loop: the kernel's loop_poll.rs passes A and B to `__tch_zip` (or
/// `__tch_enumerate`) with a closure that zips (enumerates) them as written. When A is a
/// slice's iterator and B becomes one, the result is the slices themselves, cut into chunks of
/// sub-slices (`__TchKernelSplitFast` in the kernel's child/items.rs); otherwise it is the
/// closure's, and any method called `zip` or `enumerate` works as before.
#[doc(hidden)]
pub struct __TchKernelPair<A, B>(std::marker::PhantomData<fn() -> (A, B)>);
impl<A, B> __TchKernelPair<A, B> {
    /// Takes the values only for their types.
    #[inline(always)]
    pub fn of(_: &A, _: &B) -> Self {
        __TchKernelPair(std::marker::PhantomData)
    }
}
#[doc(hidden)]
pub trait __TchKernelZipAny<A, B> {
    fn __tch_zip<R, F: FnOnce(A, B) -> R>(&self, a: A, b: B, zip: F) -> R;
}
impl<A, B> __TchKernelZipAny<A, B> for __TchKernelPair<A, B> {
    #[inline(always)]
    fn __tch_zip<R, F: FnOnce(A, B) -> R>(&self, a: A, b: B, zip: F) -> R {
        zip(a, b)
    }
}
#[doc(hidden)]
pub trait __TchKernelZipFast<A, B> {
    type Slices;
    fn __tch_zip<R, F: FnOnce(A, B) -> R>(&self, a: A, b: B, zip: F) -> Self::Slices;
}
impl<A, B> __TchKernelZipFast<A, B> for &__TchKernelPair<A, B>
where
    A: __TchKernelSliceIter,
    B: IntoIterator,
    B::IntoIter: __TchKernelSliceIter,
{
    type Slices = __TchKernelZipSlices<A::Slice, <B::IntoIter as __TchKernelSliceIter>::Slice>;
    #[inline(always)]
    fn __tch_zip<R, F: FnOnce(A, B) -> R>(&self, a: A, b: B, _: F) -> Self::Slices {
        __TchKernelZipSlices::new(a.__tch_slice(), b.into_iter().__tch_slice())
    }
}
/// `A.enumerate()`: the pair `(A, ())`.
#[doc(hidden)]
pub trait __TchKernelEnumerateAny<A> {
    fn __tch_enumerate<R, F: FnOnce(A) -> R>(&self, a: A, enumerate: F) -> R;
}
impl<A> __TchKernelEnumerateAny<A> for __TchKernelPair<A, ()> {
    #[inline(always)]
    fn __tch_enumerate<R, F: FnOnce(A) -> R>(&self, a: A, enumerate: F) -> R {
        enumerate(a)
    }
}
#[doc(hidden)]
pub trait __TchKernelEnumerateFast<A: __TchKernelSliceIter> {
    fn __tch_enumerate<R, F: FnOnce(A) -> R>(
        &self,
        a: A,
        enumerate: F,
    ) -> __TchKernelEnumSlice<A::Slice>;
}
impl<A: __TchKernelSliceIter> __TchKernelEnumerateFast<A> for &__TchKernelPair<A, ()> {
    #[inline(always)]
    fn __tch_enumerate<R, F: FnOnce(A) -> R>(&self, a: A, _: F) -> __TchKernelEnumSlice<A::Slice> {
        __TchKernelEnumSlice(a.__tch_slice(), 0)
    }
}
/// A slice's iterator (`iter()`, `iter_mut()`), and what remains of its slice.
#[doc(hidden)]
pub trait __TchKernelSliceIter {
    type Slice: __TchKernelSlice;
    fn __tch_slice(self) -> Self::Slice;
}
impl<'a, T> __TchKernelSliceIter for std::slice::Iter<'a, T> {
    type Slice = &'a [T];
    #[inline(always)]
    fn __tch_slice(self) -> &'a [T] {
        self.as_slice()
    }
}
impl<'a, T> __TchKernelSliceIter for std::slice::IterMut<'a, T> {
    type Slice = &'a mut [T];
    #[inline(always)]
    fn __tch_slice(self) -> &'a mut [T] {
        self.into_slice()
    }
}
/// What a zipped or enumerated chunk is cut from.
#[doc(hidden)]
pub trait __TchKernelSlice: Default {
    type Iter: Iterator;
    fn __tch_len(&self) -> usize;
    /// The first `n` items and the rest.
    fn __tch_cut(self, n: usize) -> (Self, Self);
    fn __tch_iter(self) -> Self::Iter;
}
impl<'a, T> __TchKernelSlice for &'a [T] {
    type Iter = std::slice::Iter<'a, T>;
    #[inline(always)]
    fn __tch_len(&self) -> usize {
        self.len()
    }
    #[inline(always)]
    fn __tch_cut(self, n: usize) -> (Self, Self) {
        self.split_at(n)
    }
    #[inline(always)]
    fn __tch_iter(self) -> Self::Iter {
        self.iter()
    }
}
impl<'a, T> __TchKernelSlice for &'a mut [T] {
    type Iter = std::slice::IterMut<'a, T>;
    #[inline(always)]
    fn __tch_len(&self) -> usize {
        self.len()
    }
    #[inline(always)]
    fn __tch_cut(self, n: usize) -> (Self, Self) {
        self.split_at_mut(n)
    }
    #[inline(always)]
    fn __tch_iter(self) -> Self::Iter {
        self.iter_mut()
    }
}
/// Two slices of the same length, zipped item by item.
#[doc(hidden)]
pub struct __TchKernelZipSlices<A, B>(A, B);
impl<A: __TchKernelSlice, B: __TchKernelSlice> __TchKernelZipSlices<A, B> {
    /// Both cut to the shorter, as `zip` stops at the end of either.
    #[inline(always)]
    fn new(a: A, b: B) -> Self {
        let n = a.__tch_len().min(b.__tch_len());
        __TchKernelZipSlices(a.__tch_cut(n).0, b.__tch_cut(n).0)
    }
    /// The first `n` (at most) pairs; the rest stays.
    #[inline(always)]
    pub fn cut(&mut self, n: usize) -> __TchKernelZipPart<A::Iter, B::Iter> {
        let n = n.min(self.0.__tch_len());
        let (a, rest_a) = std::mem::take(&mut self.0).__tch_cut(n);
        let (b, rest_b) = std::mem::take(&mut self.1).__tch_cut(n);
        (self.0, self.1) = (rest_a, rest_b);
        __TchKernelZipPart(a.__tch_iter(), b.__tch_iter())
    }
    /// Whether every pair was cut off.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.0.__tch_len() == 0
    }
}
impl<A: __TchKernelSlice, B: __TchKernelSlice> Iterator for __TchKernelZipSlices<A, B> {
    type Item = (<A::Iter as Iterator>::Item, <B::Iter as Iterator>::Item);
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        self.cut(1).next()
    }
}
/// A chunk of two zipped slices. Not std's `Zip`: in a cell (`opt-level=1`, generics shared
/// with the prelude) the loop over a `Zip` of two sub-slices kept its float accumulator in
/// memory and was 2.4x as slow as the plain loop; LLVM sees that these two iterators end
/// together.
#[doc(hidden)]
pub struct __TchKernelZipPart<A, B>(A, B);
impl<A: Iterator, B: Iterator> Iterator for __TchKernelZipPart<A, B> {
    type Item = (A::Item, B::Item);
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        let x = self.0.next()?;
        let y = self.1.next()?;
        Some((x, y))
    }
}
/// An enumerated slice: what remains of it, and the index of its first item.
#[doc(hidden)]
pub struct __TchKernelEnumSlice<A>(A, usize);
impl<A: __TchKernelSlice> __TchKernelEnumSlice<A> {
    /// The first `n` (at most) items with their indices; the rest stays.
    #[inline(always)]
    pub fn cut(&mut self, n: usize) -> __TchKernelEnumPart<A::Iter> {
        let n = n.min(self.0.__tch_len());
        let (a, rest) = std::mem::take(&mut self.0).__tch_cut(n);
        let first = self.1;
        (self.0, self.1) = (rest, first + n);
        __TchKernelEnumPart(a.__tch_iter(), first)
    }
    /// Whether every item was cut off.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.0.__tch_len() == 0
    }
}
impl<A: __TchKernelSlice> Iterator for __TchKernelEnumSlice<A> {
    type Item = (usize, <A::Iter as Iterator>::Item);
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        self.cut(1).next()
    }
}
/// A chunk of an enumerated slice, counting as `Enumerate` does (an index below a slice's
/// length does not overflow).
#[doc(hidden)]
pub struct __TchKernelEnumPart<I>(I, usize);
impl<I: Iterator> Iterator for __TchKernelEnumPart<I> {
    type Item = (usize, I::Item);
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        let x = self.0.next()?;
        let i = self.1;
        self.1 = i.wrapping_add(1);
        Some((i, x))
    }
}
