//! The evaluator: evcxr's `CommandContext` behind a small interface.

use crate::ansi;
use crate::build_cache;
use crate::build_progress::BuildProgress;
use crate::child_cells;
use crate::child_life::{CellEnd, ChildLife, ChildState};
use crate::child_output::{self, INPUT_ERR, INPUT_OK, PanicReport};
use crate::debug_builds::{DebugBridge, DebugTarget};
use crate::hints;
use crate::known_names::{self, KnownItem, KnownNames};
use crate::local_types::Ty;
use crate::loop_poll::{self, LoopPolls};
use crate::memory::{self, MemoryWatch};
use crate::output::{Forwarder, OutputSink, Stream};
use crate::snapshot_dir::{RestoreReport, SnapshotConfig};
use crate::variables_view::{self, SharedVariables};
use evcxr::{CommandContext, EvalCallbacks};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long the end of a cell waits for the child's stderr mark (see `flush_output`): only a
/// child that died at that moment takes it.
const STDERR_MARK_WAIT: Duration = Duration::from_secs(5);

/// How long a completion or inspection waits for rust-analyzer once it is free; a busy one
/// (warming up) is not waited for at all.
pub const ANALYZER_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct EvaluatorConfig {
    /// rustc opt-level for cell code and its dependencies (`:opt` changes it later).
    pub opt_level: String,
    /// Never touch the network when building cells.
    pub offline: bool,
    /// `system`, `lld` or `mold`. Fixed rather than detected from `PATH`: the linker changes the
    /// flags cargo builds with, so a kernel seeing another `PATH` than the installer (a module
    /// purge, another JupyterLab) would otherwise rebuild every dependency.
    pub linker: String,
    /// This evaluator's private build dir. It must be the dir given to [`use_build_dir`].
    pub build_dir: PathBuf,
    /// A prebuilt build dir (see [`crate::BuildCache`]) to seed `build_dir` from.
    pub seed_from: Option<PathBuf>,
    /// The seed was built from the sources and settings this evaluator has (see
    /// [`crate::BuildCache::prebuilt_is_current`]): its first cell may run rustc as the
    /// seed's build recorded, without cargo.
    pub seed_is_current: bool,
    /// Keep `build_dir` when the evaluator is dropped (to publish it as a prebuilt dir).
    pub keep_build_dir: bool,
    /// A crate every cell sees.
    pub prelude: Option<Prelude>,
    /// A Cargo.lock to start from, so dependencies resolve to tested versions (and offline).
    pub lockfile: Option<PathBuf>,
    /// Crates taken from a directory instead of crates.io (`[patch.crates-io]` of the cells'
    /// manifest): a kernel's tch generated for its PyTorch.
    pub crate_patches: Vec<(String, PathBuf)>,
    /// Start rust-analyzer (completion, hover) in the background at start-up.
    pub warm_up_analyzer: bool,
    /// Ask rust-analyzer first, the saved names only while it cannot answer. Otherwise (the
    /// default) the saved names answer, and rust-analyzer is asked, and loaded, only when
    /// they have nothing: most kernels never load it (hundreds of MB).
    pub analyzer_first: bool,
    /// How long an interrupted cell may take to reach a `check_interrupt()` before the child
    /// is killed (and variables lost).
    pub interrupt_grace: Duration,
    /// How loops in cells poll for an interrupt (see `loop_poll`).
    pub loop_polls: LoopPolls,
    /// A debugger that attaches to the evaluation process (see `debug_builds`).
    pub debugger: Option<Arc<dyn DebugTarget>>,
    /// Native library dirs whose shared objects the prelude dylib already brings into the
    /// child (libtorch's `lib/`): cells link against empty stand-ins of them, not the real
    /// (900 MB) files.
    pub link_stand_in_dirs: Vec<PathBuf>,
    /// Names to complete from while rust-analyzer cannot answer (see `known_names`), as saved
    /// by [`Evaluator::save_known_names`] at install.
    pub known_names: Arc<KnownNames>,
    /// Snapshots of the variables after each cell, restored after a crash and by `:restore`
    /// (needs the prelude's savers; the evaluation process reads its directory from
    /// [`child_protocol::snapshot_format::SNAPSHOT_DIR_ENV`]).
    pub snapshots: Option<SnapshotConfig>,
    /// Where the variables are published after each cell, for a debugger's Variables panel.
    pub variables: SharedVariables,
}

/// A crate made available to every cell at start-up.
#[derive(Debug, Clone)]
pub struct Prelude {
    /// Cargo dependency lines, e.g. `tch-prelude = { path = "/opt/tch-kernel/crates/tch-prelude" }`:
    /// the prelude's crate, and any crate cells may use by its own name without a `:dep`.
    pub dependencies: Vec<String>,
    /// Code run once so its items are in scope, e.g. `use tch_prelude::*;`.
    pub import: String,
    /// An expression using the prelude's types, analysed by rust-analyzer in the background at
    /// start-up so the first completion is fast.
    pub warm_up: String,
    /// The path of the prelude's describer macro (`::tch_prelude::__tch_variable_describer`,
    /// see child-protocol's `VARIABLE_DESCRIBER_MACRO`): variables are described for the
    /// debugger's Variables panel after each cell.
    pub variable_describer: Option<String>,
    /// The prelude's types (as a cell names them) whose methods the installer saves, so that
    /// `x.` completes before rust-analyzer is warm (see `Evaluator::save_known_names`).
    pub member_types: Vec<String>,
    /// The prelude's dependencies built fully optimized whatever the cells' opt-level (its
    /// image decoding: `child_protocol::env::PRELUDE_OPTIMIZED_CRATES`).
    pub optimized_crates: Vec<String>,
}

/// Prepares the process environment the engine and its child read.
///
/// - The engine reads its configuration from `build_dir/engine-config`.
/// - Rust's target lib dir goes first on `LD_LIBRARY_PATH`, so the child finds `libstd-*.so`.
///   rustc computes each cell's relative `RUNPATH` for `target/…/deps`, but the engine loads
///   the copy one directory up. The path is then off by one `..`, which only goes unnoticed when
///   the build dir and the toolchain share no prefix (e.g. `/tmp` vs `~/.rustup`). With the
///   cache in `~/.cache` and rustup in `~/.rustup`, `dlopen` fails.
///
/// # Safety
/// Sets process environment variables: call it before any other thread is started.
pub unsafe fn use_build_dir(build_dir: &Path) {
    let rust_lib =
        std::process::Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
            .args(["--print", "target-libdir"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| PathBuf::from(s.trim()));
    // SAFETY: the caller guarantees no other thread runs yet.
    unsafe {
        std::env::set_var(
            child_protocol::env::ENGINE_CONFIG_DIR,
            build_dir.join("engine-config"),
        );
        // `Evaluator::start` compiles its first cell at once: the engine's own warm-up eval
        // would be a second compile at start-up.
        std::env::set_var(evcxr::SKIP_WARM_UP_EVAL_ENV, "1");
        if let Some(lib) = rust_lib {
            let mut paths = vec![lib];
            if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
                paths.extend(std::env::split_paths(&old));
            }
            if let Ok(joined) = std::env::join_paths(paths) {
                std::env::set_var("LD_LIBRARY_PATH", joined);
            }
        }
    }
}

