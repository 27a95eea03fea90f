//! What a notebook cell uses to show things and to stay in control, with no imports: the
//! tch-kernel prelude re-exports all of it.
//!
//! - [`display`] anything with a [`RichDisplay`] (tensors, plots, images, [`Html`],
//!   [`Markdown`], [`Svg`], [`Png`], text), mid-cell and in order with printed text; the
//!   returned [`DisplayHandle`] updates that output in place.
//! - Plots drawn with plotters: [`LinePlot`], [`ScatterPlot`], [`Histogram`],
//!   [`ConfusionMatrix`] as SVG (or PNG), and a [`LiveChart`] that redraws in place.
//! - [`progress`]: a tqdm-like bar for any iterator, throttled, that also stops the cell cleanly
//!   when the user interrupts it ([`check_interrupt`]).
//! - With the `tch` feature: tensors shown like PyTorch (text) and as an HTML summary, and
//!   [`image`] / [`image_grid`] for `[C,H,W]` / `[N,C,H,W]` tensors.
//!
//! - [`Checkpoint`] and [`stop_on_signals`]: resume training after a batch job's time limit.
//! - [`submit`] a notebook as a Slurm job from a cell; the [`Job`] shows its status live.
//! - [`digits`]: the UCI handwritten digits, bundled (no download).
//! - [`MlLog`]: MLPerf-style `:::MLLOG` lines with the official keys ([`mllog_keys`]).
//! - [`ShardedSampler`]: a rank's share of a data set in data-parallel training; progress bars,
//!   MLLOG lines and checkpoints come from rank 0 only.
//!
//! Output travels to the kernel as one-line records on stdout ([`wire`]), so it stays in order
//! with `println!`.

mod batch_output;
mod checkpoint;
pub mod datasets;
mod display;
mod interrupt;
mod jobs;
/// What `:vars` compiles to show each variable's short value.
#[doc(hidden)]
pub mod kernel_vars;
pub mod mllog;
mod plot;
mod progress;
mod rank;
mod results;
mod sampler;
pub mod wire;

/// For programs exported with `tch-kernel export`: the Debug display of a final value, which
/// in the kernel comes from the kernel itself (so it is not in the prelude's root, where the two
/// would clash), and the cell marks that name the files outputs are saved to.
#[doc(hidden)]
pub mod batch {
    pub use crate::batch_output::{cell, outputs_dir};
    pub use crate::display::DebugFallback;
}
/// How the kernel runs a cell's `for` loops over zipped and enumerated slices between its
/// interrupt polls: from here, a cell compiles them only when it has such a loop.
#[doc(hidden)]
pub use loop_chunks::pairs::*;
#[cfg(feature = "tch")]
mod image;
/// Snapshots of variables: the savers the kernel keeps with each and the loaders `:restore`
/// compiles.
#[cfg(feature = "tch")]
#[doc(hidden)]
pub mod snapshot_savers;
#[cfg(feature = "tch")]
mod tensor;

pub use checkpoint::{
    Checkpoint, CheckpointError, RESUME_EXIT_CODE, TrainingState, stop_on_signals, stop_requested,
};
pub use datasets::CIFAR10_CLASSES;
#[cfg(feature = "tch")]
pub use datasets::{Cifar10, cifar10, digits};
pub use display::{
    DisplayHandle, EvcxrDisplay, Html, Markdown, MimeBundle, Png, RichDisplay, Svg, Text,
    clear_output, clear_output_wait, display, display_debug, display_mime,
};
#[cfg(feature = "tch")]
pub use image::{image, image_grid};
pub use interrupt::{INTERRUPT_PANIC, check_interrupt, interrupted};
pub use jobs::{Job, JobError, Submit, outside_the_kernel, submit, sweep};
pub use mllog::{MlLog, keys as mllog_keys};
pub use plot::{BarChart, ConfusionMatrix, Histogram, LinePlot, LiveChart, PlotError, ScatterPlot};
pub use progress::{Postfix, Progress, progress, progress_postfix, progress_units};
pub use results::{RunResult, RunResults, results};
pub use sampler::ShardedSampler;
/// serde, for a notebook's own types in snapshots (see [`snapshot_savers::SnapshotData`]).
#[cfg(feature = "tch")]
pub use serde;
/// JSON values for MLLOG metadata and values: `json!({"epoch_num": 1})`.
pub use serde_json::{self, Value as JsonValue, json};
pub use slurm_client::{JobId, JobInfo, JobState};
#[cfg(feature = "tch")]
pub use snapshot_savers::SnapshotData;
#[cfg(feature = "tch")]
pub use tensor::{tensor_html, tensor_text};
