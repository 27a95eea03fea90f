//! Rust cell evaluation for a notebook kernel.
//!
//! Each cell is compiled by rustc into a shared object and run inside a long-lived child process
//! that keeps variables between cells. The engine is the `evcxr` crate; this crate wraps it in a
//! small interface ([`Evaluator`]) so the kernel never depends on evcxr's types, adds what a
//! notebook needs on top (streamed output, panics reported as errors, interrupts, a child that
//! restarts after a crash with a clear message) and answers `is_complete` for Rust.

pub mod ansi;
mod build_cache;
mod build_progress;
mod child_cells;
mod child_life;
mod child_output;
mod completeness;
mod debug_builds;
mod evaluator;
mod hints;
mod known_names;
mod local_types;
mod loop_poll;
mod memory;
mod output;
mod snapshot_dir;
mod variables_view;
mod zygote_children;

pub use build_cache::{BuildCache, PrebuiltState};
pub use child_life::ChildState;
pub use child_output::DisplayEvent;
pub use child_protocol::snapshot_format::SNAPSHOT_DIR_ENV;
pub use completeness::{Completeness, completeness};
pub use debug_builds::{DebugTarget, frame_name, is_engine_local};
pub use evaluator::{
    Completions, EvalError, EvalOutput, Evaluator, EvaluatorConfig, InputRequest, Interrupter,
    Prelude, StartError, complete_from_known_names, inspect_from_known_names,
    quiet_analyzer_panics, use_build_dir,
};
/// The Rust edition cells are compiled in (exported programs must use it too).
pub use evcxr::CELL_EDITION;
pub use evcxr::{CellLine, DebugBuild};
pub use known_names::{KNOWN_NAMES_FILE, KnownItem, KnownNames};
pub use loop_poll::LoopPolls;
pub use output::{OutputSink, Stream};
pub use snapshot_dir::{CONNECTION_FILE_KEY, RestoreReport, SnapshotConfig};
pub use variables_view::{SharedVariables, VariableView};
pub use zygote_children::fork_children_from_zygote;

/// Must be the first call in `main` of any binary that creates an [`Evaluator`]: the same
/// executable is re-launched as the evaluation child (and as a rustc wrapper), and this call
/// takes over in those roles and never returns.
///
/// In the child, the shared libraries listed in `TCH_KERNEL_CHILD_PRELOAD` (colon-separated
/// absolute paths) are loaded first, with `RTLD_GLOBAL`. The kernel uses this for
/// `libtorch_cuda.so`: nothing references it directly, so the linker's `--as-needed` drops it
/// and libtorch would silently run without CUDA.
pub fn child_process_hook() {
    // The evaluation child is started without arguments. A cell that runs this executable as a
    // command (`tch-kernel export ...`) passes its environment on; that is not a child.
    if std::env::var_os(child_protocol::env::IS_RUNTIME).is_some() && std::env::args_os().len() > 1
    {
        // SAFETY: first thing in main, before any thread exists.
        unsafe { std::env::remove_var(child_protocol::env::IS_RUNTIME) };
    }
    // A zygote loads them once, for every process it forks (`zygote_children`).
    let forked = zygote_children::serve_if_zygote(preload_listed);
    if !forked && std::env::var_os(child_protocol::env::IS_RUNTIME).is_some() {
        for note in preload_listed() {
            eprintln!("{note}");
        }
    }
    evcxr::runtime_hook();
}

/// Loads the libraries of [`child_protocol::env::CHILD_PRELOAD`]; says why any did not load.
fn preload_listed() -> Vec<String> {
    let Some(list) = std::env::var_os(child_protocol::env::CHILD_PRELOAD) else {
        return vec![];
    };
    std::env::split_paths(&list)
        .filter(|p| !p.as_os_str().is_empty())
        .filter_map(|lib| preload(&lib).err())
        .collect()
}

fn preload(lib: &std::path::Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(lib.as_os_str().as_bytes()) else {
        return Err(format!(
            "tch-kernel: could not load {}: a NUL in its path",
            lib.display()
        ));
    };
    // SAFETY: dlopen with a valid C string; the handle is deliberately never closed.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if !handle.is_null() {
        return Ok(());
    }
    // SAFETY: dlerror returns a thread-local C string or null.
    let err = unsafe { libc::dlerror() };
    let msg = if err.is_null() {
        "unknown error".to_owned()
    } else {
        unsafe { std::ffi::CStr::from_ptr(err) }
            .to_string_lossy()
            .into_owned()
    };
    Err(format!(
        "tch-kernel: could not load {}: {msg}",
        lib.display()
    ))
}