/// The engine's own settings file, read when its context is created: applying opt-level here
/// avoids a rebuild that `:opt` would cause later. The engine starts offline: the prelude's
/// dependencies are prebuilt and locked, and its `:dep` check would otherwise update the
/// registry index. `start` turns the network back on afterwards unless `offline` is set.
fn write_engine_config(config: &EvaluatorConfig) -> std::io::Result<()> {
    let dir = config.build_dir.join("engine-config");
    std::fs::create_dir_all(&dir)?;
    let quote = child_protocol::env::toml_string;
    let text = format!(
        "[evcxr]\ntmpdir = {}\nopt_level = {}\noffline_mode = true\n",
        quote(&config.build_dir.join("build").to_string_lossy()),
        quote(&config.opt_level),
    );
    std::fs::write(dir.join("evcxr.toml"), text)
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the Rust evaluator: {0}")]
    Engine(String),
    #[error("cannot configure the Rust evaluator ({command}): {message}")]
    Setup {
        command: &'static str,
        message: String,
    },
}

/// Why a cell failed. Every variant leaves the evaluator usable for the next cell.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalError {
    /// rustc rejected the cell; `report` holds rendered diagnostics (with ANSI colours).
    Compile {
        message: String,
        report: Vec<String>,
    },
    /// The cell panicked. Variables defined before the cell are kept.
    Panic {
        message: String,
        location: Option<String>,
    },
    /// A `?` in the cell returned this error (its Display form). Variables defined before the
    /// cell are kept.
    ErrorReturned {
        message: String,
    },
    /// Stopped on request: at a poll in a loop or a `check_interrupt()` (variables of earlier
    /// cells kept), or by restarting the child (`lost`: the variables that were gone with it).
    /// `restored`: what came back from the snapshot after a restart (`None`: no snapshots).
    Interrupted {
        variables_kept: bool,
        lost: Vec<String>,
        restored: Option<RestoreReport>,
    },
    /// The child died (segfault, abort, `exit`) and was restarted; `lost` are the variables
    /// that were defined before the cell and did not come back from the snapshot (`restored`).
    ///
    /// `out_of_memory`: it was killed for memory (the limit and what was in use), or an
    /// allocation failed.
    ProcessDied {
        reason: String,
        lost: Vec<String>,
        restored: Option<RestoreReport>,
        out_of_memory: Option<String>,
    },
    /// Redefining a type dropped variables of the old type.
    VariablesLost(Vec<String>),
    Other(String),
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalError::Compile { message, .. } => write!(f, "{message}"),
            EvalError::Panic { message, .. } => write!(f, "{message}"),
            EvalError::ErrorReturned { message } => write!(f, "{message}"),
            EvalError::Interrupted { .. } => write!(f, "interrupted"),
            EvalError::ProcessDied { reason, .. } => write!(f, "{reason}"),
            EvalError::VariablesLost(v) => write!(
                f,
                "variables lost after a type was redefined: {}",
                v.join(", ")
            ),
            EvalError::Other(m) => write!(f, "{m}"),
        }
    }
}

/// A cell's value as MIME type → content (text, or base64 for binary types).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalOutput {
    pub data: Vec<(String, String)>,
    pub elapsed: Option<Duration>,
    /// Time spent compiling the cell (every attempt) and running it, for `:timing`.
    pub compile_time: Duration,
    pub run_time: Duration,
    /// An earlier build of the same crate ran again: rustc did not run.
    pub build_reused: bool,
}

#[derive(Debug, Clone)]
pub struct InputRequest {
    pub prompt: String,
    pub password: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Completions {
    pub matches: Vec<String>,
    /// Byte offsets into the code.
    pub start: usize,
    pub end: usize,
    /// rust-analyzer answered; otherwise the matches come from the names the kernel knows.
    pub from_analyzer: bool,
}

/// Stops the running cell from another thread. The first interrupt asks the cell to stop (a
/// SIGINT that the child turns into a flag which `check_interrupt()` and progress bars poll,
/// keeping every variable of earlier cells); if the cell has not stopped after the grace
/// period, or on a second interrupt, the child is killed and restarted. Interrupting while no
/// cell runs does nothing, so an idle kernel never loses its variables to a stray interrupt
/// (see [`ChildLife`]).
#[derive(Clone)]
pub struct Interrupter(Arc<ChildLife>);

impl Interrupter {
    pub fn interrupt(&self) {
        self.0.interrupt();
    }
}

pub struct Evaluator {
    ctx: CommandContext,
    stdout: Forwarder,
    stderr: Forwarder,
    panics: Arc<Mutex<Option<PanicReport>>>,
    /// Set by the stderr forwarder when Rust's allocator reports a failed allocation.
    alloc_failed: Arc<AtomicU64>,
    /// Where the child is: running a cell, interrupted, restarting... (see [`ChildLife`]).
    life: Arc<ChildLife>,
    /// Names for completion while rust-analyzer cannot answer (see `known_names`).
    known: Arc<KnownNames>,
    /// The variables after the last cell, for a debugger (`EvaluatorConfig::variables`).
    shared_variables: SharedVariables,
    /// The debugger's view of cell builds, if the kernel has a debugger.
    debug_bridge: Option<Arc<DebugBridge>>,
    /// See `EvaluatorConfig::analyzer_first`.
    analyzer_first: bool,
    loop_polls: LoopPolls,
    snapshots: Option<SnapshotConfig>,
    /// Where a notice that is not a cell's own output goes (a process that died while idle).
    sink: Arc<dyn OutputSink>,
    /// The line a cell that builds crates (a `:dep`) shows while they compile.
    build_progress: Arc<BuildProgress>,
    /// The number of the last stderr mark waited for (see `flush_output`).
    stderr_mark_seen: u64,
    /// Declared last: removed after the engine (and its child) is gone.
    _build_dir: BuildDirGuard,
}

/// Removes the build dir when the evaluator goes away, unless asked to keep it.
struct BuildDirGuard {
    path: PathBuf,
    keep: bool,
}

impl Drop for BuildDirGuard {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = std::fs::remove_dir_all(&self.path)
        {
            log::debug!("cannot remove {}: {e}", self.path.display());
        }
    }
}

