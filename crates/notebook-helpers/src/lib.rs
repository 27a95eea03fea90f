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
//! - [`MlLog`]: MLPerf-style `:::MLLOG` lines with the official keys ([`mllog_keys`]).
//!
//! Output travels to the kernel as one-line records on stdout ([`wire`]), so it stays in order
//! with `println!`.

mod display;
mod interrupt;
pub mod mllog;
mod plot;
mod progress;
pub mod wire;
#[cfg(feature = "tch")]
mod image;
#[cfg(feature = "tch")]
mod tensor;

pub use display::{
    DisplayHandle, EvcxrDisplay, Html, Markdown, MimeBundle, Png, RichDisplay, Svg, Text, clear_output, display,
    display_debug, display_mime,
};
pub use interrupt::{check_interrupt, interrupted, INTERRUPT_PANIC};
pub use mllog::{MlLog, keys as mllog_keys};
/// JSON values for MLLOG metadata and values: `json!({"epoch_num": 1})`.
pub use serde_json::{Value as JsonValue, json};
pub use plot::{ConfusionMatrix, Histogram, LinePlot, LiveChart, PlotError, ScatterPlot};
pub use progress::{Postfix, Progress, progress, progress_postfix};
#[cfg(feature = "tch")]
pub use image::{image, image_grid};
#[cfg(feature = "tch")]
pub use tensor::{tensor_html, tensor_text};
