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