impl Evaluator {
    /// Starts the child process and compiles a first cell (a few seconds).
    pub fn start(
        config: &EvaluatorConfig,
        sink: Arc<dyn OutputSink>,
    ) -> Result<Evaluator, StartError> {
        let io = |what: &'static str| {
            move |e: std::io::Error| StartError::Setup {
                command: what,
                message: e.to_string(),
            }
        };
        let build_dir = BuildDirGuard {
            path: config.build_dir.clone(),
            keep: config.keep_build_dir,
        };
        let started = std::time::Instant::now();
        // It holds the cells' sources: this user's only (the cache may be on shared scratch).
        private_files::create_dir_all(&config.build_dir).map_err(io("build dir"))?;
        if let Some(seed) = config.seed_from.as_ref().filter(|s| s.is_dir()) {
            let copied = build_cache::clone_tree(seed, &config.build_dir.join("build"))
                .map_err(io("seeding the build dir"))?;
            log::info!(
                "build dir seeded from {} in {:?} ({copied} bytes copied)",
                seed.display(),
                started.elapsed()
            );
        }
        write_engine_config(config).map_err(io("engine config"))?;
        if let Some(lock) = &config.lockfile {
            let dest = config.build_dir.join("build").join("Cargo.lock");
            if !dest.exists() {
                std::fs::create_dir_all(config.build_dir.join("build")).map_err(io("build dir"))?;
                std::fs::copy(lock, &dest).map_err(io("Cargo.lock"))?;
            }
        }
        let (mut ctx, outputs) =
            CommandContext::new().map_err(|e| StartError::Engine(e.to_string()))?;
        ctx.set_link_stand_in_dirs(config.link_stand_in_dirs.clone());
        ctx.set_crate_patches(config.crate_patches.clone());
        if let Some(prelude) = &config.prelude {
            ctx.set_optimized_crates(prelude.optimized_crates.clone());
            ctx.set_variable_describer_macro(prelude.variable_describer.clone());
        }
        // The end of each run's stderr, which `flush_output` waits for; the forwarder drops it.
        ctx.mark_stderr_after_runs(true);
        // Snapshots need the prelude's savers.
        let snapshots = config
            .snapshots
            .clone()
            .filter(|_| config.prelude.is_some());
        if let Some(snapshots) = &snapshots {
            ctx.set_snapshot_saver_macro(Some(snapshots.saver_macro()));
            // What the last kernel on this notebook saved, for `:restore`.
            if let Err(e) = snapshots.keep_last() {
                log::warn!("snapshots: cannot keep the last ones: {e}");
            }
        }
        ctx.trust_seeded_rustc_record(config.seed_is_current && config.seed_from.is_some());
        log::info!("engine started after {:?}", started.elapsed());
        let setup = |ctx: &mut CommandContext, command: &'static str, code: &str| {
            let t = std::time::Instant::now();
            let r = ctx.execute(code).map_err(|e| StartError::Setup {
                command,
                message: e.to_string(),
            });
            log::info!("{command} took {:?}", t.elapsed());
            if let Ok(outputs) = &r {
                log_phases(outputs);
            }
            r.map(|_| ())
        };
        // One compile for the prelude dependency, the built-in functions and the panic hook.
        let mut first = format!(":linker {}\n", config.linker);
        if let Some(prelude) = &config.prelude {
            for dependency in &prelude.dependencies {
                first.push_str(&format!(":dep {dependency}\n"));
            }
        }
        first.push_str(&child_cells::items_cell());
        if config.prelude.is_none() {
            first.push_str(&child_cells::standalone_items_cell());
        }
        first.push_str(child_cells::PANIC_HOOK_CELL);
        if let Some(prelude) = &config.prelude {
            first.push_str(&prelude.import);
        }
        setup(&mut ctx, "prelude and built-in functions", &first)?;
        // The prelude dylib is loaded in the child now: a `:dep` that would rebuild it (or any
        // crate it is built with) is refused, since cells built against the rebuilt copy could
        // not load beside the loaded one.
        ctx.freeze_dependencies().map_err(|e| StartError::Setup {
            command: "freezing the prelude's dependencies",
            message: e.to_string(),
        })?;
        if !config.offline {
            // Later `:dep`s of new crates may use the registry.
            setup(&mut ctx, ":offline", ":offline 0")?;
        }
        // rust-analyzer serves only completion and hover; its first analysis of std and the
        // prelude takes seconds, so it runs on a thread of its own while cells compile.
        let warm_up = config.prelude.as_ref().map_or("()", |p| p.warm_up.as_str());
        if config.warm_up_analyzer {
            let analyzer = ctx.warm_up_analyzer(&format!(
                "let __tch_kernel_warm_up = (vec![String::new()], {warm_up});"
            ));
            std::thread::spawn(move || {
                let t = std::time::Instant::now();
                match analyzer.join() {
                    Ok(Ok(())) => log::info!("rust-analyzer warm-up took {:?}", t.elapsed()),
                    Ok(Err(e)) => log::warn!("rust-analyzer warm-up failed: {e}"),
                    // Its panic is logged at debug level (`quiet_analyzer_panics`); Tab answers
                    // from the names saved at install.
                    Err(_) => log::debug!("rust-analyzer warm-up panicked"),
                }
            });
        }

        let panics = Arc::new(Mutex::new(None));
        let alloc_failed = Arc::new(AtomicU64::new(0));
        let stdout = Forwarder::spawn(
            outputs.stdout,
            Stream::Stdout,
            sink.clone(),
            panics.clone(),
            alloc_failed.clone(),
        );
        let stderr = Forwarder::spawn(
            outputs.stderr,
            Stream::Stderr,
            sink.clone(),
            panics.clone(),
            alloc_failed.clone(),
        );
        let life = ChildLife::new(ctx.process_handle(), config.interrupt_grace);
        // From here on, cargo's lines for crates a cell builds go to that cell (start-up's own
        // build says why it waits in other words; see `check_prebuilt`).
        let build_progress = BuildProgress::new(sink.clone());
        let progress = build_progress.clone();
        ctx.set_build_progress(Some(Arc::new(move |line: &str| progress.compiling(line))));
        // A kernel answers Tab from what it knows while rust-analyzer is busy (warming up,
        // whether at start or at the first Tab that needs it); the installer's prebuild waits
        // for it (`save_known_names`).
        ctx.set_analyzer_wait(Some(ANALYZER_WAIT));
        let debug_bridge = config
            .debugger
            .clone()
            .map(|target| Arc::new(DebugBridge::new(target)));
        ctx.set_cell_debugger(
            debug_bridge
                .clone()
                .map(|b| b as Arc<dyn evcxr::CellDebugger>),
        );
        Ok(Evaluator {
            debug_bridge,
            ctx,
            stdout,
            stderr,
            panics,
            alloc_failed,
            life,
            known: config.known_names.clone(),
            shared_variables: config.variables.clone(),
            analyzer_first: config.analyzer_first,
            loop_polls: config.loop_polls,
            snapshots,
            sink,
            build_progress,
            stderr_mark_seen: 0,
            _build_dir: build_dir,
        })
    }

    pub fn interrupter(&self) -> Interrupter {
        Interrupter(self.life.clone())
    }

    /// Where the child is now (for tests and logs).
    pub fn child_state(&self) -> ChildState {
        self.life.state()
    }

    /// A new child's panic hook, before it runs user code.
    fn init_child(&mut self) {
        if let Err(e) = self.ctx.execute(child_cells::PANIC_HOOK_CELL) {
            log::warn!("cannot set the new child's panic hook: {e}");
        }
    }

    /// Compiles and runs a cell. Output streams to the sink while it runs and is flushed before
    /// this returns. `input` answers `input()` calls from the cell. A child that died since the
    /// last cell is restarted first, and one that dies in this cell after it (both restore the
    /// snapshot).
    pub fn eval(
        &mut self,
        code: &str,
        input: &dyn Fn(InputRequest) -> Result<String, String>,
    ) -> Result<EvalOutput, EvalError> {
        self.recover_if_died_while_idle();
        let run = self.run_cell(code, input);
        let outcome = self.outcome(run, code);
        self.publish_variables();
        outcome
    }

    /// Publishes the variables for a debugger (see `variables_view`).
    fn publish_variables(&self) {
        let views =
            variables_view::views(self.variables_for_display(), self.ctx.described_variables());
        self.shared_variables.set(views);
    }

    /// Compiles and runs one cell in the child as it is, no more: see [`CellRun`].
    fn run_cell(
        &mut self,
        code: &str,
        input: &dyn Fn(InputRequest) -> Result<String, String>,
    ) -> CellRun {
        *self.panics.lock().unwrap_or_else(PoisonError::into_inner) = None;
        // evcxr does not export its request type, so the closure's parameter type is inferred
        // from the callback field.
        let mut callbacks = EvalCallbacks {
            input_reader: &|req| {
                let request = InputRequest {
                    prompt: child_output::unescape(&req.prompt),
                    password: req.is_password,
                };
                match input(request) {
                    Ok(value) => format!("{INPUT_OK}{}", child_output::escape(&value)),
                    Err(reason) => format!("{INPUT_ERR}{}", child_output::escape(&reason)),
                }
            },
        };
        let memory = self
            .ctx
            .process_handle()
            .lock()
            .map(|child| MemoryWatch::before_cell(child.id()))
            .ok();
        self.alloc_failed.store(0, Ordering::SeqCst);
        // What a crash of the child would take with it.
        let defined_before: Vec<String> = self.variables().into_iter().map(|(n, _)| n).collect();
        let instrumented = Arc::new(loop_poll::instrument_with(code, self.loop_polls));
        if let Some(bridge) = &self.debug_bridge {
            bridge.remember(&instrumented);
        }
        self.life.begin_cell();
        let result = self
            .ctx
            .execute_with_callbacks(&instrumented.code, &mut callbacks);
        let end = self.life.end_cell();
        self.build_progress.finish();
        if let Ok(outputs) = &result {
            log_phases(outputs);
        }
        let child_alive = !matches!(result, Err(evcxr::Error::SubprocessTerminated(_)));
        self.flush_output(child_alive);
        let panic = self
            .panics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        CellRun {
            result,
            end,
            panic,
            memory,
            defined_before,
            instrumented,
        }
    }

    /// What a cell's run means for the notebook; a child that died is restarted (and the
    /// snapshot restored) before this returns.
    fn outcome(&mut self, run: CellRun, code: &str) -> Result<EvalOutput, EvalError> {
        match run.result {
            Ok(outputs) => match run.panic {
                Some(p) if p.message == child_output::INTERRUPT_PANIC => {
                    Err(EvalError::Interrupted {
                        variables_kept: true,
                        lost: Vec::new(),
                        restored: None,
                    })
                }
                Some(p) => Err(EvalError::Panic {
                    location: p.user_location().map(str::to_owned),
                    message: match memory::allocation_note(&p.message) {
                        Some(note) => format!("{}\n{note}", shown_error(p.message)),
                        None => shown_error(p.message),
                    },
                }),
                None if outputs.user_error.is_some() => Err(EvalError::ErrorReturned {
                    message: shown_error(outputs.user_error.unwrap_or_default()),
                }),
                None => {
                    self.record_snapshot_types();
                    let mut data: Vec<(String, String)> =
                        outputs.content_by_mime_type.into_iter().collect();
                    data.sort();
                    let (ran, compile): (Vec<_>, Vec<_>) = outputs
                        .phases
                        .iter()
                        .partition(|p| p.name == evcxr::EXECUTION_PHASE);
                    Ok(EvalOutput {
                        data,
                        elapsed: outputs.timing,
                        compile_time: compile.iter().map(|p| p.duration).sum(),
                        run_time: ran.iter().map(|p| p.duration).sum(),
                        build_reused: compile.iter().any(|p| p.name == evcxr::REUSED_BUILD_PHASE),
                    })
                }
            },
            Err(evcxr::Error::SubprocessTerminated(reason)) => {
                let alloc_failed =
                    Some(self.alloc_failed.load(Ordering::SeqCst)).filter(|n| *n > 0);
                let out_of_memory = run.memory.and_then(|m| m.out_of_memory(alloc_failed));
                let restored = self.recover();
                let mut lost: Vec<String> = run
                    .defined_before
                    .into_iter()
                    .filter(|name| !restored.as_ref().is_some_and(|r| r.mentions(name)))
                    .collect();
                lost.sort();
                if run.end == CellEnd::Ran {
                    Err(EvalError::ProcessDied {
                        reason,
                        lost,
                        restored,
                        out_of_memory,
                    })
                } else {
                    Err(EvalError::Interrupted {
                        variables_kept: false,
                        lost,
                        restored,
                    })
                }
            }
            Err(evcxr::Error::CompilationErrors(mut errors)) => {
                if !run.instrumented.is_unchanged() {
                    for error in &mut errors {
                        error.map_positions(&|line, column| {
                            run.instrumented.original_position(line, column)
                        });
                    }
                }
                Err(render_compile_errors(&errors, code))
            }
            Err(evcxr::Error::TypeRedefinedVariablesLost(vars)) => {
                Err(EvalError::VariablesLost(vars))
            }
            Err(evcxr::Error::Message(m)) => Err(EvalError::Other(m)),
        }
    }

    /// Evcxr's names for the variables' types, for a later restore (after each cell).
    fn record_snapshot_types(&self) {
        let Some(snapshots) = &self.snapshots else {
            return;
        };
        let variables: Vec<(String, String, bool)> = self
            .variables()
            .into_iter()
            .map(|(n, t)| {
                let is_mut = self.ctx.variable_is_mut(&n);
                (n, t, is_mut)
            })
            .collect();
        if let Err(e) = snapshots.record_types(&variables) {
            log::warn!("snapshots: cannot record the variables' types: {e}");
        }
    }

    /// The exit status of a child that died between cells (killed, out of memory while a
    /// thread ran), if it did.
    fn died_while_idle(&self) -> Option<std::process::ExitStatus> {
        let handle = self.ctx.process_handle();
        let mut child = handle.lock().ok()?;
        let mut status = child.try_wait().ok().flatten();
        // A killed process whose threads are still exiting is a zombie that cannot be reaped
        // yet: it will be in a moment (not waited for without end: a thread stuck in a driver).
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while status.is_none() && is_zombie(child.id()) && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
            status = child.try_wait().ok().flatten();
        }
        status
    }

    /// A child that died between cells is restarted before the next cell, which then runs with
    /// what the snapshot restores; a notice on stderr says so. Returns that restore's report.
    fn recover_if_died_while_idle(&mut self) -> Option<RestoreReport> {
        let status = self.died_while_idle()?;
        let defined: Vec<String> = self.variables().into_iter().map(|(n, _)| n).collect();
        // The engine finds the child gone when it sends it work, and starts a new one.
        match self.ctx.execute(child_cells::PANIC_HOOK_CELL) {
            Err(evcxr::Error::SubprocessTerminated(_)) => {}
            other => log::warn!("restarting a dead child: {:?}", other.err()),
        }
        let mut notice = format!(
            "The evaluation process had died since the last cell ({status}); it was restarted.\n"
        );
        let restored = self.recover();
        match &restored {
            Some(report) if !report.is_empty() => notice.push_str(&report.to_string()),
            _ if defined.is_empty() => {}
            _ => notice.push_str(&format!("Lost: {}.\n", defined.join(", "))),
        }
        self.sink.write(Stream::Stderr, &notice);
        restored
    }

    /// After the child died (the engine has started a new one): the new child gets its panic
    /// hook, then what the snapshot holds. Returns the restore's report (`None`: no snapshots).
    fn recover(&mut self) -> Option<RestoreReport> {
        self.restart_child();
        let restored = self.restore_from_snapshot();
        self.life.recovered();
        restored
    }

    /// Readies the engine's new child: what the dead one saved is kept for the restore, and the
    /// new one gets its panic hook.
    fn restart_child(&mut self) {
        self.life.restarting();
        if let Some(snapshots) = &self.snapshots
            && let Err(e) = snapshots.keep_last()
        {
            log::warn!("snapshots: cannot keep the last ones: {e}");
        }
        self.init_child();
    }

    /// Brings back the variables of the last snapshot kept from an earlier evaluation process
    /// (`:restore`): tensors, `VarStore`s (into an existing one of the same name, by variable
    /// name) and plain data, each saying what it is, and what cannot come back with why.
    pub fn restore(&mut self) -> Result<RestoreReport, EvalError> {
        // A process that died since the last cell hands over what it saved, and that restore
        // (of the same files) is this one.
        if let Some(report) = self.recover_if_died_while_idle() {
            return Ok(report);
        }
        let report = self.restore_from_snapshot();
        self.life.recovered();
        self.publish_variables();
        report.ok_or_else(|| EvalError::Other(format!("snapshots are {SNAPSHOTS_OFF}")))
    }

    /// Runs the snapshot's restore cell in the child (in [`ChildState::Restoring`]: a crash in
    /// it restarts the child, but restores nothing again). What fails is tried one variable at
    /// a time, so that it is named and the rest comes back. `None`: this kernel has no snapshots.
    fn restore_from_snapshot(&mut self) -> Option<RestoreReport> {
        let snapshots = self.snapshots.as_ref()?;
        let items: Vec<String> = self.ctx.defined_item_names().map(str::to_owned).collect();
        let plan = snapshots.plan(&self.variables(), &items);
        let mut report = RestoreReport {
            restored: plan.restored,
            not_restored: plan.not_restored,
        };
        if plan.code.is_empty() {
            return Some(report);
        }
        self.life.restoring();
        if self.run_restore_cell(&plan.code).is_err() {
            let mut restored = Vec::new();
            for (statement, (name, what)) in plan.statements.iter().zip(report.restored) {
                match self.run_restore_cell(statement) {
                    Ok(()) => restored.push((name, what)),
                    Err(e) => report.not_restored.push((
                        name,
                        format!(
                            "its restore failed: {}",
                            e.lines().next().unwrap_or_default()
                        ),
                    )),
                }
            }
            report.restored = restored;
        }
        Some(report)
    }

    /// One cell of a restore; a child that dies in it is restarted (nothing restored again).
    fn run_restore_cell(&mut self, code: &str) -> Result<(), String> {
        let no_input = |_: InputRequest| Err("no input while restoring".to_owned());
        let run = self.run_cell(code, &no_input);
        match (&run.result, &run.panic) {
            (Ok(outputs), None) if outputs.user_error.is_none() => {
                self.record_snapshot_types();
                Ok(())
            }
            (Ok(outputs), None) => Err(outputs.user_error.clone().unwrap_or_default()),
            (Ok(_), Some(panic)) => Err(panic.message.clone()),
            (Err(evcxr::Error::SubprocessTerminated(reason)), _) => {
                let reason = reason.clone();
                self.restart_child();
                self.life.restoring();
                Err(reason)
            }
            (Err(e), _) => Err(e.to_string()),
        }
    }

    /// What `:snapshot` shows: where this notebook's snapshots are, and what they hold.
    pub fn snapshot_status(&self) -> String {
        match &self.snapshots {
            Some(s) => s.describe(),
            None => format!("Snapshots are {SNAPSHOTS_OFF}."),
        }
    }

    /// Hands what the cell printed to the sink before its result. Its stdout is all received
    /// (the child's end of the cell comes on stdout, after it); its stderr may still be in the
    /// pipe, so when the cell ran in a live child, this waits for the mark the child wrote on
    /// stderr after the run (see `CommandContext::last_stderr_mark`).
    fn flush_output(&mut self, child_alive: bool) {
        self.stdout.flush();
        let mark = self.ctx.last_stderr_mark();
        if child_alive && mark > self.stderr_mark_seen {
            self.stderr_mark_seen = mark;
            if self.stderr.wait_for_mark(mark, STDERR_MARK_WAIT) {
                return;
            }
            log::warn!("the child's stderr mark did not come");
        }
        // No run (a compile error), or a child that died: its stderr was read to the end
        // before the engine said so.
        self.stderr.flush();
    }

    /// Completions at `byte_pos`: rust-analyzer's when it answers within [`ANALYZER_WAIT`] with
    /// something, otherwise (warming up, busy, or still loading) at once from what the kernel
    /// knows: variables and their types, defined items, the cell's own `let`s, and what
    /// rust-analyzer listed at install (`known_names`).
    pub fn complete(&mut self, code: &str, byte_pos: usize) -> Completions {
        let known = self.complete_from_known(code, byte_pos);
        if !known.matches.is_empty() && !self.analyzer_first() {
            return known;
        }
        match self.ctx.completions(code, byte_pos) {
            Ok(c) if !c.analyzer_busy && !c.completions.is_empty() => {
                let mut matches: Vec<String> = Vec::new();
                for completion in c.completions {
                    if !matches.contains(&completion.code) {
                        matches.push(completion.code);
                    }
                }
                Completions {
                    matches,
                    start: c.start_offset,
                    end: c.end_offset,
                    from_analyzer: true,
                }
            }
            other => {
                if let Err(e) = other {
                    log::debug!("completion failed: {e}");
                }
                known
            }
        }
    }

    /// Whether rust-analyzer answers before the saved names (see
    /// `EvaluatorConfig::analyzer_first`); always when nothing was saved.
    fn analyzer_first(&self) -> bool {
        self.analyzer_first || self.known.counts().0 == 0
    }

    fn complete_from_known(&self, code: &str, byte_pos: usize) -> Completions {
        let items: Vec<String> = self.ctx.defined_item_names().map(str::to_owned).collect();
        complete_from_known_names(code, byte_pos, &self.known, &self.variables(), &items)
    }

    /// rust-analyzer's completions (waiting as long as it takes) at the end of each probe
    /// (`std::collections::`, `x.`), from one analysis of all of them: each probe is one
    /// statement of the same code, so rust-analyzer analyses the cell crate once.
    fn analyzer_items(&mut self, probes: &[String]) -> Vec<Vec<KnownItem>> {
        let mut code = String::new();
        let mut positions = Vec::with_capacity(probes.len());
        for probe in probes {
            code.push_str(probe);
            positions.push(code.len());
            code.push_str(";\n");
        }
        let all = match self.ctx.completions_at(&code, &positions) {
            Ok(all) => all,
            Err(e) => {
                log::debug!("no completions for {probes:?}: {e}");
                return vec![Vec::new(); probes.len()];
            }
        };
        all.into_iter()
            .map(|c| {
                c.completions
                    .into_iter()
                    .filter(|c| !c.lookup.starts_with("__") && !c.lookup.starts_with("evcxr_"))
                    .map(|c| KnownItem {
                        name: known_names::name_of(&c.code, &c.lookup),
                        code: c.code,
                        kind: c.kind.to_owned(),
                        detail: c.detail,
                        doc: c.documentation.as_deref().map(known_names::doc_start),
                    })
                    .collect()
            })
            .collect()
    }

    /// Asks rust-analyzer (waiting as long as it takes) what a cell can name (see
    /// `known_names`): the names in scope; what follows `path::` for the modules and types
    /// reachable from them (std's and tch's modules [`KNOWN_PATH_DEPTH`] deep, within
    /// [`KNOWN_NAMES_BUDGET`]); the members of [`STD_MEMBER_TYPES`] and of `types` (the
    /// prelude's, `Prelude::member_types`). Saves them for kernels to answer from before their
    /// own rust-analyzer is ready. The installer runs this once.
    pub fn save_known_names(&mut self, path: &Path, types: &[String]) -> std::io::Result<()> {
        self.ctx.set_analyzer_wait(None);
        let started = Instant::now();
        let mut known = KnownNames::default();
        // At the start of a statement: everything in scope (an empty cell has no position).
        let mut top_level = self
            .analyzer_items(&["{ ".to_owned()])
            .pop()
            .unwrap_or_default();
        top_level.retain(|i| !i.name.is_empty());
        let mut queue: std::collections::VecDeque<(String, usize)> = top_level
            .iter()
            .filter(|i| i.kind == "module" || i.kind == "class")
            .map(|i| (i.name.clone(), 1))
            .collect();
        // A module or type re-exported elsewhere (`tch::Tensor`, `tch_prelude::nn`) is listed
        // once: later paths to it are aliases. Only items with docs or a detail are told apart.
        let mut first_path: HashMap<ItemIdentity, String> = top_level
            .iter()
            .filter_map(|i| Some((identity(i)?, i.name.clone())))
            .collect();
        known.set_top_level(top_level);
        let mut queries = 0;
        while !queue.is_empty() {
            if started.elapsed() > KNOWN_NAMES_BUDGET {
                log::warn!(
                    "saved completions stop with {} paths left: {queries} paths in {KNOWN_NAMES_BUDGET:?}",
                    queue.len()
                );
                break;
            }
            let batch: Vec<(String, usize)> = std::iter::from_fn(|| queue.pop_front())
                .filter(|(path, _)| !known.has_path(path))
                .take(KNOWN_NAMES_BATCH)
                .collect();
            let probes: Vec<String> = batch.iter().map(|(path, _)| format!("{path}::")).collect();
            let asked = Instant::now();
            let answers = self.analyzer_items(&probes);
            log::debug!("{} paths in {:.0?}", probes.len(), asked.elapsed());
            queries += probes.len();
            for ((path, depth), items) in batch.into_iter().zip(answers) {
                // std re-exports core's and alloc's modules: listed once, under std. Serde
                // is the prelude's dependency, not what notebooks call.
                let max_depth = match path.split("::").next() {
                    Some("core" | "alloc" | "serde" | "serde_json") => 1,
                    _ => KNOWN_PATH_DEPTH,
                };
                // Below a module: its modules, and its types' associated items (a type's
                // own associated types are not types to list again).
                let below_module = is_module(&path, &known);
                for item in &items {
                    // Lowercase types are aliases of primitives (`c_ulong`), listed under `u64`.
                    let deeper = below_module
                        && match item.kind.as_str() {
                            "module" => {
                                depth < max_depth && !SKIPPED_MODULES.contains(&item.name.as_str())
                            }
                            "class" => {
                                depth <= max_depth && item.name.starts_with(char::is_uppercase)
                            }
                            _ => false,
                        };
                    if !deeper {
                        continue;
                    }
                    let child = format!("{path}::{}", item.name);
                    if let Some(key) = identity(item) {
                        if let Some(first) = first_path.get(&key) {
                            if *first != child {
                                known.insert_alias(child, first.clone());
                            }
                            continue;
                        }
                        first_path.insert(key, child.clone());
                    }
                    queue.push_back((child, depth + 1));
                }
                known.insert_path(path, items);
            }
        }
        // Names in scope that are re-exports of what was crawled (`Tensor` is `tch::Tensor`)
        // were queried first, so they are the first paths: nothing more to do.
        // The prelude's first: a key both name (`nn::Path`, `std::path::Path`) is the one a
        // notebook meets most (`vs.root()`).
        let types: Vec<String> = types
            .iter()
            .cloned()
            .chain(STD_MEMBER_TYPES.iter().map(|t| t.to_string()))
            .collect();
        let probes: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(i, ty)| format!("let __known{i}: {ty} = todo!(); __known{i}."))
            .collect();
        queries += probes.len();
        for (ty, items) in types.into_iter().zip(self.analyzer_items(&probes)) {
            if !items.is_empty() {
                known.insert_members(Ty(ty).key(), items);
            }
        }
        let (paths, types, items) = known.counts();
        log::info!(
            "saved completions: {paths} paths, {types} types, {items} distinct names, {queries} queries in {:.1?}",
            started.elapsed()
        );
        known.save(path)
    }

    /// Documentation or type of what is under the cursor, as (plain text, HTML):
    /// rust-analyzer's, else what was saved at install, else a variable's type.
    pub fn inspect(&mut self, code: &str, byte_pos: usize) -> Option<(String, String)> {
        let word = word_at(code, byte_pos);
        let end = end_of_word(code, byte_pos);
        let variables = self.variables();
        let items: Vec<String> = self.ctx.defined_item_names().map(str::to_owned).collect();
        let session = known_names::Session {
            variables: &variables,
            items: &items,
        };
        let known = known_names::inspect(code, end, &self.known, &session)
            .map(|(plain, markdown)| (plain, evcxr::markdown_to_html(&markdown)));
        if known.is_some() && !self.analyzer_first() {
            return known;
        }
        if let Ok((plain, html)) = self.ctx.hover_at(code, end)
            && !plain.trim().is_empty()
            && plain != "No documentation found"
        {
            return Some((plain, html));
        }
        if known.is_some() {
            return known;
        }
        // Fall back to a variable's type, like IPython's `x?`.
        let ty = variables
            .into_iter()
            .find(|(name, _)| *name == word)
            .map(|(_, t)| t)?;
        let plain = format!("{word}: {}", evcxr::short_type_name(&ty));
        let html = evcxr::markdown_to_html(&format!("```rust\n{plain}\n```"));
        Some((plain, html))
    }

    /// Variables kept between cells, with their types as people read them (`Tensor`, not
    /// `tch_prelude::Tensor`).
    pub fn variables_for_display(&self) -> Vec<(String, String)> {
        self.ctx
            .variables_and_types()
            .map(|(n, t)| (n.to_owned(), evcxr::short_type_name(t)))
            .collect()
    }

    /// Variables kept between cells, with their types.
    pub fn variables(&self) -> Vec<(String, String)> {
        self.ctx
            .variables_and_types()
            .map(|(n, t)| (n.to_owned(), t.to_owned()))
            .collect()
    }
}

