//! Cell builds for a debugger attached to the evaluation process (the kernel's DAP adapter).
//! While the debugger is on, the engine builds each cell with debug info under a file name of
//! its own and hands the build over before the child loads it (`evcxr::CellDebugger`). Here
//! the build's line table is put in the cell's own terms: the code as the user wrote it (the
//! engine saw it with loop polls inserted, `loop_poll`) and its lines, so that a debugger
//! keyed by cell text (JupyterLab names a cell's file by a hash of it) finds its breakpoints.

use crate::loop_poll::Instrumented;
use evcxr::{CellLine, DebugBuild};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// What a debugger does with cell builds; the kernel's implements it. The builds it gets are
/// the engine's (`evcxr::DebugBuild`, `evcxr::CellLine`) with each line's cell and line put back
/// as the user wrote them.
pub trait DebugTarget: Send + Sync + std::fmt::Debug {
    /// Whether cells are built for debugging now (only while a debugger is on).
    fn enabled(&self) -> bool;
    /// Called after a debug build of a cell, before the evaluation process loads it; the cell
    /// waits for it (breakpoints must be set by then).
    fn before_run(&self, build: &DebugBuild);
}

/// How a stack frame of a cell build reads: a cell's own statements are `<cell>` (the engine
/// runs them in a numbered function, in a closure), its functions lose the engine's crate name
/// (`ctx::train_step` is `train_step`). The bool says whether the frame is a cell's statements:
/// the frames below it are the engine's.
pub fn frame_name(raw: &str) -> (String, bool) {
    let crate_prefix = format!("{}::", evcxr::CELL_CRATE_NAME);
    let local = raw.strip_prefix(&crate_prefix).unwrap_or(raw);
    if local.starts_with(evcxr::CELL_FN_PREFIX) {
        return ("<cell>".to_owned(), true);
    }
    (local.to_owned(), false)
}

/// Whether a local variable is one the engine wrote into the cell (the variable store, a
/// chunked loop's state): a debugger's Variables panel leaves them out.
pub fn is_engine_local(name: &str) -> bool {
    name.starts_with("__tch_") || name.starts_with("evcxr_")
}

/// How many instrumented cells are remembered: items of cells older than that (still in the
/// engine) are located by their instrumented text, which no breakpoint names.
const REMEMBERED_CELLS: usize = 512;

/// Between the engine and a [`DebugTarget`]: remembers how each cell was instrumented, to map
/// the engine's lines back.
pub(crate) struct DebugBridge {
    target: Arc<dyn DebugTarget>,
    instrumented: Mutex<Remembered>,
}

#[derive(Default)]
struct Remembered {
    by_code: HashMap<Arc<str>, Arc<Instrumented>>,
    order: VecDeque<Arc<str>>,
}

impl DebugBridge {
    pub(crate) fn new(target: Arc<dyn DebugTarget>) -> DebugBridge {
        DebugBridge {
            target,
            instrumented: Mutex::default(),
        }
    }

    /// Records a cell about to be given to the engine, if instrumenting changed it.
    pub(crate) fn remember(&self, instrumented: &Arc<Instrumented>) {
        if instrumented.is_unchanged() {
            return;
        }
        let mut remembered = self
            .instrumented
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let code: Arc<str> = Arc::from(instrumented.code.as_str());
        if remembered
            .by_code
            .insert(code.clone(), instrumented.clone())
            .is_none()
        {
            remembered.order.push_back(code);
        }
        while remembered.order.len() > REMEMBERED_CELLS {
            if let Some(old) = remembered.order.pop_front() {
                remembered.by_code.remove(&old);
            }
        }
    }
}

impl Remembered {
    /// `line` of the engine's `cell` as the user wrote it.
    fn original(&self, cell: &Arc<str>, line: usize) -> (Arc<str>, usize) {
        match self.by_code.get(cell) {
            Some(instrumented) => (
                instrumented.original_code(),
                instrumented.original_position(line, 1).0,
            ),
            None => (cell.clone(), line),
        }
    }
}

impl evcxr::CellDebugger for DebugBridge {
    fn enabled(&self) -> bool {
        self.target.enabled()
    }

    fn before_run(&self, build: &DebugBuild) {
        let lines: Vec<CellLine> = {
            let remembered = self
                .instrumented
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            build
                .lines
                .iter()
                .map(|l| {
                    let (cell, cell_line) = remembered.original(&l.cell, l.cell_line);
                    CellLine {
                        line: l.line,
                        cell,
                        cell_line,
                    }
                })
                .collect()
        };
        self.target.before_run(&DebugBuild {
            pid: build.pid,
            file: build.file.clone(),
            lines,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{frame_name, is_engine_local};

    #[test]
    fn the_engines_locals_are_told_apart() {
        assert!(is_engine_local("evcxr_variable_store") && is_engine_local("__tch_size"));
        assert!(!is_engine_local("loss") && !is_engine_local("_tch"));
    }

    #[test]
    fn frames_read_as_the_cell_wrote_them() {
        assert_eq!(
            frame_name("ctx::run_user_code_12::{closure#0}"),
            ("<cell>".to_owned(), true)
        );
        assert_eq!(
            frame_name("ctx::train_step"),
            ("train_step".to_owned(), false)
        );
        assert_eq!(
            frame_name("<ctx::Net as tch::nn::Module>::forward"),
            ("<ctx::Net as tch::nn::Module>::forward".to_owned(), false)
        );
    }
}
