//! The generic part of how the kernel runs a cell's `for` loop over zipped or enumerated slices
//! (`for (x, y) in a.iter().zip(&b)`, `for (i, x) in v.iter().enumerate()`) in chunks between
//! its interrupt polls (rust-evaluator's `loop_poll.rs` writes the loop, its `child/items.rs`
//! has the rest of the chunking).
//!
//! Generic code in a dependency costs a cell nothing until the cell uses it, while every item
//! of a kernel's own first cell is compiled again in every later cell (they added a tenth to a
//! trivial cell's rustc instructions). So a kernel with the tch prelude gets these items from
//! the prelude's glob import; one without it compiles [`SOURCE`] into its first cell, where the
//! items must resolve the same way: `pairs.rs` uses no `crate::` path and nothing but std.

/// Zipped and enumerated slices, cut into chunks of sub-slices.
#[doc(hidden)]
pub mod pairs {
    include!("pairs.rs");
}

/// The items of [`pairs`] as Rust source, for a kernel's first cell.
pub const SOURCE: &str = include_str!("pairs.rs");

#[cfg(test)]
mod tests {
    #[test]
    fn the_source_compiles_as_items_of_any_crate() {
        assert!(super::SOURCE.contains("pub struct __TchKernelPair"));
        assert!(
            !super::SOURCE.contains("//!"),
            "inner docs would not compile in a cell"
        );
        assert!(
            !super::SOURCE.contains("crate::"),
            "paths would differ in a cell"
        );
    }
}