/// How deep below a crate (or a name in scope) the saved completions list modules: `std`,
/// `std::collections`, `std::collections::hash_map`, then the types' associated items there.
const KNOWN_PATH_DEPTH: usize = 3;

/// The most time the installer spends saving completions (a few hundred paths take seconds).
const KNOWN_NAMES_BUDGET: Duration = Duration::from_secs(60);

/// Paths asked about in one analysis (see `Evaluator::analyzer_items`).
const KNOWN_NAMES_BATCH: usize = 64;

/// Modules not listed below their name: platform bindings with thousands of items (`std::os`,
/// `libc`), intrinsics and SIMD, which a notebook does not Tab through.
/// The same for libraries' internals that are public: tch's generated wrappers (their
/// functions are `Tensor`'s), and fast_image_resize (`fir`) below tch-data's transforms.
const SKIPPED_MODULES: &[&str] = &[
    "arch",
    "intrinsics",
    "libc",
    "os",
    "simd",
    "sys",
    "wrappers",
    "fir",
];

/// std's types whose methods are saved at install (with what a notebook names its values:
/// `Vec` for `vec![..]`, `str` for a literal).
const STD_MEMBER_TYPES: &[&str] = &[
    "Vec<f32>",
    "String",
    "&str",
    "&[f32]",
    "Option<i64>",
    "Result<i64, String>",
    "std::collections::HashMap<String, f64>",
    "std::collections::HashSet<String>",
    "std::collections::BTreeMap<String, f64>",
    "std::collections::VecDeque<f32>",
    "std::path::PathBuf",
    "&std::path::Path",
    "std::time::Instant",
    "std::time::Duration",
    "std::ops::Range<i64>",
    "f32",
    "f64",
    "i32",
    "i64",
    "usize",
    "u8",
    "bool",
    "char",
];

