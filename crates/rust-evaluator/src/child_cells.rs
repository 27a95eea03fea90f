//! Code evaluated in every fresh evaluation child (at start and after a restart): the first
//! cell's items and the panic hook.
//!
//! The cells' code is in `child/*.rs`, real Rust that a test here compiles against
//! `child-protocol`; in a kernel, the crate's own source is its module `__tch_kernel_protocol`.

/// The items of the first cell: child-protocol as a module, then `input()` / `password()`, the
/// Debug display of a cell's value and rich output (`child/items.rs`).
pub(crate) fn items_cell() -> String {
    format!(
        "#[doc(hidden)]\npub mod __tch_kernel_protocol {{\n{}\n}}\n{}",
        child_protocol::SOURCE,
        include_str!("child/items.rs")
    )
}

/// What a kernel without a prelude adds to the first cell: `display_mime`, `clear_output`,
/// `interrupted()` and `check_interrupt()` (`child/standalone.rs`), and what the prelude has
/// for loops over zipped and enumerated slices (`loop_chunks`).
pub(crate) fn standalone_items_cell() -> String {
    format!(
        "{}\n{}",
        include_str!("child/standalone.rs"),
        loop_chunks::SOURCE
    )
}

/// Installs the panic hook: a cell of its own after the items, run again in every new child
/// (`child/panic_hook.rs`). It defines no variables.
pub(crate) const PANIC_HOOK_CELL: &str = include_str!("child/panic_hook.rs");

#[cfg(test)]
mod tests {
    use super::*;

    /// The cells' code, compiled here as it is in a kernel: with child-protocol as the module
    /// `__tch_kernel_protocol`.
    #[allow(dead_code)]
    mod child_code {
        use child_protocol as __tch_kernel_protocol;
        include!("child/items.rs");
        include!("child/standalone.rs");
        include!("../../loop-chunks/src/pairs.rs");
        pub(super) fn install_panic_hook() {
            include!("child/panic_hook.rs")
        }
    }