/// What tells a re-exported module or type from others of its name: kind, name, detail and
/// docs. None for an item with neither detail nor docs, which cannot be told apart.
type ItemIdentity = (String, String, Option<String>, Option<String>);

fn identity(item: &KnownItem) -> Option<ItemIdentity> {
    (item.detail.is_some() || item.doc.is_some()).then(|| {
        (
            item.kind.clone(),
            item.name.clone(),
            item.detail.clone(),
            item.doc.clone(),
        )
    })
}

/// Whether `path` (already crawled or being crawled) names a module: the item it was found as
/// in its parent's list, or a name in scope.
fn is_module(path: &str, known: &KnownNames) -> bool {
    let (parent, name) = path.rsplit_once("::").unwrap_or(("", path));
    let siblings = if parent.is_empty() {
        Some(known.top_level())
    } else {
        known.path(parent)
    };
    siblings
        .into_iter()
        .flat_map(known_names::Items::iter)
        .any(|i| i.name == name && i.kind == "module")
}

/// One cell's run in the child, before it means anything for the notebook (see
/// `Evaluator::outcome`).
struct CellRun {
    result: Result<evcxr::EvalOutputs, evcxr::Error>,
    /// Whether the user interrupted it.
    end: CellEnd,
    /// The panic the child reported on the cell's thread.
    panic: Option<PanicReport>,
    /// The child's memory use at the start (to say whether it was killed for memory).
    memory: Option<MemoryWatch>,
    /// The variables before the cell: what a crash takes with it.
    defined_before: Vec<String>,
    /// The code as compiled, to map compile errors back to the cell as written.
    instrumented: Arc<loop_poll::Instrumented>,
}

/// Why `:restore` and `:snapshot` have nothing to do.
const SNAPSHOTS_OFF: &str = "off in this kernel (they need the tch prelude and a cache dir)";

/// Whether process `pid` has exited (`Z` in `/proc/PID/stat`).
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(false)
}

/// Completions from what is known without rust-analyzer (see `known_names`): `variables` and
/// `items` of the session, and the saved `known` names.
pub fn complete_from_known_names(
    code: &str,
    byte_pos: usize,
    known: &KnownNames,
    variables: &[(String, String)],
    items: &[String],
) -> Completions {
    let session = known_names::Session { variables, items };
    let (matches, start) = known_names::complete(code, byte_pos, known, &session);
    let end = byte_pos.min(code.len());
    Completions {
        matches,
        start: start.min(end),
        end,
        from_analyzer: false,
    }
}

/// A panic hook that logs panics on rust-analyzer's threads (`evcxr::ANALYZER_THREAD`: its own
/// bugs, caught where it is queried, and answered from the saved names) at debug level with a
/// backtrace, and hands every other panic to the hook that was there before.
pub fn quiet_analyzer_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some(evcxr::ANALYZER_THREAD) {
            log::debug!(
                "rust-analyzer panicked: {info}\n{}",
                std::backtrace::Backtrace::force_capture()
            );
        } else {
            previous(info);
        }
    }));
}