    /// A `for` loop as loop_poll.rs writes it (`How::Chunks`), in chunks of `$size` (4096 if
    /// not given), with the items it ran and the chunks (polls) it took.
    macro_rules! chunked_for {
        ($iter:expr) => {
            chunked_for!($iter, 4096)
        };
        ($iter:expr, $size:expr) => {{
            #[allow(unused_imports)]
            use child_code::{__TchKernelSplitAny as _, __TchKernelSplitFast as _};
            let (mut items, mut chunks) = (Vec::new(), 0);
            match ::std::iter::IntoIterator::into_iter($iter) {
                mut __tch_it => 'c: loop {
                    chunks += 1;
                    let (mut __tch_chunk, __tch_limit, __tch_step, __tch_last) =
                        (&&child_code::__TchKernelSplit::of(&__tch_it))
                            .__tch_split(&mut __tch_it, $size);
                    let mut __tch_n = 0usize;
                    while __tch_n < __tch_limit {
                        match child_code::__TchKernelChunkNext::__tch_next(
                            &mut __tch_chunk,
                            &mut __tch_it,
                        ) {
                            Some(x) => {
                                __tch_n += __tch_step;
                                items.push(x);
                            }
                            None => {
                                if __tch_last {
                                    break 'c;
                                } else {
                                    break;
                                }
                            }
                        }
                    }
                },
            }
            (items, chunks)
        }};
    }

    #[test]
    fn iterator_chunks_run_every_item_once_in_order() {
        for len in [0usize, 1, 4095, 4096, 4097, 10_000] {
            let data: Vec<usize> = (0..len).collect();
            let chunks = len.div_ceil(4096).max(1);
            // Slices, by sub-slice.
            let (items, n) = chunked_for!(&data);
            assert_eq!(
                (items.into_iter().copied().collect::<Vec<_>>(), n),
                (data.clone(), chunks)
            );
            // Mutable slices: every item once, changed in place.
            let mut copy = data.clone();
            let (items, n) = chunked_for!(copy.iter_mut());
            assert_eq!(n, chunks);
            items.into_iter().for_each(|x| *x += 1);
            assert_eq!(copy, (1..len + 1).collect::<Vec<_>>());
            // Ranges of a type known only after inference, by sub-range.
            let (lo, hi) = (3i64, 3 + len as i64);
            assert_eq!(chunked_for!(lo..hi), ((lo..hi).collect(), chunks));
            // Any other iterator: counted chunks of the iterator itself (one more chunk when
            // the items fill the last, to see its end).
            let (items, n) = chunked_for!(data.iter().map(|x| x * 2));
            assert_eq!(items, data.iter().map(|x| x * 2).collect::<Vec<_>>());
            assert_eq!(n, len / 4096 + 1);
        }
        // An empty or reversed range has no items.
        assert_eq!(chunked_for!(5u8..5), (vec![], 1));
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = chunked_for!(5i32..-5);
        assert_eq!(reversed, (vec![], 1));
        assert_eq!(chunked_for!(u128::MAX - 2..u128::MAX).1, 1);
        // Ranges of what is not an integer: by sub-range if they step, as `char`'s do.
        assert_eq!(chunked_for!('a'..'d').0, vec!['a', 'b', 'c']);
        // Chunks of a learnt size (one item, a training step, up to 4096), of every kind.
        let data: Vec<usize> = (0..10).collect();
        for size in [1, 3, 10, 11] {
            let chunks = 10usize.div_ceil(size);
            let (items, n) = chunked_for!(&data, size);
            assert_eq!(
                (items.into_iter().copied().collect::<Vec<_>>(), n),
                (data.clone(), chunks)
            );
            assert_eq!(chunked_for!(0..10usize, size), (data.clone(), chunks));
            let (items, n) = chunked_for!(data.iter().map(|x| x + 1), size);
            assert_eq!(items, (1..11).collect::<Vec<_>>());
            assert_eq!(n, 10 / size + 1);
        }
    }

    /// `A.zip(B)` as loop_poll.rs writes it for a `for` loop (`Pair`).
    macro_rules! zipped {
        ($a:expr, $b:expr) => {{
            #[allow(unused_imports)]
            use child_code::{__TchKernelZipAny as _, __TchKernelZipFast as _};
            match ($a, $b) {
                (za, zb) => (&&child_code::__TchKernelPair::of(&za, &zb))
                    .__tch_zip(za, zb, |za, zb| za.zip(zb)),
            }
        }};
    }

    /// `A.enumerate()` as loop_poll.rs writes it for a `for` loop.
    macro_rules! enumerated {
        ($a:expr) => {{
            #[allow(unused_imports)]
            use child_code::{__TchKernelEnumerateAny as _, __TchKernelEnumerateFast as _};
            match ($a, ()) {
                (za, zb) => (&&child_code::__TchKernelPair::of(&za, &zb))
                    .__tch_enumerate(za, |za| za.enumerate()),
            }
        }};
    }

    #[test]
    fn zipped_and_enumerated_slices_run_every_pair_once_in_order() {
        for len in [0usize, 1, 4095, 4096, 4097, 10_000] {
            let a: Vec<usize> = (0..len).collect();
            let b: Vec<usize> = (0..len + 7).map(|i| i * 3).collect();
            let chunks = len.div_ceil(4096).max(1);
            let pairs: Vec<(usize, usize)> = a.iter().copied().zip(b.iter().copied()).collect();
            // Two slices, either the shorter, by sub-slices.
            let (items, n) = chunked_for!(zipped!(a.iter(), &b));
            assert_eq!(n, chunks);
            assert_eq!(
                items.into_iter().map(|(x, y)| (*x, *y)).collect::<Vec<_>>(),
                pairs
            );
            let (items, n) = chunked_for!(zipped!(b.iter(), a.iter()));
            assert_eq!(n, chunks);
            let swapped: Vec<_> = pairs.iter().map(|(x, y)| (*y, *x)).collect();
            assert_eq!(
                items.into_iter().map(|(x, y)| (*x, *y)).collect::<Vec<_>>(),
                swapped
            );
            // Mutable on either side: every item once, changed in place.
            let mut out = vec![0usize; len];
            let (items, n) = chunked_for!(zipped!(out.iter_mut(), &b));
            assert_eq!(n, chunks);
            items.into_iter().for_each(|(o, y)| *o = *y + 1);
            assert_eq!(out, (0..len).map(|i| i * 3 + 1).collect::<Vec<_>>());
            let mut copy = b.clone();
            let (items, _) = chunked_for!(zipped!(a.iter(), &mut copy));
            items.into_iter().for_each(|(x, y)| *y += x);
            assert_eq!(&copy[..len], (0..len).map(|i| i * 4).collect::<Vec<_>>());
            assert_eq!(&copy[len..], &b[len..]);
            // Enumerated, immutable and mutable.
            let (items, n) = chunked_for!(enumerated!(b.iter()));
            assert_eq!(n, (len + 7).div_ceil(4096));
            let expected: Vec<_> = b.iter().enumerate().map(|(i, x)| (i, *x)).collect();
            assert_eq!(
                items.into_iter().map(|(i, x)| (i, *x)).collect::<Vec<_>>(),
                expected
            );
            let mut copy = a.clone();
            let (items, _) = chunked_for!(enumerated!(copy.iter_mut()));
            items.into_iter().for_each(|(i, x)| *x += i);
            assert_eq!(copy, (0..len).map(|i| i * 2).collect::<Vec<_>>());
        }
        // Chunks of a learnt size.
        let a: Vec<u8> = (0..10).collect();
        for size in [1, 3, 10, 11] {
            let (items, n) = chunked_for!(zipped!(a.iter(), &a), size);
            assert_eq!(n, 10usize.div_ceil(size));
            assert_eq!(items.len(), 10);
            let (items, _) = chunked_for!(enumerated!(a.iter()), size);
            assert!(items.iter().all(|(i, x)| *i == usize::from(**x)));
        }
        // Anything else is zipped (enumerated) as written: an iterator that is not a slice's,
        // and a `zip` that is not Iterator's.
        let (items, _) = chunked_for!(zipped!((0..3u8).rev(), &a));
        assert_eq!(items, [(2, &0), (1, &1), (0, &2)]);
        let (items, _) = chunked_for!(zipped!(a.iter(), 5..7u8));
        assert_eq!(items, [(&0, 5), (&1, 6)]);
        let (items, _) = chunked_for!(zipped!(Some(1), Some('x')));
        assert_eq!(items, [(1, 'x')]);
        let (items, _) = chunked_for!(enumerated!(a.iter().skip(8)));
        assert_eq!(items, [(0, &8), (1, &9)]);
    }

    #[test]
    fn a_loop_learns_how_many_items_to_run_between_polls() {
        use child_code::{__TCH_KERNEL_CHUNK as MOST, __TCH_KERNEL_CHUNK_TICKS as TARGET};
        let next = child_code::__TchKernelSite::next_size;
        let site = child_code::__TchKernelSite::new();
        assert_eq!(site.size(), 1, "a new loop polls at every item");
        // Quick chunks: at most 16 times as many next, up to the most.
        let mut size = 1;
        let sizes: Vec<usize> = (0..5)
            .map(|_| {
                size = next(size, 1);
                size
            })
            .collect();
        assert_eq!(sizes, [16, 256, MOST, MOST, MOST]);
        // A slow one (seconds): one item per poll at once.
        assert_eq!(next(MOST, TARGET << 20), 1);
        // One that took the target: as many again; twice the target: half as many.
        assert_eq!(next(64, TARGET), 64);
        assert_eq!(next(64, 2 * TARGET), 32);
        // No time at all (a clock that did not move) is the quickest, not a division by zero.
        assert_eq!(next(64, 0), 64 * 16);
        // `learn` stores what it computed from the clock, for the loop's next run.
        let learnt = site.learn(16, child_code::__tch_kernel_ticks());
        assert_eq!(site.size(), learnt);
        assert!((1..=256).contains(&learnt), "{learnt}");
    }

    #[test]
    fn range_chunks_cover_every_item_once_at_every_edge() {
        fn half_open<T: child_code::__TchKernelChunk + PartialOrd + std::fmt::Debug>(
            lo: T,
            hi: T,
        ) -> Vec<(T, T)> {
            let (mut lo, mut chunks) = (lo, Vec::new());
            while lo < hi {
                let top = child_code::__tch_kernel_chunk_end(lo, hi, 4096);
                chunks.push((lo, top));
                lo = top;
            }
            chunks
        }
        assert_eq!(
            half_open(0u32, 10_000),
            [(0, 4096), (4096, 8192), (8192, 10_000)]
        );
        assert_eq!(half_open(250u8, 255), [(250, 255)]);
        assert_eq!(half_open(0u8, 255), [(0, 255)]);
        assert_eq!(half_open(-100i8, 100), [(-100, 100)]);
        assert_eq!(half_open(i64::MIN, i64::MIN + 8192).len(), 2);
        assert_eq!(
            half_open(i64::MAX - 5, i64::MAX),
            [(i64::MAX - 5, i64::MAX)]
        );
        assert_eq!(
            half_open(u128::MAX - 5000, u128::MAX),
            [
                (u128::MAX - 5000, u128::MAX - 904),
                (u128::MAX - 904, u128::MAX)
            ]
        );
        assert_eq!(half_open(i128::MIN, i128::MIN + 5000).len(), 2);
        assert_eq!(half_open('a', 'z').len(), 1, "any range that steps");
        assert_eq!(
            child_code::__tch_kernel_chunk_end(i128::MIN, 0, 4096),
            i128::MIN + 4096,
            "a span beyond i128"
        );
        // Inclusive: the last item of each chunk, up to `end` itself.
        let mut lo = 0u8;
        let mut lasts = Vec::new();
        loop {
            let last = child_code::__tch_kernel_chunk_last(lo, u8::MAX, 4096);
            lasts.push(last);
            if last == u8::MAX {
                break;
            }
            lo = last + 1;
        }
        assert_eq!(lasts, [255]);
        assert_eq!(child_code::__tch_kernel_chunk_last(5usize, 5, 4096), 5);
        assert_eq!(
            child_code::__tch_kernel_chunk_last(0usize, 10_000, 4096),
            4095
        );
        // Chunks of a learnt size, down to one item.
        assert_eq!(child_code::__tch_kernel_chunk_end(7u8, 9, 1), 8);
        assert_eq!(child_code::__tch_kernel_chunk_end(7u8, 9, 5), 9);
        assert_eq!(child_code::__tch_kernel_chunk_last(7u8, 9, 1), 7);
        assert_eq!(child_code::__tch_kernel_chunk_last(250u8, 255, 3), 252);
    }

    #[test]
    fn the_cells_code_compiles_and_speaks_the_protocol() {
        // Not in a kernel: no interrupt counter.
        assert!(!child_code::interrupted());
        let _ = child_code::install_panic_hook;
        let _ = child_code::input;
        assert!(items_cell().contains("pub mod __tch_kernel_protocol"));
        assert!(standalone_items_cell().contains("pub struct __TchKernelPair"));
        assert!(PANIC_HOOK_CELL.trim_end().ends_with('}'));
    }
}