/// Inspection from the saved names alone (before the evaluator is up), as (plain, HTML).
pub fn inspect_from_known_names(
    code: &str,
    byte_pos: usize,
    known: &KnownNames,
) -> Option<(String, String)> {
    let session = known_names::Session {
        variables: &[],
        items: &[],
    };
    known_names::inspect(code, end_of_word(code, byte_pos), known, &session)
        .map(|(plain, markdown)| (plain, evcxr::markdown_to_html(&markdown)))
}

/// The engine's per-phase timings (compile attempts, execution), for `TCH_KERNEL_LOG=debug`.
fn log_phases(outputs: &evcxr::EvalOutputs) {
    for phase in &outputs.phases {
        log::debug!("phase {}: {:?}", phase.name, phase.duration);
    }
}

fn end_of_word(code: &str, byte_pos: usize) -> usize {
    let pos = byte_pos.min(code.len());
    code[pos..]
        .find(|c: char| !known_names::is_ident(c))
        .map_or(code.len(), |i| pos + i)
}

fn word_at(code: &str, byte_pos: usize) -> &str {
    let end = end_of_word(code, byte_pos);
    &code[known_names::word_start(&code[..end])..end]
}

/// An error's message, labels and helps in one text, for `hints` to match on.
fn error_text(error: &evcxr::CompilationError) -> String {
    let mut text = error.message();
    for m in error.spanned_messages().iter().chain(error.help_spanned()) {
        text.push('\n');
        text.push_str(&m.label);
    }
    for h in error.help() {
        text.push('\n');
        text.push_str(&h);
    }
    text
}

/// A panic's message, or the error a `?` returned, as the notebook shows it: a libtorch error
/// as its first lines (the whole
/// text, with libtorch's C++ backtrace, goes to the kernel's log at debug level, and stays in
/// the notebook when that level is on).
fn shown_error(message: String) -> String {
    match hints::libtorch_error(&message) {
        Some(short) if !log::log_enabled!(log::Level::Debug) => short,
        Some(_) => {
            log::debug!("libtorch error in full: {message}");
            message
        }
        None => message,
    }
}

fn render_compile_errors(errors: &[evcxr::CompilationError], code: &str) -> EvalError {
    let name = "cell".to_owned();
    let mut report = Vec::new();
    // Errors before warnings: the first one is the error's one-line summary.
    let mut errors: Vec<&evcxr::CompilationError> = errors.iter().collect();
    errors.sort_by_key(|e| e.level() != "error");
    for error in &errors {
        let rendered = error
            .build_report(name.clone(), code.to_owned(), evcxr::Theme::Light)
            .and_then(|r| {
                let mut buf = Vec::new();
                r.write(
                    ariadne::sources([(name.clone(), code.to_owned())]),
                    &mut buf,
                )
                .ok()?;
                Some(String::from_utf8_lossy(&buf).into_owned())
            });
        match rendered {
            Some(text) => report.extend(text.lines().map(str::to_owned)),
            None => {
                report.push(error.message());
                report.extend(error.help().into_iter().map(|h| format!("help: {h}")));
            }
        }
        if error.level() == "error"
            && let Some(hint) = hints::compile_hint(error.code(), &error_text(error))
        {
            report.push(format!("{}hint{}: {hint}", ansi::BOLD_CYAN, ansi::RESET));
        }
    }
    let message = errors
        .first()
        .map(|e| e.message())
        .unwrap_or_else(|| "compilation failed".to_owned());
    EvalError::Compile { message, report }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(word_at("let x = foo_bar.len()", 10), "foo_bar");
        assert_eq!(word_at("abc", 3), "abc");
        assert_eq!(end_of_word("ab cd", 1), 2);
    }
}
