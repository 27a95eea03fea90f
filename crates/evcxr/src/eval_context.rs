// Copyright 2020 The Evcxr Authors.
//
// Licensed under the Apache License, Version 2.0 <LICENSE or
// https://www.apache.org/licenses/LICENSE-2.0> or the MIT license <LICENSE
// or https://opensource.org/licenses/MIT>, at your option. This file may not be
// copied, modified, or distributed except according to those terms.

use crate::cargo_metadata;
use crate::child_process::ChildProcess;
use crate::code_block::CodeBlock;
use crate::code_block::CodeKind;
use crate::code_block::Segment;
use crate::code_block::UserCodeInfo;
use crate::crate_config::ExternalCrate;
use crate::dep_resolution;
use crate::errors::CompilationError;
use crate::errors::Error;
use crate::errors::Span;
use crate::errors::SpannedMessage;
use crate::errors::bail;
use crate::evcxr_internal_runtime;
use crate::item;
use crate::module::Module;
use crate::module::SoFile;
use crate::runtime;
use crate::rust_analyzer::Completions;
use crate::rust_analyzer::RustAnalyzer;
use crate::rust_analyzer::TypeName;
// tch-kernel: no `VariableInfo` (variable types come from rustc).
use crate::toml_parse;
use crate::use_trees::Import;
use anyhow::Result;
use once_cell::sync::Lazy;
use ra_ap_ide::TextRange;
use ra_ap_syntax::AstNode;
use ra_ap_syntax::SyntaxKind;
use ra_ap_syntax::SyntaxNode;
use ra_ap_syntax::ast;
use regex::Regex;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::Mutex;
// tch-kernel: the analyzer is shared with a warm-up thread; a panic there must not disable it.
use std::sync::PoisonError;
use std::time::Duration;
use std::time::Instant;

pub struct EvalContext {
    // Order is important here. We need to drop child_process before _tmpdir,
    // since if the subprocess hasn't terminated before we clean up the temporary
    // directory, then on some platforms (e.g. Windows), files in the temporary
    // directory will still be locked, so won't be deleted.
    child_process: ChildProcess,
    // Our tmpdir if EVCXR_TMPDIR wasn't set - Drop causes tmpdir to be cleaned up.
    _tmpdir: Option<tempfile::TempDir>,
    module: Module,
    committed_state: ContextState,
    stdout_sender: crossbeam_channel::Sender<String>,
    /// tch-kernel: shared with a background warm-up thread, and only used for completion and
    /// hover; variable types come from rustc (`record_binding_types`, `name_probed_types`).
    analyzer: Arc<Mutex<RustAnalyzer>>,
    /// tch-kernel: how long completion and hover wait for rust-analyzer (None: as long as it
    /// takes). A busy analyzer (warming up, or still on an earlier request) then answers
    /// "busy" at once, so a Tab never holds up the cells queued behind it.
    analyzer_wait: Option<Duration>,
    initial_config: Config,
    /// tch-kernel: the number of the last run sent to the child, which it writes on its stderr
    /// (child-protocol's `STDERR_MARK`) after the run and before its end on stdout (see
    /// `last_stderr_mark`). Never reset, so a restarted child's marks follow the old one's.
    stderr_marks: u64,
    /// tch-kernel: whether the child writes those marks (`mark_stderr_after_runs`); off by
    /// default, as upstream, whose embedders would show them.
    stderr_marks_on: bool,
    /// tch-kernel: what the child last said about the variables (child-protocol's
    /// `VARIABLES_MARKER`): each one's description, by name, for the debugger.
    described_variables: std::collections::BTreeMap<String, serde_json::Value>,
    /// tch-kernel: a debugger attached to the evaluation process, if the embedder has one.
    cell_debugger: Option<Arc<dyn CellDebugger>>,
    /// tch-kernel: debug builds so far, which name their sources (`DebugBuild::file`).
    debug_builds: u64,
}

/// tch-kernel: a debugger that attaches to the evaluation process. While it is `enabled`, each
/// cell's crate is built with debug info and unoptimised (`module::DEBUG_RUSTC_ARGS`), its
/// source named by a file of its own, and the debugger sees the build before the code is
/// loaded, so that breakpoints in it are set by then. Otherwise builds are as they were.
pub trait CellDebugger: Send + Sync {
    fn enabled(&self) -> bool;
    /// Called on the thread that runs the cell, which waits for it.
    fn before_run(&self, build: &DebugBuild);
}

/// A debug build of a cell's crate.
#[derive(Debug)]
pub struct DebugBuild {
    /// The evaluation process, which is about to load the build.
    pub pid: u32,
    /// The crate's source as the build's line tables name it (a copy is written there).
    pub file: PathBuf,
    /// Which line of which cell each line of `file` came from, where one did.
    pub lines: Vec<crate::code_block::CellLine>,
}

/// tch-kernel: the function each cell's code runs in is this and a number (a debugger's stack
/// shows it).
pub const CELL_FN_PREFIX: &str = "run_user_code_";

/// tch-kernel: set by an embedder that evaluates a cell of its own right after start-up, so
/// the engine's warm-up eval of `42` is not needed.
pub const SKIP_WARM_UP_EVAL_ENV: &str = child_protocol::env::SKIP_WARM_UP_EVAL;

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) tmpdir: PathBuf,
    pub(crate) debug_mode: bool,
    // Whether we should preserve variables that are Copy when a panic occurs.
    // Sounds good, but unfortunately doing so currently requires an extra build
    // attempt to determine if the type of the variable is copy.
    pub(crate) preserve_vars_on_panic: bool,
    output_format: String,
    display_types: bool,
    /// Whether to try to display the final expression. Currently this needs to
    /// be turned off when doing tab completion or cargo check, but otherwise it
    /// should always be on.
    display_final_expression: bool,
    /// Whether to expand and deduplicate use statements. We need to be able to
    /// turn this off in order for tab-completion of use statements to work, but
    /// otherwise this should always be on.
    expand_use_statements: bool,
    pub(crate) opt_level: String,
    error_fmt: &'static ErrorFormat,
    /// Whether to pass -Ztime-passes to the compiler and print the result.
    /// Causes the nightly compiler, which must be installed to be selected.
    pub(crate) time_passes: bool,
    pub(crate) linker: String,
    pub(crate) codegen_backend: Option<String>,
    // tch-kernel: no `sccache`: builds always use our own rustc wrapper (`cargo_command`).
    /// Whether to attempt to avoid network access.
    pub(crate) offline_mode: bool,
    pub(crate) toolchain: String,
    cargo_path: PathBuf,
    pub(crate) rustc_path: PathBuf,
    cache_bytes: u64,
    /// A string of the form "core:/path/to/libstd-...so". This must be libstd that corresponds to
    /// the rust compiler in `rustc_path` so must be updated whenever `rustc_path` is updated.
    pub(crate) core_extern: OsString,
    /// The host target that we're compiling for. e.g. x86_64-unknown-linux-gnu
    pub(crate) target: String,
    pub(crate) allow_static_linking: bool,
    pub(crate) build_envs: HashMap<String, String>,
    subprocess_path: PathBuf,
    /// tch-kernel: the path of a macro that, given `&value`, names the snapshot saver for the
    /// value's type (`Saver` in `evcxr_internal_runtime`); none: variables are not snapshotted.
    pub(crate) snapshot_saver_macro: Option<String>,
    /// tch-kernel: the path of a macro that, given `&value`, names the describer for the
    /// value's type (`Describer` in `evcxr_internal_runtime`, for the debugger's Variables
    /// panel); none: variables are not described.
    pub(crate) variable_describer_macro: Option<String>,
    /// tch-kernel: `[patch.crates-io]` of the cell crate's manifest (crate name, its source dir):
    /// a kernel whose tch was generated for its own PyTorch builds cells with that tch.
    pub(crate) crate_patches: Vec<(String, PathBuf)>,
    /// tch-kernel: dependencies built fully optimized whatever the cells' opt-level.
    pub(crate) optimized_crates: Vec<String>,
}

fn create_initial_config(tmpdir: PathBuf, subprocess_path: PathBuf) -> Result<Config> {
    let mut config = Config::new(tmpdir, subprocess_path)?;
    // default the linker to mold, then lld, first checking if either are installed
    // neither linkers support macos, so fallback to system (aka default)
    // https://github.com/rui314/mold/issues/132
    if !cfg!(target_os = "macos") && which::which("mold").is_ok() {
        "mold".clone_into(&mut config.linker);
    } else if !cfg!(target_os = "macos") && which::which("lld").is_ok() {
        "lld".clone_into(&mut config.linker);
    }
    Ok(config)
}

impl Config {
    pub fn new(tmpdir: PathBuf, subprocess_path: PathBuf) -> Result<Self> {
        let rustc_path = default_rustc_path()?;
        let core_extern = core_extern(&rustc_path)?;
        let target = get_host_target(Path::new(&rustc_path))?;
        Ok(Config {
            tmpdir,
            debug_mode: false,
            preserve_vars_on_panic: true,
            output_format: "{:?}".to_owned(),
            display_types: false,
            display_final_expression: true,
            expand_use_statements: true,
            opt_level: "2".to_owned(),
            error_fmt: &ERROR_FORMATS[0],
            time_passes: false,
            linker: "system".to_owned(),
            cache_bytes: 0,
            // tch-kernel: no `sccache`.
            offline_mode: false,
            crate_patches: Vec::new(),
            optimized_crates: Vec::new(),
            toolchain: String::new(),
            cargo_path: default_cargo_path()?,
            rustc_path,
            core_extern,
            target,
            // Forcing dynamic linking causes hard-to-diagnose problems in some cases, so it's off
            // by default.
            allow_static_linking: true,
            subprocess_path,
            codegen_backend: None,
            build_envs: Default::default(),
            snapshot_saver_macro: None,
            variable_describer_macro: None,
        })
    }

    // tch-kernel: no `set_sccache`/`sccache` (`:sccache` is gone).

    pub fn set_cache_bytes(&mut self, bytes: u64) {
        self.cache_bytes = bytes;
    }

    pub fn cache_bytes(&self) -> u64 {
        self.cache_bytes
    }

    pub(crate) fn cargo_command(&self, command_name: &str) -> Command {
        let mut command = if self.linker == "mold" {
            Command::new("mold")
        } else {
            Command::new(&self.cargo_path)
        };
        if self.linker == "mold" {
            command.arg("-run").arg(&self.cargo_path);
        }
        if self.offline_mode {
            command.arg("--offline");
        }

        let mut rustflags = vec!["-Cprefer-dynamic".to_owned()];
        if self.linker == "lld" {
            rustflags.push(format!("-Clink-arg=-fuse-ld={}", self.linker));
        }
        if self.time_passes {
            rustflags.push("-Ztime-passes".to_owned());
        }
        if let Some(backend) = self.codegen_backend.as_ref() {
            rustflags.push(format!("-Zcodegen-backend={backend}"));
        }

        command
            .arg(command_name)
            .current_dir(self.crate_dir())
            .env("CARGO_TARGET_DIR", "target")
            // Ignore global build.build-dir, since we rely on stuff being under "target".
            .env("CARGO_BUILD_BUILD_DIR", "target")
            .env("RUSTC", &self.rustc_path)
            .env("RUSTFLAGS", rustflags.join(" "))
            .envs(&self.build_envs)
            .env(crate::module::CORE_EXTERN_ENV, &self.core_extern);
        if self.cache_bytes > 0 {
            command.env(crate::module::CACHE_ENABLED_ENV, "1");
            command.env(
                crate::module::cache::TARGET_DIR_ENV,
                self.common_target_dir(),
            );
        }

        // tch-kernel: builds run `cargo rustc` (for `-Z` flags on the cell crate only).
        if command_name == "build" || command_name == "check" || command_name == "rustc" {
            command
                .arg("--target")
                .arg(&self.target)
                .arg("--message-format=json");
        }

        // tch-kernel: always our own wrapper, even in static mode: it records the cell crate's
        // rustc command (`record_rustc_command`) and sets `RUSTC_BOOTSTRAP` for `-Z` flags, and
        // a change of wrapper would change every dependency's fingerprint, so the installer's
        // prebuild and every kernel use the same.
        command.env("RUSTC_WRAPPER", &self.subprocess_path);
        command.env(runtime::WRAP_RUSTC_ENV, "1");
        if !self.allow_static_linking {
            command.env(runtime::FORCE_DYLIB_ENV, "1");
        }

        command
    }

    pub(crate) fn crate_dir(&self) -> &Path {
        &self.tmpdir
    }

    pub(crate) fn src_dir(&self) -> PathBuf {
        self.tmpdir.join("src")
    }

    // tch-kernel: no `deps_dir`/`target_dir`: only the Windows PATH setup used them.

    pub(crate) fn common_target_dir(&self) -> PathBuf {
        self.tmpdir.join("target")
    }
}

#[derive(Debug)]
struct ErrorFormat {
    format_str: &'static str,
    format_trait: &'static str,
}

static ERROR_FORMATS: &[ErrorFormat] = &[
    ErrorFormat {
        format_str: "{}",
        format_trait: "std::fmt::Display",
    },
    ErrorFormat {
        format_str: "{:?}",
        format_trait: "std::fmt::Debug",
    },
    ErrorFormat {
        format_str: "{:#?}",
        format_trait: "std::fmt::Debug",
    },
];

/// tch-kernel: a function (not a `stringify!` constant) so that the markers come from
/// child-protocol instead of being spelled out here again.
fn send_text_plain_def() -> String {
    use child_protocol::{BEGIN_CONTENT, END_CONTENT};
    format!(
        r#"fn evcxr_send_text_plain(text: &str) {{
    use std::io::Write;
    use std::io::{{self}};
    fn try_send_text(text: &str) -> io::Result<()> {{
        let stdout = io::stdout();
        let mut output = stdout.lock();
        output.write_all(b"{BEGIN_CONTENT} text/plain\n")?;
        output.write_all(text.as_bytes())?;
        output.write_all(b"\n{END_CONTENT}\n")?;
        Ok(())
    }}
    if let Err(error) = try_send_text(text) {{
        eprintln!("Failed to send content to parent: {{:?}}", error);
        std::process::exit(1);
    }}
}}"#
    )
}

const GET_TYPE_NAME_DEF: &str = stringify!(
    /// Shorten a type name. Convert "core::option::Option<alloc::string::String>" into "Option<String>".
    pub fn evcxr_shorten_type(t: &str) -> String {
        // This could have been done easily with regex, but we must only depend on stdlib.
        // We go over the string backwards, and remove all alphanumeric and ':' chars following a ':'.
        let mut r = String::with_capacity(t.len());
        let mut is_skipping = false;
        for c in t.chars().rev() {
            if !is_skipping {
                if c == ':' {
                    is_skipping = true;
                } else {
                    r.push(c);
                }
            } else {
                if !c.is_alphanumeric() && c != '_' && c != ':' {
                    is_skipping = false;
                    r.push(c);
                }
            }
        }
        r.chars().rev().collect()
    }

    fn evcxr_get_type_name<T>(_: &T) -> String {
        evcxr_shorten_type(std::any::type_name::<T>())
    }
);

const PANIC_NOTIFICATION: &str = "EVCXR_PANIC_NOTIFICATION";

// Outputs from an EvalContext. This is a separate struct since users may want
// destructure this and pass its components to separate threads.
pub struct EvalContextOutputs {
    pub stdout: crossbeam_channel::Receiver<String>,
    pub stderr: crossbeam_channel::Receiver<String>,
}

#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct InputRequest {
    pub prompt: String,
    pub is_password: bool,
}

pub struct EvalCallbacks<'a> {
    pub input_reader: &'a dyn Fn(InputRequest) -> String,
}

fn default_input_reader(_: InputRequest) -> String {
    String::new()
}

impl Default for EvalCallbacks<'_> {
    fn default() -> Self {
        EvalCallbacks {
            input_reader: &default_input_reader,
        }
    }
}

impl EvalContext {
    pub fn new() -> Result<(EvalContext, EvalContextOutputs), Error> {
        fix_path();

        let current_exe = std::env::current_exe()?;
        Self::with_subprocess_command(std::process::Command::new(current_exe))
    }

    // tch-kernel: no `apply_platform_specific_vars` (Windows PATH setup; Linux and macOS only).

    #[doc(hidden)]
    pub fn new_for_testing() -> (EvalContext, EvalContextOutputs) {
        let testing_runtime_path = std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("testing_runtime");
        Self::new_for_testing_with_runtime(testing_runtime_path)
    }

    #[doc(hidden)]
    pub fn new_for_testing_with_runtime(
        testing_runtime_path: impl AsRef<std::ffi::OsStr>,
    ) -> (EvalContext, EvalContextOutputs) {
        let (mut context, outputs) =
            EvalContext::with_subprocess_command(std::process::Command::new(testing_runtime_path))
                .unwrap();
        let mut state = context.state();
        state.set_offline_mode(true);
        context.commit_state(state);
        (context, outputs)
    }

    pub fn with_subprocess_command(
        subprocess_command: std::process::Command,
    ) -> Result<(EvalContext, EvalContextOutputs), Error> {
        let parsed_config = toml_parse::ConfigToml::find_then_parse()?;
        let tmpdir_var = parsed_config.get_tmp_dir()?;
        let tmpdir_path = tmpdir_var.get_path()?;
        let opt_tmpdir = tmpdir_var.get_opt_tmpdir();
        // tch-kernel: shared with the warm-up thread (`warm_up_analyzer`).
        let analyzer = Arc::new(Mutex::new(RustAnalyzer::new(&tmpdir_path)?));
        let module = Module::new()?;
        let mut initial_config =
            create_initial_config(tmpdir_path, subprocess_command.get_program().into())?;
        parsed_config.update_config(&mut initial_config)?;
        // tch-kernel: no Windows PATH setup here.

        let (stdout_sender, stdout_receiver) = crossbeam_channel::unbounded();
        let (stderr_sender, stderr_receiver) = crossbeam_channel::unbounded();
        let child_process = ChildProcess::new(subprocess_command, stderr_sender)?;
        let initial_state = ContextState::new(initial_config.clone());
        let mut context = EvalContext {
            _tmpdir: opt_tmpdir,
            committed_state: initial_state,
            module,
            child_process,
            stdout_sender,
            analyzer,
            // tch-kernel: wait for rust-analyzer until the embedder sets a limit.
            analyzer_wait: None,
            initial_config,
            stderr_marks: 0,
            stderr_marks_on: false,
            described_variables: Default::default(),
            cell_debugger: None,
            debug_builds: 0,
        };
        let outputs = EvalContextOutputs {
            stdout: stdout_receiver,
            stderr: stderr_receiver,
        };
        if context.committed_state.linker() == "lld" && context.eval("42").is_err() {
            context.committed_state.set_linker("system".to_owned());
        } else if std::env::var_os(SKIP_WARM_UP_EVAL_ENV).is_none() {
            // We need to eval something anyway, otherwise rust-analyzer crashes when trying to get
            // completions. Not 100% sure. Just writing Cargo.toml isn't sufficient.
            // tch-kernel: skipped when the embedder's first cell follows at once (it warms up
            // rust-analyzer only after that cell), saving a compile at start-up.
            if let Err(error) = context.eval("42") {
                drop(context);
                let mut stderr = String::new();
                while let Ok(line) = outputs.stderr.recv() {
                    stderr.push_str(&line);
                    stderr.push('\n');
                }
                return Err(format!("{stderr}{error}").into());
            }
        }
        context.initial_config = context.committed_state.config.clone();
        Ok((context, outputs))
    }

    /// Returns a new context state, suitable for passing to `eval` after
    /// optionally calling things like `add_dep`.
    pub fn state(&self) -> ContextState {
        self.committed_state.clone()
    }

    /// Evaluates the supplied Rust code.
    pub fn eval(&mut self, code: &str) -> Result<EvalOutputs, Error> {
        self.eval_with_state(code, self.state())
    }

    pub fn eval_with_state(
        &mut self,
        code: &str,
        state: ContextState,
    ) -> Result<EvalOutputs, Error> {
        let (user_code, code_info) = CodeBlock::from_original_user_code(code);
        self.eval_with_callbacks(user_code, state, &code_info, &mut EvalCallbacks::default())
    }

    // tch-kernel: no `check` (its only caller was the removed rust-analyzer fallback in
    // `run_statements`).

    /// Evaluates the supplied Rust code.
    pub(crate) fn eval_with_callbacks(
        &mut self,
        user_code: CodeBlock,
        mut state: ContextState,
        code_info: &UserCodeInfo,
        callbacks: &mut EvalCallbacks,
    ) -> Result<EvalOutputs, Error> {
        // tch-kernel: the cell's `:dep`s, resolved together (see `ContextState::add_dep`).
        state.check_new_deps()?;
        if user_code.is_empty()
            && !self
                .committed_state
                .state_change_can_fail_compilation(&state)
        {
            self.commit_state(state);
            return Ok(EvalOutputs::default());
        }
        let mut phases = PhaseDetailsBuilder::new();
        let code_out = state.apply(user_code.clone(), &code_info.nodes)?;

        // tch-kernel: no `code_info`: `run_statements` no longer falls back to `check`.
        let mut outputs = match self.run_statements(code_out, &mut state, &mut phases, callbacks) {
            error @ Err(Error::SubprocessTerminated(_)) => {
                self.restart_child_process()?;
                return error;
            }
            Err(Error::CompilationErrors(errors)) => {
                let mut errors = state.apply_custom_errors(errors, &user_code, code_info);
                // If we have any errors in user code then remove all errors that aren't from user
                // code.
                if errors.iter().any(|error| error.is_from_user_code()) {
                    errors.retain(|error| error.is_from_user_code())
                }
                return Err(Error::CompilationErrors(errors));
            }
            error @ Err(_) => return error,
            Ok(x) => x,
        };

        // Once, we reach here, our code has successfully executed, so we
        // conclude that variable changes are now applied.
        self.commit_state(state);

        phases.phase_complete(EXECUTION_PHASE);
        outputs.phases = phases.phases;

        Ok(outputs)
    }

    pub(crate) fn completions(
        &mut self,
        user_code: CodeBlock,
        state: ContextState,
        nodes: &[SyntaxNode],
        offset: usize,
    ) -> Result<Completions> {
        let mut all = self.completions_at(user_code, state, nodes, &[offset])?;
        Ok(all.pop().unwrap_or_default())
    }

    /// tch-kernel: completions at each of `offsets` in the same code, analysed once (a query
    /// that changes the source costs rust-analyzer a new analysis of the cell crate; asking
    /// at several places of one source does not).
    pub(crate) fn completions_at(
        &mut self,
        user_code: CodeBlock,
        mut state: ContextState,
        nodes: &[SyntaxNode],
        offsets: &[usize],
    ) -> Result<Vec<Completions>> {
        // Wrapping the final expression in order to display it might interfere
        // with completions on that final expression.
        state.config.display_final_expression = false;
        // Expanding use statements would prevent us from tab-completing those
        // use statements, since we lose information about where each bit came
        // from when we expand. This could be fixed with some work, but there's
        // not really any downside to turn it off here. It'll produce errors,
        // but those errors don't effect the analysis needed for completions.
        state.config.expand_use_statements = false;
        let user_code = state.apply(user_code, nodes)?;
        let code = state.analysis_code(user_code);
        let wrapped_offsets = offsets
            .iter()
            .map(|&offset| code.user_offset_to_output_offset(offset))
            .collect::<Result<Vec<_>>>()?;

        // tch-kernel: through `with_analyzer`; a busy analyzer answers `analyzer_busy` at once.
        let source = code.code_string();
        let Some(all) = self.with_analyzer(move |analyzer| {
            analyzer.set_source(source)?;
            wrapped_offsets
                .into_iter()
                .map(|offset| analyzer.completions(offset))
                .collect::<Result<Vec<_>>>()
        })?
        else {
            return Ok(offsets
                .iter()
                .map(|&offset| Completions {
                    analyzer_busy: true,
                    start_offset: offset,
                    end_offset: offset,
                    ..Completions::default()
                })
                .collect());
        };
        let mut out = Vec::with_capacity(all.len());
        for mut completions in all {
            completions.start_offset =
                code.output_offset_to_user_offset(completions.start_offset)?;
            completions.end_offset = code.output_offset_to_user_offset(completions.end_offset)?;
            // Filter internal identifiers.
            completions.completions.retain(|c| {
                c.code != "evcxr_variable_store"
                    && c.code != "evcxr_internal_runtime"
                    && c.code != "evcxr_analysis_wrapper"
            });
            out.push(completions);
        }
        Ok(out)
    }

    pub fn hover(&mut self, code: &str, state: &mut ContextState) -> Result<(String, String)> {
        let (modified_code, hover_offset) = if code == "let" {
            (String::from("let _ = 1;"), 0)
        } else if code.ends_with('(') {
            //If code is a function like `Option::ok_or_else`, the hover works fine, but if it is
            // method like `None.ok_or_else`, the hover show nothing, in order to show that, the code
            // has to end with "(", like `None.ok_or_else(`
            (format!("{code});"), code.len() - 1)
        } else {
            (format!("{code};"), code.len())
        };
        let (user_code, code_info) = CodeBlock::from_original_user_code(&modified_code);
        let user_code = state.apply(user_code, &code_info.nodes)?;
        let pad_code = state.analysis_code(user_code);
        let wrapped_offset = pad_code.user_offset_to_output_offset(hover_offset)? as u32;
        let text_range = TextRange::new(wrapped_offset.into(), wrapped_offset.into());
        // tch-kernel: through `with_analyzer`; a busy analyzer gives the fallback text.
        let source = pad_code.code_string();
        let hovers = self.with_analyzer(move |analyzer| {
            analyzer.set_source(source)?;
            let text = analyzer.hover(text_range, false)?;
            let markdown = analyzer.hover(text_range, true)?;
            Ok(text
                .zip(markdown)
                .map(|(t, m)| -> (String, String) { (t.info.markup.into(), m.info.markup.into()) }))
        })?;
        match hovers.flatten() {
            Some(found) => Ok(found),
            None => Ok((
                "No documentation found".into(),
                "No documentation found".into(),
            )),
        }
    }

    pub fn last_source(&self) -> Result<String, std::io::Error> {
        std::fs::read_to_string(self.state().config.src_dir().join("lib.rs"))
    }

    pub fn set_opt_level(&mut self, level: &str) -> Result<(), Error> {
        self.committed_state.set_opt_level(level)
    }

    /// tch-kernel: see `Config::optimized_crates`.
    pub fn set_optimized_crates(&mut self, crates: Vec<String>) {
        self.committed_state.set_optimized_crates(crates);
    }

    /// tch-kernel: see `Config::crate_patches`.
    pub fn set_crate_patches(&mut self, patches: Vec<(String, PathBuf)>) {
        self.committed_state.set_crate_patches(patches);
    }

    pub fn set_time_passes(&mut self, value: bool) {
        self.committed_state.set_time_passes(value);
    }

    pub fn set_preserve_vars_on_panic(&mut self, value: bool) {
        self.committed_state.set_preserve_vars_on_panic(value);
    }

    pub fn set_error_format(&mut self, value: &str) -> Result<(), Error> {
        self.committed_state.set_error_format(value)
    }

    pub fn variables_and_types(&self) -> impl Iterator<Item = (&str, &str)> {
        self.committed_state
            .variable_states
            .iter()
            .map(|(v, t)| (v.as_str(), t.type_name.as_str()))
    }

    /// tch-kernel: whether each variable was bound `mut` (a restored one is bound the same).
    pub fn variable_is_mut(&self, name: &str) -> bool {
        self.committed_state
            .variable_states
            .get(name)
            .is_some_and(|v| v.is_mut)
    }

    pub fn defined_item_names(&self) -> impl Iterator<Item = &str> {
        self.committed_state
            .items_by_name
            .keys()
            .map(String::as_str)
    }

    // Clears all state, while keeping tmpdir. This allows us to effectively
    // restart, but without having to recompile any external crates we'd already
    // compiled. Config is preserved.
    pub fn clear(&mut self) -> Result<(), Error> {
        self.committed_state = self.cleared_state();
        self.restart_child_process()
    }

    /// Returns the state that would result from clearing. Config is preserved. Nothing is done to
    /// the subprocess.
    pub(crate) fn cleared_state(&self) -> ContextState {
        ContextState::new(self.committed_state.config.clone())
    }

    pub fn reset_config(&mut self) {
        self.committed_state.config = self.initial_config.clone();
    }

    pub fn process_handle(&self) -> crate::ProcessHandle {
        self.child_process.process_handle()
    }

    /// tch-kernel: the number of the last run, which the child wrote on its stderr (after
    /// child-protocol's `STDERR_MARK`) after everything the run wrote there and before it said
    /// on stdout that the run was over: an embedder that waits for it has all of a cell's
    /// stderr. 0 before the first run.
    pub fn last_stderr_mark(&self) -> u64 {
        self.stderr_marks
    }

    /// tch-kernel: the child writes a mark on its stderr after each run (see
    /// `last_stderr_mark`); the embedder then drops those lines.
    pub fn mark_stderr_after_runs(&mut self, on: bool) {
        self.stderr_marks_on = on;
    }

    pub(crate) fn restart_child_process(&mut self) -> Result<(), Error> {
        self.committed_state.variable_states.clear();
        self.committed_state.stored_variable_states.clear();
        self.child_process = self.child_process.restart()?;
        Ok(())
    }

    pub(crate) fn last_compile_dir(&self) -> &Path {
        self.committed_state.config.crate_dir()
    }

    fn commit_state(&mut self, mut state: ContextState) {
        for variable_state in state.variable_states.values_mut() {
            // This span only makes sense when the variable is first defined.
            variable_state.definition_span = None;
        }
        state
            .stored_variable_states
            .clone_from(&state.variable_states);
        state.commit_old_user_code();
        // tch-kernel: the next cell computes its own (see `referenced_words`).
        state.referenced_words = None;
        self.committed_state = state;
    }

    fn run_statements(
        &mut self,
        mut user_code: CodeBlock,
        state: &mut ContextState,
        phases: &mut PhaseDetailsBuilder,
        callbacks: &mut EvalCallbacks,
    ) -> Result<EvalOutputs, Error> {
        self.write_cargo_toml(state)?;
        // tch-kernel: the cell's words, so that stored variables it does not mention stay in
        // the store (see `referenced_words`). Upstream's fallback (rust-analyzer failed to type
        // a variable -> `check` and one round of fixes) is gone with rust-analyzer typing.
        state.referenced_words = Some(
            code_words(&user_code.code_string())
                .map(str::to_owned)
                .collect(),
        );
        // tch-kernel: a cell that defines or redefines items is built with all of them, so that
        // what the change breaks shows now; other cells get only the items they use.
        state.all_items = state.items_by_name != self.committed_state.items_by_name
            || state.unnamed_items != self.committed_state.unnamed_items;
        if state.all_items {
            // tch-kernel: and with every variable: a redefined type makes the variables of the
            // old one unusable, and loading them is what finds out (`check_variable`).
            state.referenced_words = None;
        }
        // tch-kernel: variables without a type annotation are stored with the type rustc infers
        // and named from the build's own warnings (see `name_probed_types`), so no extra compile.
        Self::record_binding_types(state, &user_code);
        // In some circumstances we may need a few tries before we get the code right. Note that
        // we'll generally give up sooner than this if there's nothing left that we think we can
        // fix. The limit is really to prevent retrying indefinitely in case our "fixing" of things
        // somehow ends up flip-flopping back and forth. Not sure how that could happen, but best to
        // avoid any infinite loops.
        let mut remaining_retries = 5;
        // TODO: Now that we have rust analyzer, we can probably with a bit of work obtain all the
        // information we need without relying on compilation errors. See if we can get rid of this.
        loop {
            // Try to compile and run the code.
            let result = self.try_run_statements(
                user_code.clone(),
                state,
                state.compilation_mode(),
                phases,
                callbacks,
            );
            match result {
                Ok(execution_artifacts) => {
                    return Ok(execution_artifacts.output);
                }

                Err(Error::CompilationErrors(_)) if !state.all_items => {
                    // tch-kernel: the build had only the items the cell seemed to use. Whatever
                    // failed, build again with all of them before fixing or reporting anything.
                    state.all_items = true;
                    phases.phase_complete("Build with every item");
                }
                Err(Error::CompilationErrors(errors)) => {
                    // If we failed to compile, attempt to deal with the first
                    // round of compilation errors by adjusting variable types,
                    // whether they've been moved into the catch_unwind block
                    // etc.
                    if remaining_retries > 0 {
                        let mut fixed = HashSet::new();
                        for error in &errors {
                            self.attempt_to_fix_error(error, &mut user_code, state, &mut fixed)?;
                        }
                        if !fixed.is_empty() {
                            remaining_retries -= 1;
                            let fixed_sorted: Vec<_> = fixed.into_iter().collect();
                            phases.phase_complete(&fixed_sorted.join("|"));
                            continue;
                        }
                    }
                    if !user_code.is_empty() {
                        // We have user code and it appears to have an error, recompile without
                        // catch_unwind to try and get a better error message. e.g. we don't want the
                        // user to see messages like "cannot borrow immutable captured outer variable in
                        // an `FnOnce` closure `a` as mutable".
                        self.try_run_statements(
                            user_code,
                            state,
                            CompilationMode::NoCatchExpectError,
                            phases,
                            callbacks,
                        )?;
                    }
                    return Err(Error::CompilationErrors(errors));
                }

                Err(Error::TypeRedefinedVariablesLost(variables)) => {
                    for variable in &variables {
                        state.variable_states.remove(variable);
                        state.stored_variable_states.remove(variable);
                        self.committed_state.variable_states.remove(variable);
                        self.committed_state.stored_variable_states.remove(variable);
                    }
                    remaining_retries -= 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn try_run_statements(
        &mut self,
        user_code: CodeBlock,
        state: &mut ContextState,
        compilation_mode: CompilationMode,
        phases: &mut PhaseDetailsBuilder,
        callbacks: &mut EvalCallbacks,
    ) -> Result<ExecutionArtifacts, Error> {
        let code = state.code_to_compile(user_code, compilation_mode);
        // tch-kernel: public paths in the probe's warnings need `-Ztrim-diagnostic-paths=false`.
        // The build that reports errors to the user (`NoCatchExpectError`) keeps rustc's short
        // names, and a build with nothing to probe needs no unstable flag.
        let probing = compilation_mode != CompilationMode::NoCatchExpectError
            && state.variables_to_probe().next().is_some();
        let extra_args = if probing {
            crate::module::TYPE_PROBE_RUSTC_ARGS
        } else {
            &[]
        };
        let debug = self
            .cell_debugger
            .clone()
            .filter(|d| compilation_mode != CompilationMode::NoCatchExpectError && d.enabled());
        let debug_file = match &debug {
            Some(_) => Some(self.debug_source(&code, &state.config)?),
            None => None,
        };
        let debug_args: Vec<String> = match &debug_file {
            Some(file) => crate::module::DEBUG_RUSTC_ARGS
                .iter()
                .map(|a| a.to_string())
                .chain([crate::module::debug_source_arg(file)])
                .collect(),
            None => Vec::new(),
        };
        let args: Vec<&str> = extra_args
            .iter()
            .copied()
            .chain(debug_args.iter().map(String::as_str))
            .collect();
        // tch-kernel: the same crate built before runs again without rustc (`crate::reuse`);
        // never a debug build (each has its own source file) or the build that shows errors.
        let reuse = debug.is_none() && compilation_mode != CompilationMode::NoCatchExpectError;
        let built = self.module.build(
            &code,
            &state.config,
            &args,
            &state.current_user_fn_name(),
            reuse,
        )?;
        if built.reused {
            phases.phase_complete(REUSED_BUILD_PHASE);
        }
        let (so_file, warnings, fn_name) = (built.so_file, built.warnings, built.fn_name);

        if compilation_mode == CompilationMode::NoCatchExpectError {
            // Uh-oh, caller was expecting an error, return OK and the caller can return the
            // original error.
            return Ok(ExecutionArtifacts {
                output: EvalOutputs::new(),
            });
        }
        phases.phase_complete("Final compile");
        // tch-kernel: name the inferred types from this build's probe warnings.
        Self::name_probed_types(state, &warnings)?;

        if let (Some(debugger), Some(file)) = (debug, debug_file) {
            let pid = self
                .child_process
                .process_handle()
                .lock()
                .map(|child| child.id())
                .unwrap_or_else(|poisoned| poisoned.into_inner().id());
            debugger.before_run(&DebugBuild {
                pid,
                file,
                lines: code.cell_lines(),
            });
        }
        let output = self.run_and_capture_output(state, &so_file, &fn_name, callbacks)?;
        Ok(ExecutionArtifacts { output })
    }

    /// tch-kernel: see [`CellDebugger`].
    pub fn set_cell_debugger(&mut self, debugger: Option<Arc<dyn CellDebugger>>) {
        self.cell_debugger = debugger;
    }

    /// The file a debug build's source is named by, written there: one per build, so that a
    /// line of it means one build's code, whichever shared objects are loaded. Still named
    /// `lib.rs`: rustc's diagnostics use the name too, and are mapped back to cells by it.
    fn debug_source(&mut self, code: &CodeBlock, config: &Config) -> Result<PathBuf, Error> {
        self.debug_builds += 1;
        let dir = config
            .crate_dir()
            .join("debug")
            .join(format!("build-{}", self.debug_builds));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("lib.rs");
        std::fs::write(&file, code.code_string())?;
        Ok(file)
    }

    pub(crate) fn write_cargo_toml(&self, state: &ContextState) -> Result<()> {
        self.module.write_cargo_toml(state)?;
        self.module.write_config_toml(state)?;
        Ok(())
    }

    /// tch-kernel: the types of the variables a cell defines. evcxr asked rust-analyzer, whose
    /// first analysis of std and tch takes seconds. Here a `let` with a type annotation keeps
    /// it; any other variable is stored with the type rustc infers (`put_variable(x)`) and
    /// marked for the type probe with an empty type name, filled in after the build by
    /// [`Self::name_probed_types`].
    fn record_binding_types(state: &mut ContextState, user_code: &CodeBlock) {
        let analysis_code = state.analysis_code(user_code.clone());
        let bindings = crate::type_probe::top_level_bindings(
            &analysis_code.code_string(),
            "evcxr_analysis_wrapper",
        );
        for binding in bindings {
            // We don't want to try to store evcxr_variable_store into itself, so we ignore it.
            if binding.name == "evcxr_variable_store" {
                continue;
            }
            let type_name = binding
                .explicit_type
                .map(|t| replace_reserved_words_in_type(&t))
                .unwrap_or_default();
            state
                .variable_states
                .entry(binding.name)
                .or_insert_with(|| VariableState {
                    type_name: String::new(),
                    is_mut: binding.is_mutable,
                    move_state: VariableMoveState::New,
                    definition_span: None,
                })
                .type_name = type_name;
        }
    }

    /// tch-kernel: names the type of each variable stored with an inferred type, from the
    /// `unused result of type `&T`` warnings of the probe statements in the build that just
    /// succeeded (see `type_probe.rs`). A type that cannot be written in a later cell's `let`
    /// (a closure, an iterator adaptor holding one) stops the cell before it runs.
    fn name_probed_types(
        state: &mut ContextState,
        warnings: &[CompilationError],
    ) -> Result<(), Error> {
        let mut probed: HashMap<String, String> = warnings
            .iter()
            .filter_map(crate::type_probe::probed_type)
            .collect();
        let to_probe: Vec<String> = state.variables_to_probe().cloned().collect();
        for variable_name in to_probe {
            let rustc_type = probed.remove(&variable_name);
            let type_name = match crate::type_probe::classify(rustc_type.as_deref()) {
                TypeName::Named(x) => x,
                TypeName::Closure => bail!(
                    // tch-kernel: in plain words, without the engine's name.
                    "The variable `{}` is a closure, which cannot be kept for later cells.\n\
                     A boxed closure can: let f: Box<dyn Fn(i32) -> i32> = Box::new(|x| x + 1);\n\
                     Or use it only in this cell, inside braces: {{ let f = |x| x + 1; f(2) }}",
                    variable_name
                ),
                TypeName::Unknown => match rustc_type {
                    Some(rustc_type) => bail!(
                        "The variable `{variable_name}` has type `{rustc_type}`, which cannot \
                         be written out (it holds a closure, an `impl Trait` or another \
                         anonymous type), so it cannot be kept for later cells.\n\
                         Collect an iterator into a `Vec`, box a closure \
                         (`Box<dyn Fn(..)>`), or wrap the code in braces to use it only \
                         in this cell.",
                        variable_name = variable_name,
                        rustc_type = rustc_type
                    ),
                    None => bail!(
                        "Couldn't automatically determine type of variable `{}`.\n\
                         Please give it an explicit type.",
                        variable_name
                    ),
                },
            };
            if let Some(state) = state.variable_states.get_mut(&variable_name) {
                state.type_name = replace_reserved_words_in_type(&type_name);
            }
        }
        Ok(())
    }

    /// tch-kernel: the child's descriptions of the variables (see `VARIABLES_MARKER`).
    pub fn described_variables(&self) -> &std::collections::BTreeMap<String, serde_json::Value> {
        &self.described_variables
    }

    /// tch-kernel: keeps what a `VARIABLES_MARKER` line says: the names the store holds now, and
    /// new descriptions.
    fn note_described_variables(&mut self, json: &str) {
        let Ok(serde_json::Value::Object(mut update)) = serde_json::from_str(json) else {
            return;
        };
        if let Some(serde_json::Value::Array(names)) = update.remove("names") {
            let names: std::collections::HashSet<&str> =
                names.iter().filter_map(|n| n.as_str()).collect();
            self.described_variables
                .retain(|name, _| names.contains(name.as_str()));
        }
        if let Some(serde_json::Value::Object(described)) = update.remove("described") {
            self.described_variables.extend(described);
        }
    }

    /// tch-kernel: see `Config::variable_describer_macro`.
    pub fn set_variable_describer_macro(&mut self, path: Option<String>) {
        self.initial_config
            .variable_describer_macro
            .clone_from(&path);
        self.committed_state.config.variable_describer_macro = path;
    }

    /// tch-kernel: see `Config::snapshot_saver_macro`.
    pub fn set_snapshot_saver_macro(&mut self, path: Option<String>) {
        self.initial_config.snapshot_saver_macro.clone_from(&path);
        self.committed_state.config.snapshot_saver_macro = path;
    }

    /// tch-kernel: see `Module::set_link_stand_in_dirs`.
    pub fn set_link_stand_in_dirs(&mut self, dirs: Vec<PathBuf>) {
        self.module.set_link_stand_in_dirs(dirs);
    }

    /// tch-kernel: see `Module::trust_seeded_rustc_record`.
    pub fn trust_seeded_rustc_record(&mut self, trusted: bool) {
        self.module.trust_seeded_rustc_record(trusted);
    }

    /// tch-kernel: see `Module::set_build_progress`.
    pub fn set_build_progress(&mut self, progress: Option<crate::module::BuildProgress>) {
        self.module.set_build_progress(progress);
    }

    /// tch-kernel: see `ContextState::freeze_dependencies`.
    pub fn freeze_dependencies(&mut self) -> Result<(), Error> {
        self.committed_state.freeze_dependencies()
    }

    /// tch-kernel: see `analyzer_wait`.
    pub fn set_analyzer_wait(&mut self, wait: Option<Duration>) {
        self.analyzer_wait = wait;
    }

    /// tch-kernel: runs `query` on rust-analyzer. With an `analyzer_wait`, it runs on a thread
    /// of its own and `None` comes back when the analyzer is busy or does not answer in time
    /// (the query then finishes in the background, and warms the analyzer for the next one).
    fn with_analyzer<T: Send + 'static>(
        &self,
        query: impl FnOnce(&mut RustAnalyzer) -> Result<T> + Send + 'static,
    ) -> Result<Option<T>> {
        let Some(wait) = self.analyzer_wait else {
            let mut analyzer = self.analyzer.lock().unwrap_or_else(PoisonError::into_inner);
            return query(&mut analyzer).map(Some);
        };
        let analyzer = self.analyzer.clone();
        let (sender, receiver) = crossbeam_channel::bounded(1);
        crate::rust_analyzer::spawn_analyzer_thread(move || {
            let mut guard = match analyzer.try_lock() {
                Ok(guard) => guard,
                Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    let _ = sender.send(None);
                    return;
                }
            };
            let _ = sender.send(Some(query(&mut guard)));
        })?;
        match receiver.recv_timeout(wait) {
            Ok(Some(result)) => result.map(Some),
            Ok(None) | Err(_) => Ok(None),
        }
    }

    /// tch-kernel: makes rust-analyzer load the workspace and analyse `code` (as a cell) on a
    /// background thread, so the first completion or hover is fast. Completion and hover wait
    /// for it; evaluation does not use rust-analyzer. The query is a completion at the end of
    /// `code`, as a Tab there would ask: it type-checks the wrapper function (rendering the
    /// locals in scope needs their types) against std and the dependencies.
    pub fn warm_up_analyzer(&mut self, code: &str) -> std::thread::JoinHandle<Result<(), Error>> {
        let mut state = self.state();
        // The same settings as `completions`.
        state.config.display_final_expression = false;
        state.config.expand_use_statements = false;
        let (user_code, code_info) = CodeBlock::from_original_user_code(code);
        let end = code.len();
        let analysis = state
            .apply(user_code, &code_info.nodes)
            .and_then(|user_code| {
                let analysis_code = state.analysis_code(user_code);
                let offset = analysis_code.user_offset_to_output_offset(end)?;
                Ok((analysis_code.code_string(), offset))
            });
        let analyzer = self.analyzer.clone();
        crate::rust_analyzer::spawn_analyzer_thread(move || {
            // Lowest CPU priority for this thread only (Linux nice is per thread): a training
            // cell started right away should not share the cores with it.
            #[cfg(target_os = "linux")]
            // SAFETY: setpriority on this thread's own id.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
            }
            let (source, offset) = analysis?;
            let mut analyzer = analyzer.lock().unwrap_or_else(PoisonError::into_inner);
            analyzer.set_source(source)?;
            analyzer.completions(offset)?;
            Ok(())
        })
        // As std::thread::spawn does: no thread for this means no threads at all.
        .expect("cannot start rust-analyzer's warm-up thread")
    }

    fn run_and_capture_output(
        &mut self,
        state: &mut ContextState,
        so_file: &SoFile,
        fn_name: &str,
        callbacks: &mut EvalCallbacks,
    ) -> Result<EvalOutputs, Error> {
        let mut output = EvalOutputs::new();
        // TODO: We should probably send an OsString not a String. Otherwise
        // things won't work if the path isn't UTF-8 - apparently that's a thing
        // on some platforms.
        // tch-kernel: the run's number, for the stderr mark (see `last_stderr_mark`).
        let mark = if self.stderr_marks_on {
            self.stderr_marks += 1;
            format!(" {}", self.stderr_marks)
        } else {
            String::new()
        };
        self.child_process.send(&format!(
            "LOAD_AND_RUN {} {}{mark}",
            so_file.path.to_string_lossy(),
            fn_name,
        ))?;

        state.build_num += 1;

        let mut got_panic = false;
        let mut lost_variables = Vec::new();
        let mut load_failed = None;
        // tch-kernel: the markers come from child-protocol, shared with the prelude's helpers.
        static MIME_OUTPUT: Lazy<Regex> = Lazy::new(|| {
            Regex::new(&format!("{} ([^ ]+)", child_protocol::BEGIN_CONTENT)).unwrap()
        });
        loop {
            let line = self.child_process.recv_line()?;
            if line == runtime::EVCXR_EXECUTION_COMPLETE {
                break;
            }
            if line == PANIC_NOTIFICATION {
                got_panic = true;
            } else if let Some(json) = line.strip_prefix(child_protocol::VARIABLES_MARKER) {
                self.note_described_variables(json);
            } else if let Some(message) = line.strip_prefix(runtime::LOAD_FAILED) {
                load_failed = Some(evcxr_internal_runtime::unescape_line(
                    message.strip_prefix(' ').unwrap_or(message),
                ));
            } else if line.starts_with(child_protocol::INPUT_REQUEST) {
                // tch-kernel: markers from child-protocol (replacing `evcxr_input`).
                let is_password = line.starts_with(child_protocol::INPUT_REQUEST_PASSWORD);
                let prompt = line.split(':').nth(1).unwrap_or_default().to_owned();
                self.child_process
                    .send(&(callbacks.input_reader)(InputRequest {
                        prompt,
                        is_password,
                    }))?;
            } else if let Some(message) =
                line.strip_prefix(evcxr_internal_runtime::USER_ERROR_OCCURRED)
            {
                // A question mark operator in user code triggered an early
                // return. Any newly defined variables won't have been stored.
                // tch-kernel: the error's text follows the marker (escaped), so the embedder
                // can fail the cell with it rather than print it to stderr.
                output.user_error = Some(evcxr_internal_runtime::unescape_line(
                    message.strip_prefix(' ').unwrap_or(message),
                ));
                state
                    .variable_states
                    .retain(|_variable_name, variable_state| {
                        variable_state.move_state != VariableMoveState::New
                    });
            } else if let Some(variable_name) =
                line.strip_prefix(evcxr_internal_runtime::VARIABLE_CHANGED_TYPE)
            {
                lost_variables.push(variable_name.to_owned());
            } else if let Some(captures) = MIME_OUTPUT.captures(&line) {
                let mime_type = captures[1].to_owned();
                let mut content = String::new();
                loop {
                    let line = self.child_process.recv_line()?;
                    // tch-kernel: marker from child-protocol.
                    if line == child_protocol::END_CONTENT {
                        break;
                    }
                    if line == PANIC_NOTIFICATION {
                        got_panic = true;
                        break;
                    }
                    if !content.is_empty() {
                        content.push('\n');
                    }
                    content.push_str(&line);
                }
                output.content_by_mime_type.insert(mime_type, content);
            } else {
                // Note, errors sending are ignored, since it just means the
                // user of the library has dropped the Receiver.
                let _ = self.stdout_sender.send(line);
            }
        }
        if let Some(message) = load_failed {
            return Err(Error::Message(load_failure_message(
                &message,
                &so_file.path,
            )));
        }
        if got_panic {
            state
                .variable_states
                .retain(|_variable_name, variable_state| {
                    variable_state.move_state != VariableMoveState::New
                });
        } else if !lost_variables.is_empty() {
            return Err(Error::TypeRedefinedVariablesLost(lost_variables));
        }

        // Block until stdout_sender is empty with exponential backoff
        let mut sleep_duration = Duration::from_millis(1);
        while !self.stdout_sender.is_empty() {
            std::thread::sleep(sleep_duration);
            sleep_duration = std::cmp::min(sleep_duration * 2, Duration::from_millis(100));
        }

        Ok(output)
    }

    fn attempt_to_fix_error(
        &mut self,
        error: &CompilationError,
        user_code: &mut CodeBlock,
        state: &mut ContextState,
        fixed_errors: &mut HashSet<&'static str>,
    ) -> Result<(), Error> {
        for code_origin in &error.code_origins {
            match code_origin {
                CodeKind::PackVariable { variable_name } => {
                    if error.code() == Some("E0382") {
                        // Use of moved value.
                        state.variable_states.remove(variable_name);
                        fixed_errors.insert("Captured value");
                    } else if error.code() == Some("E0425") {
                        // cannot find value in scope.
                        state.variable_states.remove(variable_name);
                        fixed_errors.insert("Variable moved");
                    } else if error.code() == Some("E0603") {
                        if let Some(variable_state) = state.variable_states.remove(variable_name) {
                            bail!(
                                "Failed to determine type of variable `{}`. rustc suggested type \
                             {}, but that's private. Sometimes adding an extern crate will help \
                             rustc suggest the correct public type name, or you can give an \
                             explicit type.",
                                variable_name,
                                variable_state.type_name
                            );
                        }
                    } else if error.code() == Some("E0562")
                        || (error.code().is_none() && error.code_origins.len() == 1)
                    {
                        return non_persistable_type_error(
                            variable_name,
                            &state.variable_states[variable_name].type_name,
                        );
                    }
                }
                CodeKind::WithFallback(fallback) => {
                    user_code.apply_fallback(fallback);
                    fixed_errors.insert("Fallback");
                }
                CodeKind::OriginalUserCode(_) | CodeKind::OtherUserCode => {
                    if error.code() == Some("E0728") && !state.async_mode {
                        state.async_mode = true;
                        if !state.external_deps.contains_key("tokio") {
                            state.add_dep(
                                "tokio",
                                "{version=\"1.34.0\", features=[\"rt\", \"rt-multi-thread\"]}",
                            )?;
                            // Rewrite Cargo.toml, since the dependency will probably have been
                            // validated in the process of being added, which will have overwritten
                            // Cargo.toml
                            self.write_cargo_toml(state)?;
                        }
                        fixed_errors.insert("Enabled async mode");
                    } else if error.code() == Some("E0277") && !state.allow_question_mark {
                        state.allow_question_mark = true;
                        fixed_errors.insert("Allow question mark");
                    } else if error.code() == Some("E0658")
                        && error
                            .message()
                            .contains("`let` expressions in this position are experimental")
                    {
                        // PR to add a semicolon is welcome. Ideally we'd not do so here though. It
                        // should really be done based on the parse tree of the code. We currently
                        // have two parsers, syn and rust-analyzer. We'd like to eventually get rid
                        // of syn and just user rust-analyzer, but the code that could potentially
                        // add a semicolon currently uses syn. So ideally we'd replace uses of syn
                        // with rust-analyzer before adding new parse-tree based rules. But PRs that
                        // just use syn to determine when to add a semicolon would also be OK.
                        bail!("Looks like you're missing a semicolon");
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn non_persistable_type_error(variable_name: &str, actual_type: &str) -> Result<(), Error> {
    bail!(
        // tch-kernel: in plain words, without the engine's name.
        "The variable `{}` has type `{}`, which cannot be kept for later cells.\n\
             A boxed trait object can: let v: Box<dyn std::fmt::Debug> = Box::new(foo());\n\
             Or use it only in this cell, inside braces: {{ let v = foo(); ... }}",
        variable_name,
        actual_type
    );
}

fn fix_path() {
    // If cargo isn't on our path, see if it exists in the same directory as
    // our executable and if it does, add that directory to our PATH.
    if which::which("cargo").is_err()
        && let Ok(current_exe) = std::env::current_exe()
        && let Some(bin_dir) = current_exe.parent()
        && bin_dir.join("cargo").exists()
        && let Some(mut path) = std::env::var_os("PATH")
    {
        // tch-kernel: `:` only (no Windows).
        path.push(":");
        path.push(bin_dir);
        // Safety: We probably aren't doing stuff on other threads while we do this.
        // Is that good enough? Probably not really. TODO: Investigate alternatives.
        // Perhaps we can set PATH on our build commands instead.
        unsafe { std::env::set_var("PATH", path) };
    }
}

/// Returns whether a type is fully specified. i.e. it doesn't contain any '_'.
fn type_is_fully_specified(ty: &ast::Type) -> bool {
    !AstNode::syntax(ty)
        .descendants()
        .any(|n| n.kind() == SyntaxKind::INFER_TYPE)
}

/// tch-kernel: what the error for a variable that holds a borrow says after its name.
pub const BORROWED_VARIABLE: &str = "borrows another value, so it cannot be kept for later cells";

/// tch-kernel: the name of the phase that runs a compiled cell (every other phase compiles).
pub const EXECUTION_PHASE: &str = "Execution";
/// tch-kernel: the phase of a cell whose earlier build ran again without rustc.
pub const REUSED_BUILD_PHASE: &str = "Reused build";

#[derive(Debug)]
pub struct PhaseDetails {
    pub name: String,
    pub duration: Duration,
}

struct PhaseDetailsBuilder {
    start: Instant,
    phases: Vec<PhaseDetails>,
}

impl PhaseDetailsBuilder {
    fn new() -> PhaseDetailsBuilder {
        PhaseDetailsBuilder {
            start: Instant::now(),
            phases: Vec::new(),
        }
    }

    fn phase_complete(&mut self, name: &str) {
        let new_start = Instant::now();
        self.phases.push(PhaseDetails {
            name: name.to_owned(),
            duration: new_start.duration_since(self.start),
        });
        self.start = new_start;
    }
}

#[derive(Default, Debug)]
pub struct EvalOutputs {
    pub content_by_mime_type: HashMap<String, String>,
    pub timing: Option<Duration>,
    pub phases: Vec<PhaseDetails>,
    /// tch-kernel: the error a `?` in the cell returned early with (formatted as `:efmt`
    /// says). The cell stopped there; variables it defined are not kept.
    pub user_error: Option<String>,
}

impl EvalOutputs {
    pub fn new() -> EvalOutputs {
        EvalOutputs {
            content_by_mime_type: HashMap::new(),
            timing: None,
            phases: Vec::new(),
            user_error: None,
        }
    }

    pub fn text_html(text: String, html: String) -> EvalOutputs {
        let mut out = EvalOutputs::new();
        out.content_by_mime_type
            .insert("text/plain".to_owned(), text);
        out.content_by_mime_type
            .insert("text/html".to_owned(), html);
        out
    }

    pub fn is_empty(&self) -> bool {
        self.content_by_mime_type.is_empty()
    }

    pub fn get(&self, mime_type: &str) -> Option<&str> {
        self.content_by_mime_type.get(mime_type).map(String::as_str)
    }

    pub fn merge(&mut self, mut other: EvalOutputs) {
        for (mime_type, content) in other.content_by_mime_type {
            self.content_by_mime_type
                .entry(mime_type)
                .or_default()
                .push_str(&content);
        }
        self.timing = match (self.timing.take(), other.timing) {
            (Some(t1), Some(t2)) => Some(t1 + t2),
            (t1, t2) => t1.or(t2),
        };
        self.phases.append(&mut other.phases);
        self.user_error = self.user_error.take().or(other.user_error);
    }
}

#[derive(Clone, Debug)]
struct VariableState {
    type_name: String,
    is_mut: bool,
    move_state: VariableMoveState,
    definition_span: Option<UserCodeSpan>,
}

#[derive(Clone, Debug)]
struct UserCodeSpan {
    segment_index: usize,
    range: TextRange,
}

#[derive(PartialEq, Eq, Debug, Copy, Clone)]
enum VariableMoveState {
    New,
    Available,
}

struct ExecutionArtifacts {
    output: EvalOutputs,
}

#[derive(Eq, PartialEq, Copy, Clone)]
enum CompilationMode {
    /// User code should be wrapped in catch_unwind and executed.
    RunAndCatchPanics,
    /// User code should be executed without a catch_unwind.
    NoCatch,
    /// Recompile without catch_unwind to try to get better error messages. If compilation succeeds
    /// (hopefully can't happen), don't run the code - caller should return the original message.
    NoCatchExpectError,
}

/// State that is cloned then modified every time we try to compile some code. If compilation
/// succeeds, we keep the modified state, if it fails, we revert to the old state.
#[derive(Clone, Debug)]
pub struct ContextState {
    items_by_name: BTreeMap<String, CodeBlock>,
    unnamed_items: Vec<CodeBlock>,
    pub(crate) external_deps: BTreeMap<String, ExternalCrate>,
    // Keyed by crate name. Could use a set, except that the statement might be
    // formatted slightly differently.
    extern_crate_stmts: BTreeMap<String, String>,
    /// States of variables. Includes variables that have just been defined by
    /// the code about to be executed.
    variable_states: BTreeMap<String, VariableState>,
    /// State of variables that have been stored. i.e. after the last bit of
    /// code was executed. Doesn't include newly defined variables until after
    /// execution completes.
    stored_variable_states: BTreeMap<String, VariableState>,
    attributes: BTreeMap<String, CodeBlock>,
    async_mode: bool,
    allow_question_mark: bool,
    /// tch-kernel: every identifier-like word of the cell being built (string literals
    /// included, for `{x}` in format strings). Stored variables it does not mention are left in
    /// the store: loading, checking and storing every variable in every cell made each cell
    /// compile code for all their types. `None`: all variables.
    referenced_words: Option<std::collections::HashSet<String>>,
    /// tch-kernel: build the cell with every item (see `items_code_for`): the cell defines or
    /// redefines items, or a build with only the items it uses failed.
    all_items: bool,
    /// tch-kernel: see `TriggerCache`.
    item_triggers: TriggerCache,
    /// tch-kernel: `:dep`s not resolved yet, as written (see `check_new_deps`).
    unchecked_deps: Vec<String>,
    /// tch-kernel: the dependencies as cargo last resolved them (see `check_new_deps`).
    resolution: Option<std::sync::Arc<dep_resolution::Resolution>>,
    /// tch-kernel: the packages later `:dep`s may not change (see `freeze_dependencies`).
    frozen_deps: Option<std::sync::Arc<dep_resolution::Frozen>>,
    build_num: i32,
    pub(crate) config: Config,
}

/// tch-kernel: the file of a cell's `mod name;`: `name.rs`, else `name/mod.rs`, in the
/// notebook's folder (this process's working directory, which Jupyter sets to it).
fn module_file(name: &str) -> Result<PathBuf, Error> {
    let dir = std::env::current_dir()?;
    let candidates = [
        dir.join(format!("{name}.rs")),
        dir.join(name).join("mod.rs"),
    ];
    match candidates.iter().find(|file| file.is_file()) {
        Some(file) => Ok(file.clone()),
        None => bail!(
            "`mod {name};` needs the file {name}.rs (or {name}/mod.rs) beside the notebook, in {}",
            dir.display()
        ),
    }
}

/// tch-kernel: the loader's message for a cell's shared object that could not be loaded, in the
/// user's terms: the library that failed and why (`dlerror`), without the engine's file names,
/// and with Rust symbols demangled.
fn load_failure_message(message: &str, cell_library: &Path) -> String {
    let message = message.replace(&*cell_library.to_string_lossy(), "the cell's code");
    let words: Vec<String> = message
        .split(' ')
        .map(|word| {
            if word.starts_with("_ZN") || word.starts_with("_R") {
                rustc_demangle::demangle(word).to_string()
            } else {
                word.to_owned()
            }
        })
        .collect();
    format!(
        "the cell was compiled but could not be loaded: {}. Nothing of it ran; the variables are as they were.",
        words.join(" ")
    )
}

/// tch-kernel: why a `:dep` that would change the loaded dependencies is refused, in the user's
/// terms (see `dep_resolution`). Version changes come first: the feature changes they bring along
/// go away with them.
fn frozen_change_message(deps: &str, changes: &[dep_resolution::FrozenChange]) -> String {
    use dep_resolution::FrozenChange;
    // A crate replaced by another version, not the crates that only went with it.
    let replaced =
        |c: &&FrozenChange| matches!(c, FrozenChange::Version { wanted, .. } if !wanted.is_empty());
    let dropped = |c: &&FrozenChange| matches!(c, FrozenChange::Version { .. });
    let mut versions: Vec<String> = changes
        .iter()
        .filter(replaced)
        .map(ToString::to_string)
        .collect();
    if versions.is_empty() {
        versions = changes
            .iter()
            .filter(dropped)
            .map(ToString::to_string)
            .collect();
    }
    let (what, remedy) = if versions.is_empty() {
        let features: Vec<String> = changes.iter().map(ToString::to_string).collect();
        (
            features.join("; "),
            "to have them, add them to the prelude's dependencies (crates/tch-prelude/Cargo.toml) and run install.sh again",
        )
    } else {
        (
            versions.join("; "),
            "ask for a version that works with the kernel's (for a crate the kernel has, its version or `\"*\"`)",
        )
    };
    let s = if deps.contains("`, `") { "" } else { "s" };
    format!(
        "{deps} need{s} {what}, but the kernel's prelude, which the evaluation process has loaded, is built with the crates as they are, and cells cannot use a rebuilt copy beside it. Nothing was added and no variable is lost: {remedy}."
    )
}

impl ContextState {
    fn new(config: Config) -> ContextState {
        ContextState {
            items_by_name: BTreeMap::new(),
            unnamed_items: vec![],
            external_deps: BTreeMap::new(),
            extern_crate_stmts: BTreeMap::new(),
            variable_states: BTreeMap::new(),
            stored_variable_states: BTreeMap::new(),
            attributes: BTreeMap::new(),
            async_mode: false,
            allow_question_mark: false,
            build_num: 0,
            referenced_words: None,
            all_items: true,
            item_triggers: TriggerCache::default(),
            unchecked_deps: Vec::new(),
            resolution: None,
            frozen_deps: None,
            config,
        }
    }

    /// tch-kernel: whether the cell being built may use the stored variable `name`.
    fn is_referenced(&self, name: &str) -> bool {
        self.referenced_words
            .as_ref()
            .is_none_or(|words| words.contains(name))
    }

    pub fn time_passes(&self) -> bool {
        self.config.time_passes
    }

    pub fn set_time_passes(&mut self, value: bool) {
        self.config.time_passes = value;
    }

    pub fn set_offline_mode(&mut self, value: bool) {
        self.config.offline_mode = value;
    }

    /// tch-kernel: see `Config::crate_patches`.
    pub fn set_crate_patches(&mut self, patches: Vec<(String, PathBuf)>) {
        self.config.crate_patches = patches;
    }

    pub(crate) fn format_crate_patches(&self) -> String {
        child_protocol::env::crates_io_patch(&self.config.crate_patches)
    }

    /// tch-kernel: see `Config::optimized_crates`.
    pub fn set_optimized_crates(&mut self, crates: Vec<String>) {
        self.config.optimized_crates = crates;
    }

    pub(crate) fn format_optimized_profiles(&self) -> String {
        child_protocol::env::optimized_profiles(&self.config.optimized_crates)
    }

    pub fn set_allow_static_linking(&mut self, value: bool) {
        self.config.allow_static_linking = value;
    }

    // tch-kernel: no `set_sccache` (`:sccache` is gone).

    pub fn set_cache_bytes(&mut self, bytes: u64) {
        self.config.set_cache_bytes(bytes)
    }

    pub fn cache_bytes(&mut self) -> u64 {
        self.config.cache_bytes()
    }

    // tch-kernel: no `sccache` (`:sccache` is gone).

    pub fn set_error_format(&mut self, format_str: &str) -> Result<(), Error> {
        for format in ERROR_FORMATS {
            if format.format_str == format_str {
                self.config.error_fmt = format;
                return Ok(());
            }
        }
        bail!(
            "Unsupported error format string. Available options: {}",
            ERROR_FORMATS
                .iter()
                .map(|f| f.format_str)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    pub fn error_format(&self) -> &str {
        self.config.error_fmt.format_str
    }

    pub fn error_format_trait(&self) -> &str {
        self.config.error_fmt.format_trait
    }

    pub fn set_linker(&mut self, linker: String) {
        self.config.linker = linker;
    }

    pub fn linker(&self) -> &str {
        &self.config.linker
    }

    pub fn set_codegen_backend(&mut self, value: String) {
        self.config.codegen_backend = if value == "default" {
            None
        } else {
            Some(value)
        };
    }

    pub fn codegen_backend(&mut self) -> &str {
        self.config.codegen_backend.as_deref().unwrap_or("default")
    }

    pub fn preserve_vars_on_panic(&self) -> bool {
        self.config.preserve_vars_on_panic
    }

    pub fn offline_mode(&self) -> bool {
        self.config.offline_mode
    }

    pub fn set_preserve_vars_on_panic(&mut self, value: bool) {
        self.config.preserve_vars_on_panic = value;
    }

    pub fn debug_mode(&self) -> bool {
        self.config.debug_mode
    }

    pub fn set_debug_mode(&mut self, debug_mode: bool) {
        self.config.debug_mode = debug_mode;
    }

    pub fn opt_level(&self) -> &str {
        &self.config.opt_level
    }

    pub fn set_opt_level(&mut self, level: &str) -> Result<(), Error> {
        if level.is_empty() {
            bail!("Optimization level cannot be an empty string");
        }
        level.clone_into(&mut self.config.opt_level);
        Ok(())
    }
    pub fn output_format(&self) -> &str {
        &self.config.output_format
    }

    pub fn set_output_format(&mut self, output_format: String) {
        self.config.output_format = output_format;
    }

    pub fn display_types(&self) -> bool {
        self.config.display_types
    }

    pub fn set_display_types(&mut self, display_types: bool) {
        self.config.display_types = display_types;
    }

    pub fn set_toolchain(&mut self, value: &str) -> Result<()> {
        if let Some(rustc_path) = rustup_tool_path(Some(value), "rustc") {
            self.config.core_extern = core_extern(&rustc_path)?;
            self.config.rustc_path = rustc_path;
        }
        if let Some(cargo_path) = rustup_tool_path(Some(value), "cargo") {
            self.config.cargo_path = cargo_path;
        }
        value.clone_into(&mut self.config.toolchain);
        Ok(())
    }

    pub fn set_build_env(&mut self, key: &str, value: &str) {
        self.config
            .build_envs
            .insert(key.to_owned(), value.to_owned());
    }

    pub fn toolchain(&mut self) -> &str {
        &self.config.toolchain
    }

    /// Adds a crate dependency with the specified name and configuration.
    ///
    /// tch-kernel: checked when the cell's code is evaluated ([`Self::check_new_deps`]), once for
    /// all the `:dep`s of a cell.
    pub fn add_dep(&mut self, dep: &str, dep_config: &str) -> Result<(), Error> {
        // Avoid repeating dep validation once we're already added it.
        if let Some(existing) = self.external_deps.get(dep)
            && existing.config == dep_config
        {
            return Ok(());
        }
        let external = ExternalCrate::new(dep.to_owned(), dep_config.to_owned())?;
        self.unchecked_deps
            .push(format!("{} = {}", external.name, external.config));
        self.external_deps.insert(dep.to_owned(), external);
        Ok(())
    }

    /// tch-kernel: resolves the dependencies with those added since the last check, with every
    /// other dependency and the build's lock file, in a scratch dir (see `dep_resolution`). The
    /// build dir's lock file changes only once the resolution is known to leave the crates the
    /// process loaded ([`Self::freeze_dependencies`]) as they are. On an error, the caller drops
    /// this state, and the dependencies with it.
    pub(crate) fn check_new_deps(&mut self) -> Result<(), Error> {
        if self.unchecked_deps.is_empty() {
            return Ok(());
        }
        let shown = self
            .unchecked_deps
            .iter()
            .map(|dep| format!("`:dep {dep}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let manifest = crate::module::cargo_toml_contents(self);
        let resolution = dep_resolution::resolve(&manifest, &self.config).map_err(|mut e| {
            // cargo names the kernel's crate without its version; the frozen set has it.
            if let dep_resolution::ResolveError::NativeLibraryTwice { kernel_has, .. } = &mut e
                && let Some(named) = self
                    .frozen_deps
                    .as_ref()
                    .and_then(|f| f.name_version(kernel_has))
            {
                *kernel_has = named;
            }
            Error::Message(format!("{shown}: {e}"))
        })?;
        if let Some(frozen) = &self.frozen_deps {
            let changes = frozen.changes_in(&resolution);
            if !changes.is_empty() {
                bail!(frozen_change_message(&shown, &changes));
            }
        }
        if let Some(lock) = resolution.lock() {
            std::fs::write(self.config.crate_dir().join("Cargo.lock"), lock)?;
        }
        self.resolution = Some(std::sync::Arc::new(resolution));
        self.unchecked_deps.clear();
        Ok(())
    }

    /// tch-kernel: the dependencies resolved so far are loaded into the evaluation process (a
    /// dylib dependency such as tch-kernel's prelude): later `:dep`s may not change their
    /// versions or features, since cells built against a rebuilt copy could not load beside it.
    pub(crate) fn freeze_dependencies(&mut self) -> Result<(), Error> {
        if self.external_deps.is_empty() {
            return Ok(());
        }
        let resolution = match &self.resolution {
            Some(resolution) => resolution.clone(),
            None => std::sync::Arc::new(
                dep_resolution::resolve(&crate::module::cargo_toml_contents(self), &self.config)
                    .map_err(|e| Error::Message(e.to_string()))?,
            ),
        };
        self.frozen_deps = Some(std::sync::Arc::new(
            resolution.freeze(crate::module::CRATE_NAME),
        ));
        self.resolution = Some(resolution);
        Ok(())
    }

    /// Adds a crate dependency at the specified local path
    pub fn add_local_dep(&mut self, dep: &str) -> Result<(), Error> {
        let name = cargo_metadata::parse_crate_name(dep)?;
        self.add_dep(&name, &format!("{{ path = \"{dep}\" }}"))
    }

    /// Clears fields that aren't useful for inclusion in bug reports and which might give away
    /// things like usernames.
    pub(crate) fn clear_non_debug_relevant_fields(&mut self) {
        self.config.tmpdir = PathBuf::from("redacted");
        // tch-kernel: no sccache path to redact (`:sccache` is gone).
    }

    fn apply_custom_errors(
        &self,
        errors: Vec<CompilationError>,
        user_code: &CodeBlock,
        code_info: &UserCodeInfo,
    ) -> Vec<CompilationError> {
        errors
            .into_iter()
            .filter_map(|error| self.customize_error(error, user_code))
            .map(|mut error| {
                error.fill_lines(code_info);
                error
            })
            .collect()
    }

    /// Customizes errors based on their origins.
    fn customize_error(
        &self,
        error: CompilationError,
        user_code: &CodeBlock,
    ) -> Option<CompilationError> {
        for origin in &error.code_origins {
            if let CodeKind::PackVariable { variable_name } = origin
                && let Some(variable_state) = self.variable_states.get(variable_name)
                && let Some(definition_span) = &variable_state.definition_span
                && let Some(segment) = user_code.segment_with_index(definition_span.segment_index)
                && let Some(span) = Span::from_segment(segment, definition_span.range)
            {
                return self.replacement_for_pack_variable_error(
                    variable_name,
                    span,
                    segment,
                    &error,
                );
            }
        }
        Some(error)
    }

    fn replacement_for_pack_variable_error(
        &self,
        variable_name: &str,
        variable_span: Span,
        segment: &Segment,
        error: &CompilationError,
    ) -> Option<CompilationError> {
        let message = match error.code().unwrap_or("") {
            "E0382" | "E0505" => {
                // Value used after move. When we go to execute the code, we'll detect this error and
                // remove the variable so it doesn't get stored.
                return None;
            }
            "E0597" => {
                // tch-kernel: in plain words (the embedder adds a hint that matches on it).
                format!("`{variable_name}` {BORROWED_VARIABLE}.")
            }
            _ => {
                return Some(error.clone());
            }
        };
        Some(CompilationError::from_segment_span(
            segment,
            SpannedMessage::from_segment_span(segment, variable_span),
            message,
        ))
    }

    /// Returns whether transitioning to `new_state` might cause compilation
    /// failures. e.g. if `new_state` has extra dependencies, then we must
    /// return true. If we return false, we're saying that the proposed state
    /// change cannot cause compilation failures, so compilation can be skipped
    /// if there is otherwise no code to execute.
    fn state_change_can_fail_compilation(&self, new_state: &ContextState) -> bool {
        (self.extern_crate_stmts != new_state.extern_crate_stmts
            && !new_state.extern_crate_stmts.is_empty())
            || (self.external_deps != new_state.external_deps
                && !new_state.external_deps.is_empty())
            || (self.items_by_name != new_state.items_by_name
                && !new_state.items_by_name.is_empty())
        // tch-kernel: no sccache toggle to check (`:sccache` is gone).
    }

    pub(crate) fn format_cargo_deps(&self) -> String {
        self.external_deps
            .values()
            .map(|krate| format!("{} = {}\n", krate.name, krate.config))
            .collect::<Vec<_>>()
            .join("")
    }

    fn compilation_mode(&self) -> CompilationMode {
        if self.config.preserve_vars_on_panic {
            CompilationMode::RunAndCatchPanics
        } else {
            CompilationMode::NoCatch
        }
    }

    /// Returns code suitable for analysis purposes. Doesn't attempt to preserve runtime behaviour.
    fn analysis_code(&self, user_code: CodeBlock) -> CodeBlock {
        let mut code = CodeBlock::new()
            .generated("#![allow(unused_imports, unused_mut, dead_code)]")
            .add_all(self.attributes_code())
            .add_all(self.items_code())
            .add_all(self.error_trait_code(true))
            .generated("fn evcxr_variable_store<T: 'static>(_: T) {}")
            .generated("#[allow(unused_variables)]")
            .generated("async fn evcxr_analysis_wrapper(");
        for (var_name, state) in &self.stored_variable_states {
            code = code.generated(format!(
                "{}{}: {},",
                if state.is_mut { "mut " } else { "" },
                var_name,
                state.type_name
            ));
        }
        code = code
            .generated(") -> Result<(), EvcxrUserCodeError> {")
            .add_all(user_code);

        // Pack variable statements in analysis mode are a lot simpler than in compiled mode. We
        // just call a function that enforces that the variable doesn't contain any non-static
        // lifetimes.
        for var_name in self.variable_states.keys() {
            code.pack_variable(
                var_name.clone(),
                format!("evcxr_variable_store({var_name});"),
            );
        }

        code = code.generated("Ok(())").generated("}");
        code
    }

    fn code_to_compile(
        &self,
        user_code: CodeBlock,
        compilation_mode: CompilationMode,
    ) -> CodeBlock {
        let mut cell = CodeBlock::new();
        // tch-kernel: the probe's helper items, only when a variable needs its type named.
        if self.variables_to_probe().next().is_some() {
            cell = cell.generated(crate::type_probe::PROBE_ITEMS);
        }
        let has_user_code = !user_code.is_empty();
        if has_user_code {
            cell = cell.add_all(self.wrap_user_code(user_code, compilation_mode));
        } else {
            // TODO: Add a mechanism to load a crate without any function to call then remove this.
            cell = cell
                .generated("#[unsafe(no_mangle)]")
                .generated(format!(
                    "pub extern \"C\" fn {}(",
                    self.current_user_fn_name()
                ))
                .generated("mut x: *mut std::os::raw::c_void) -> *mut std::os::raw::c_void {x}");
        }
        // tch-kernel: items after the cell's own code is known (`items_code_for` reads it).
        let items = self.items_code_for(&cell);
        CodeBlock::new()
            .generated("#![allow(unused_imports, unused_mut, dead_code)]")
            .add_all(self.attributes_code())
            .add_all(items)
            .add_all(cell)
    }

    /// tch-kernel: the items for a build of `cell`. rustc parses, resolves, checks and lints
    /// every item of a crate in every build, and items are part of every cell's crate: after
    /// 300 fns and structs a trivial cell took 1.3-1.6x as long. So a cell that defines no
    /// items gets the named items it uses ([`needed_items`]); imports and unnamed items always
    /// go in. A build that fails is redone with every item (see `run_statements`).
    fn items_code_for(&self, cell: &CodeBlock) -> CodeBlock {
        if self.all_items || self.referenced_words.is_none() {
            return self.items_code();
        }
        let imports = self.get_imports();
        let mut seed = cell.code_string();
        seed.push_str(&imports.code_string());
        for block in self.unnamed_items.iter().chain(self.attributes.values()) {
            seed.push_str(&block.code_string());
        }
        let needed = needed_items(&self.items_by_name, &seed, &self.item_triggers);
        let mut code = CodeBlock::new().add_all(imports);
        for (name, item) in &self.items_by_name {
            if needed.contains(name.as_str()) {
                code = code.add_all(item.clone());
            }
        }
        for item in &self.unnamed_items {
            code = code.add_all(item.clone());
        }
        code
    }

    fn items_code(&self) -> CodeBlock {
        let mut code = CodeBlock::new().add_all(self.get_imports());
        for item in self.items_by_name.values().chain(self.unnamed_items.iter()) {
            code = code.add_all(item.clone());
        }
        code
    }

    fn attributes_code(&self) -> CodeBlock {
        let mut code = CodeBlock::new();
        for attrib in self.attributes.values() {
            code = code.add_all(attrib.clone());
        }
        code
    }

    fn error_trait_code(&self, for_analysis: bool) -> CodeBlock {
        CodeBlock::new().generated(format!(
            r#"
            struct EvcxrUserCodeError {{}}
            impl<T: {}> From<T> for EvcxrUserCodeError {{
                fn from(error: T) -> Self {{
                    {}
                    EvcxrUserCodeError {{}}
                }}
            }}
        "#,
            self.config.error_fmt.format_trait,
            // tch-kernel: the error goes to the parent with the marker (on stdout, in order
            // with the cell's output), not to stderr.
            if for_analysis {
                "let _ = error;".to_owned()
            } else {
                format!(
                    "println!(\"{{}} {{}}\", evcxr_internal_runtime::USER_ERROR_OCCURRED, evcxr_internal_runtime::escape_line(&format!(\"{}\", error)));",
                    self.config.error_fmt.format_str
                )
            }
        ))
    }

    fn wrap_user_code(
        &self,
        mut user_code: CodeBlock,
        compilation_mode: CompilationMode,
    ) -> CodeBlock {
        // tch-kernel: only variables the cell mentions count (see `referenced_words`).
        let needs_variable_store = self.variable_states.keys().any(|v| self.is_referenced(v))
            || self
                .stored_variable_states
                .keys()
                .any(|v| self.is_referenced(v))
            || self.async_mode
            || self.allow_question_mark;
        let mut code = CodeBlock::new();
        if self.allow_question_mark {
            code = code.add_all(self.error_trait_code(false));
        }
        if needs_variable_store {
            code = code
                .generated("mod evcxr_internal_runtime {")
                .generated(include_str!("evcxr_internal_runtime.rs"))
                .generated("}");
        }
        code = code.generated("#[unsafe(no_mangle)]").generated(format!(
            "pub extern \"C\" fn {}(",
            self.current_user_fn_name()
        ));
        if needs_variable_store {
            code = code
                .generated("mut evcxr_variable_store: *mut evcxr_internal_runtime::VariableStore)")
                .generated("  -> *mut evcxr_internal_runtime::VariableStore {")
                .generated("if evcxr_variable_store.is_null() {")
                .generated(
                    "  evcxr_variable_store = evcxr_internal_runtime::create_variable_store();",
                )
                .generated("}")
                .generated("let evcxr_variable_store = unsafe {&mut *evcxr_variable_store};")
                .add_all(self.check_variable_statements())
                .add_all(self.load_variable_statements());
            // tch-kernel: the type probe statements go before the stores (they borrow).
            user_code = user_code
                .add_all(self.type_probe_statements())
                .add_all(self.store_variable_statements(VariableMoveState::New));
        } else {
            code = code.generated("evcxr_variable_store: *mut u8) -> *mut u8 {");
        }
        if self.async_mode {
            user_code = CodeBlock::new()
                .generated(stringify!(
                let mut mutex = evcxr_variable_store.lazy_arc("evcxr_tokio_runtime",
                    || std::sync::Mutex::new(tokio::runtime::Runtime::new().unwrap())
                );
                // If a previous cell execution did panic, then the mutex may be poisoned.
                match mutex.lock() {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                }
                ))
                .generated(".block_on(async {")
                .add_all(user_code);
            if self.allow_question_mark {
                user_code = CodeBlock::new()
                    .add_all(user_code)
                    .generated("Ok::<(), EvcxrUserCodeError>(())");
            }
            user_code = user_code.generated("});")
        } else if self.allow_question_mark {
            user_code = CodeBlock::new()
                .generated("let _ = (|| -> std::result::Result<(), EvcxrUserCodeError> {")
                .add_all(user_code)
                .generated("Ok(())})();");
        }
        if compilation_mode == CompilationMode::RunAndCatchPanics {
            if needs_variable_store {
                code = code
                    .generated("match std::panic::catch_unwind(")
                    .generated("  std::panic::AssertUnwindSafe(||{")
                    .add_all(user_code)
                    // Return our local variable store from the closure to be merged back into the
                    // main variable store.
                    .generated("})) { ")
                    .generated("  Ok(_) => {}")
                    .generated("  Err(_) => {")
                    .generated(format!("    println!(\"{PANIC_NOTIFICATION}\");"))
                    .generated("}}");
            } else {
                code = code
                    .generated("if std::panic::catch_unwind(||{")
                    .add_all(user_code)
                    .generated("}).is_err() {")
                    .generated(format!("    println!(\"{PANIC_NOTIFICATION}\");"))
                    .generated("}");
            }
        } else {
            code = code.add_all(user_code);
        }
        if needs_variable_store {
            code = code.add_all(self.store_variable_statements(VariableMoveState::Available));
        }
        code = code.generated("evcxr_variable_store");
        code.generated("}")
    }

    fn store_variable_statements(&self, move_state: VariableMoveState) -> CodeBlock {
        let mut statements = CodeBlock::new();
        for (var_name, var_state) in &self.variable_states {
            // tch-kernel: unmentioned variables stay in the store (see `referenced_words`).
            if var_state.move_state == move_state && self.is_referenced(var_name) {
                // tch-kernel: an empty type name means "as rustc infers it" (see
                // `record_binding_types`).
                let turbofish = if var_state.type_name.is_empty() {
                    String::new()
                } else {
                    format!("::<{}>", var_state.type_name)
                };
                // Note, we use stringify instead of quoting ourselves since it results in
                // better errors if the user forgets to close a double-quote in their code.
                let saver = self.config.snapshot_saver_macro.as_ref();
                let describer = self.config.variable_describer_macro.as_ref();
                let statement = if saver.is_none() && describer.is_none() {
                    format!(
                        "evcxr_variable_store.put_variable{turbofish}(stringify!({var_name}), {var_name});",
                    )
                } else {
                    // tch-kernel: with the snapshot saver and the describer for its type.
                    let pick = |path: Option<&String>| match path {
                        Some(path) => format!("Some({path}!(&{var_name}))"),
                        None => "None".to_owned(),
                    };
                    format!(
                        "evcxr_variable_store.put_saved_variable{turbofish}(stringify!({var_name}), {}, {}, {var_name});",
                        pick(saver),
                        pick(describer),
                    )
                };
                statements.pack_variable(var_name.clone(), statement);
            }
        }
        statements
    }

    /// tch-kernel: one `evcxr_type_of(&x)` statement per variable to probe, each in its own
    /// segment so that its warning maps back to the variable.
    fn type_probe_statements(&self) -> CodeBlock {
        let mut statements = CodeBlock::new();
        for var_name in self.variables_to_probe() {
            statements.pack_variable(
                var_name.clone(),
                crate::type_probe::probe_statement(var_name),
            );
        }
        statements
    }

    /// tch-kernel: the variables this cell defines without a type annotation.
    fn variables_to_probe(&self) -> impl Iterator<Item = &String> {
        self.variable_states
            .iter()
            .filter(|(_, s)| s.move_state == VariableMoveState::New && s.type_name.is_empty())
            .map(|(name, _)| name)
    }

    fn check_variable_statements(&self) -> CodeBlock {
        let mut statements = CodeBlock::new().generated("{let mut vars_ok = true;");
        for (var_name, var_state) in &self.stored_variable_states {
            // tch-kernel: unmentioned variables stay in the store (see `referenced_words`).
            if !self.is_referenced(var_name) {
                continue;
            }
            statements = statements.generated(format!(
                "vars_ok &= evcxr_variable_store.check_variable::<{}>(stringify!({var_name}));",
                var_state.type_name
            ));
        }
        statements.generated("if !vars_ok {return evcxr_variable_store;}}")
    }

    // Returns code to load values from the variable store back into their variables.
    fn load_variable_statements(&self) -> CodeBlock {
        let mut statements = CodeBlock::new();
        for (var_name, var_state) in &self.stored_variable_states {
            // tch-kernel: unmentioned variables stay in the store (see `referenced_words`).
            if !self.is_referenced(var_name) {
                continue;
            }
            let mutability = if var_state.is_mut { "mut " } else { "" };
            statements.load_variable(format!(
                "let {}{} = evcxr_variable_store.take_variable::<{}>(stringify!({}));",
                mutability, var_name, var_state.type_name, var_name
            ));
        }
        statements
    }

    fn current_user_fn_name(&self) -> String {
        format!("{CELL_FN_PREFIX}{}", self.build_num)
    }

    fn get_imports(&self) -> CodeBlock {
        let mut extern_stmts = CodeBlock::new();
        for stmt in self.extern_crate_stmts.values() {
            extern_stmts = extern_stmts.other_user_code(stmt.clone());
        }
        extern_stmts
    }

    /// Converts OriginalUserCode to OtherUserCode. OriginalUserCode can only be
    /// used for the current code that's being evaluated, otherwise things like
    /// tab completion will be confused, since there will be multiple bits of
    /// code at a particular offset.
    fn commit_old_user_code(&mut self) {
        for block in self.items_by_name.values_mut() {
            block.commit_old_user_code();
        }
        for block in self.unnamed_items.iter_mut() {
            block.commit_old_user_code();
        }
        for block in self.attributes.values_mut() {
            block.commit_old_user_code();
        }
    }

    /// Applies `user_code` to this state object, returning the updated user
    /// code. Things like use-statements will be removed from the returned code,
    /// as they will have been stored in `self`.
    fn apply(&mut self, user_code: CodeBlock, nodes: &[SyntaxNode]) -> Result<CodeBlock, Error> {
        for variable_state in self.variable_states.values_mut() {
            variable_state.move_state = VariableMoveState::Available;
        }

        let mut code_out = CodeBlock::new();
        let mut previous_item_name = None;
        let num_statements = user_code.segments.len();
        for (statement_index, segment) in user_code.segments.into_iter().enumerate() {
            let node = if let CodeKind::OriginalUserCode(meta) = &segment.kind {
                &nodes[meta.node_index]
            } else {
                code_out = code_out.with_segment(segment);
                continue;
            };
            if let Some(let_stmt) = ast::LetStmt::cast(node.clone()) {
                if let Some(pat) = let_stmt.pat() {
                    self.record_new_locals(pat, let_stmt.ty(), &segment, node.text_range());
                    code_out = code_out.with_segment(segment);
                }
            } else if ast::Attr::can_cast(node.kind()) {
                self.attributes.insert(
                    node.text().to_string(),
                    CodeBlock::new().with_segment(segment),
                );
            } else if ast::Expr::can_cast(node.kind()) {
                if statement_index == num_statements - 1 {
                    if self.config.display_final_expression {
                        code_out = code_out.code_with_fallback(
                            // First we try calling .evcxr_display().
                            // tch-kernel: on a reference, so that an `evcxr_display` for `T`
                            // (rich display) wins over one for `&T` (the Debug fallback that
                            // tch-kernel gives every type), by method-resolution order.
                            CodeBlock::new()
                                .generated("(&(")
                                .with_segment(segment.clone())
                                .generated(")).evcxr_display();")
                                .code_string(),
                            // If that fails, we try debug format.
                            if self.config.display_types {
                                CodeBlock::new()
                                .generated(send_text_plain_def())
                                .generated(GET_TYPE_NAME_DEF)
                                .generated("{ let r = &(")
                                .with_segment(segment)
                                .generated(format!(
                                    "); evcxr_send_text_plain(&format!(\": {{}} = {}\", evcxr_get_type_name(r), r)); }};",
                                    self.config.output_format
                                ))
                            } else {
                                CodeBlock::new()
                                .generated(send_text_plain_def())
                                .generated(format!(
                                    "evcxr_send_text_plain(&format!(\"{}\",&(\n",
                                    self.config.output_format
                                ))
                                .with_segment(segment)
                                .generated(")));")
                                },
                            );
                    } else {
                        code_out = code_out
                            .generated("let _ = ")
                            .with_segment(segment)
                            .generated(";");
                    }
                } else {
                    // We got an expression, but it wasn't the last statement,
                    // so don't try to print it. Yes, this is possible. For
                    // example `for x in y {}` is an expression. See the test
                    // non_semi_statements.
                    code_out = code_out.with_segment(segment);
                }
            } else if let Some(item) = ast::Item::cast(node.clone()) {
                match item {
                    ast::Item::ExternCrate(extern_crate) => {
                        if let Some(crate_name) = extern_crate.name_ref() {
                            let crate_name = crate_name.text().to_string();
                            if !self.dependency_lib_names()?.contains(&crate_name) {
                                self.external_deps
                                    .entry(crate_name.clone())
                                    .or_insert_with(|| {
                                        ExternalCrate::new(crate_name.clone(), "\"*\"".to_owned())
                                            .unwrap()
                                    });
                            }
                            self.extern_crate_stmts
                                .insert(crate_name, segment.code.clone());
                        }
                    }
                    ast::Item::MacroRules(macro_rules) => {
                        if let Some(name) = ast::HasName::name(&macro_rules) {
                            let item_block = CodeBlock::new().with_segment(segment);
                            self.items_by_name
                                .insert(name.text().to_string(), item_block);
                        } else {
                            code_out = code_out.with_segment(segment);
                        }
                    }
                    ast::Item::Use(use_stmt) => {
                        if let Some(use_tree) = use_stmt.use_tree() {
                            if self.config.expand_use_statements {
                                // This mode is used for normal execution as it results in all named
                                // items being stored separately, which permits future code to
                                // deduplicate / replace those items. It doesn't however preserve
                                // traceability back to the original user's code, so isn't so useful
                                // for analysis purposes.
                                crate::use_trees::use_tree_names_do(&use_tree, &mut |import| {
                                    match import {
                                        Import::Unnamed(code) => {
                                            self.unnamed_items
                                                .push(CodeBlock::new().other_user_code(code));
                                        }
                                        Import::Named { name, code } => {
                                            self.items_by_name.insert(
                                                name,
                                                CodeBlock::new().other_user_code(code),
                                            );
                                        }
                                    }
                                });
                            } else {
                                // This mode finds all names that the use statement expands to, then
                                // removes any previous definitions of those names and then adds the
                                // original user code as-is. This allows error reporting on the
                                // added line. It's only good for one-off usage though, since all
                                // the names get put into `unnamed_items`, so can't get tracked.
                                // Fortunately this is fine for analysis purposes, since we always
                                // through away the state after we're done with analysis.
                                crate::use_trees::use_tree_names_do(&use_tree, &mut |import| {
                                    if let Import::Named { name, .. } = import {
                                        self.items_by_name.remove(&name);
                                    }
                                });
                                self.unnamed_items
                                    .push(CodeBlock::new().with_segment(segment));
                            }
                        } else {
                            // No use-tree probably means something is malformed, just put it into
                            // the output as-is so that we can get proper error reporting.
                            code_out = code_out.with_segment(segment);
                        }
                    }
                    // tch-kernel: `mod name;` is the file `name.rs` (or `name/mod.rs`) of the
                    // notebook's folder, as if the notebook were the crate's root file: a
                    // program's `main.rs` pasted into a cell finds its modules beside it.
                    ast::Item::Module(module) if module.item_list().is_none() => {
                        let name = ast::HasName::name(&module)
                            .map(|n| n.text().to_string())
                            .unwrap_or_default();
                        let file = module_file(&name)?;
                        let item_block = CodeBlock::new()
                            .generated(format!("#[path = {:?}]", file.to_string_lossy()))
                            .with_segment(segment);
                        self.items_by_name.insert(name.clone(), item_block);
                        previous_item_name = Some(name);
                    }
                    item => {
                        let item_block = CodeBlock::new().with_segment(segment);
                        if let Some(item_name) = item::item_name(&item) {
                            *self.items_by_name.entry(item_name.to_owned()).or_default() =
                                item_block;
                            previous_item_name = Some(item_name);
                        } else if let Some(item_name) = &previous_item_name {
                            // unwrap below should never fail because we put
                            // that key in the map on a previous iteration,
                            // otherwise we wouldn't have had a value in
                            // `previous_item_name`.
                            self.items_by_name
                                .get_mut(item_name)
                                .unwrap()
                                .modify(move |block_for_name| block_for_name.add_all(item_block));
                        } else {
                            self.unnamed_items.push(item_block);
                        }
                    }
                }
            } else {
                code_out = code_out.with_segment(segment);
            }
        }
        Ok(code_out)
    }

    fn dependency_lib_names(&self) -> Result<Vec<String>> {
        cargo_metadata::get_library_names(&self.config)
    }

    fn record_new_locals(
        &mut self,
        pat: ast::Pat,
        opt_ty: Option<ast::Type>,
        segment: &Segment,
        let_stmt_range: TextRange,
    ) {
        match pat {
            ast::Pat::IdentPat(ident) => self.record_local(ident, opt_ty, segment, let_stmt_range),
            ast::Pat::RecordPat(ref pat_struct) => {
                if let Some(record_fields) = pat_struct.record_pat_field_list() {
                    for field in record_fields.fields() {
                        if let Some(pat) = field.pat() {
                            self.record_new_locals(pat, None, segment, let_stmt_range);
                        }
                    }
                }
            }
            ast::Pat::TuplePat(ref pat_tuple) => {
                for pat in pat_tuple.fields() {
                    self.record_new_locals(pat, None, segment, let_stmt_range);
                }
            }
            ast::Pat::TupleStructPat(ref pat_tuple) => {
                for pat in pat_tuple.fields() {
                    self.record_new_locals(pat, None, segment, let_stmt_range);
                }
            }
            _ => {}
        }
    }

    fn record_local(
        &mut self,
        pat_ident: ast::IdentPat,
        opt_ty: Option<ast::Type>,
        segment: &Segment,
        let_stmt_range: TextRange,
    ) {
        // Default new variables to some type, say String. Assuming it isn't a
        // String, we'll get a compilation error when we try to move the
        // variable into our variable store, then we'll see what type the error
        // message says and fix it up. Hacky huh? If the user gave an explicit
        // type, we'll use that for all variables in that assignment (probably
        // only correct if it's a single variable). This gives the user a way to
        // force the type if rustc is giving us a bad suggestion.
        let type_name = match opt_ty {
            Some(ty) if type_is_fully_specified(&ty) => format!("{}", AstNode::syntax(&ty).text()),
            _ => "String".to_owned(),
        };
        if let Some(name) = ast::HasName::name(&pat_ident) {
            self.variable_states.insert(
                name.text().to_string(),
                VariableState {
                    type_name,
                    is_mut: pat_ident.mut_token().is_some(),
                    // All new locals will initially be defined only inside our catch_unwind
                    // block.
                    move_state: VariableMoveState::New,
                    definition_span: segment.sequence.map(|segment_index| {
                        let range = name.syntax().text_range() - let_stmt_range.start();
                        UserCodeSpan {
                            segment_index,
                            range,
                        }
                    }),
                },
            );
        }
    }
}

// Returns the path to `tool` (rustc or cargo) that rustup will use, or None if anything goes wrong
// (e.g. rustup isn't available). By invoking this binary directly, we avoid having rustup decide
// which binary to invoke each time we compile. Doing this for cargo reduces eval time for a trivial
// bit of code from about 140ms to 109ms. Doing it for rustc as well further reduces it to about
// 75ms.
fn rustup_tool_path(toolchain: Option<&str>, tool: &str) -> Option<PathBuf> {
    let mut cmd = Command::new("rustup");
    if let Some(toolchain) = toolchain {
        cmd.arg("+".to_owned() + toolchain);
    }
    let output = cmd.arg("which").arg(tool).output().ok()?;
    if !output.status.success() {
        return None;
    }
    Some(PathBuf::from(
        std::str::from_utf8(&output.stdout).ok()?.trim().to_owned(),
    ))
}

/// Returns the path to `tool` (cargo or rustc), first attempting to use rustup, then failing that
/// looking for the tool on the PATH and failing that checking if `fallback` exists. If all that
/// fails, then returns an error. `fallback` should be the path to the tool at compile time and is a
/// last resort for handling the case where the user does `cargo install` from a shell that has rust
/// tools on their path, but then runs evcxr (most like the jupyter kernel) without their path set
/// correctly. This mostly happens when people set PATH in their bashrc, then run evcxr_jupyter from
/// vscode.
fn default_tool_path(tool: &str, fallback: &str) -> Result<PathBuf> {
    if let Some(path) = rustup_tool_path(None, tool) {
        return Ok(path);
    }
    if let Ok(path) = which::which(tool) {
        return Ok(path);
    }
    let path = PathBuf::from(fallback);
    if path.exists() {
        // For security reasons, we only use the fallback path if it's in the user's home directory.
        // This is probably a bit paranoid, but we'd like to avoid the situation where someone
        // downloads a pre-built evcxr binary and runs it and someone else on the system knows
        // they're going to do this, so puts a malicious cargo/rustc binary at the location of the
        // fallback path.
        if let Some(home) = dirs::home_dir()
            && path.starts_with(home)
        {
            // Note, if the user is using rustup, then we're likely returning the path to the
            // rustup proxy, so they won't in this case get the speedup from bypassing the
            // proxy... but at least thing will work. The complexity required to bypass in this
            // case doesn't seem worth it.
            return Ok(path);
        }
    }
    anyhow::bail!("Cannot find `{}` binary", tool);
}

fn default_cargo_path() -> Result<PathBuf> {
    const BUILD_TIME_CARGO_PATH: &str = include_str!(concat!(env!("OUT_DIR"), "/cargo_path"));
    default_tool_path("cargo", BUILD_TIME_CARGO_PATH)
}

fn default_rustc_path() -> Result<PathBuf> {
    const BUILD_TIME_RUSTC_PATH: &str = include_str!(concat!(env!("OUT_DIR"), "/rustc_path"));
    default_tool_path("rustc", BUILD_TIME_RUSTC_PATH)
}

fn get_host_target(rustc_path: &Path) -> Result<String, Error> {
    let output = match Command::new(rustc_path).arg("-Vv").output() {
        Ok(o) => o,
        Err(error) => bail!("Failed to run rustc: {}", error),
    };
    let stdout = std::str::from_utf8(&output.stdout)?;
    let stderr = std::str::from_utf8(&output.stderr)?;
    for line in stdout.lines() {
        if let Some(host) = line.strip_prefix("host: ") {
            return Ok(host.to_owned());
        }
    }
    bail!(
        "`{} -Vv` didn't output a host line.\n{}\n{}",
        rustc_path.display(),
        stdout,
        stderr
    );
}

fn replace_reserved_words_in_type(ty: &str) -> String {
    static RESERVED_WORDS: Lazy<Regex> =
        Lazy::new(|| Regex::new("(^|:|<)(async|try)(>|$|:)").unwrap());
    RESERVED_WORDS.replace_all(ty, "${1}r#${2}${3}").to_string()
}

fn core_extern(rustc: &Path) -> Result<OsString> {
    let std_lib = std_lib_path(rustc)?;
    let mut result = OsString::from("core=");
    result.push(std_lib.as_os_str());
    Ok(result)
}

/// Returns the path to the shared object for the rust standard library.
fn std_lib_path(rustc: &Path) -> Result<PathBuf> {
    let libdir_bytes = std::process::Command::new(rustc)
        .arg("--print")
        .arg("target-libdir")
        .output()?
        .stdout;
    let libdir = std::str::from_utf8(&libdir_bytes)?;
    let dir = std::fs::read_dir(libdir.trim())?;
    let prefix = format!("{}std-", crate::module::shared_object_prefix());
    for entry in dir {
        let Ok(entry) = entry else { continue };
        if entry
            .file_name()
            .to_str()
            .is_some_and(|file_name| file_name.starts_with(&prefix))
            && entry
                .path()
                .extension()
                .map(|ext| ext == crate::module::shared_object_extension())
                .unwrap_or(false)
        {
            return Ok(entry.path());
        }
    }
    anyhow::bail!("No libstd found in {libdir}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use ra_ap_syntax::SourceFile;
    use ra_ap_syntax::ast::HasAttrs;

    #[test]
    fn test_replace_reserved_words_in_type() {
        use super::replace_reserved_words_in_type as repl;
        assert_eq!(repl("asyncstart"), "asyncstart");
        assert_eq!(repl("endasync"), "endasync");
        assert_eq!(repl("async::foo"), "r#async::foo");
        assert_eq!(repl("foo::async::bar"), "foo::r#async::bar");
        assert_eq!(repl("foo::async::async::bar"), "foo::r#async::r#async::bar");
        assert_eq!(repl("Bar<async::foo::Baz>"), "Bar<r#async::foo::Baz>");
    }

    fn create_state() -> ContextState {
        let config = Config::new(
            PathBuf::from("/dummy_path"),
            PathBuf::from("/dummy_evcxr_bin"),
        )
        .unwrap();
        ContextState::new(config)
    }

    #[test]
    fn test_attributes() {
        let mut state = create_state();
        let (user_code, code_info) = CodeBlock::from_original_user_code(stringify!(
            #![feature(some_other_feature)]
            fn foo() {}
            let x = 10;
        ));
        let user_code = state.apply(user_code, &code_info.nodes).unwrap();
        let final_code = state.code_to_compile(user_code, CompilationMode::NoCatch);
        let source_file =
            SourceFile::parse(&final_code.code_string(), crate::rust_analyzer::EDITION)
                .ok()
                .unwrap();
        let mut attrs: Vec<String> = source_file
            .attrs()
            .map(|attr| attr.syntax().text().to_string().replace(' ', ""))
            .collect();
        attrs.sort();
        assert_eq!(
            attrs,
            vec![
                "#![allow(unused_imports,unused_mut,dead_code)]".to_owned(),
                "#![feature(some_other_feature)]".to_owned(),
            ]
        );
    }
}

/// tch-kernel: in an item block's triggers: the block goes into every build.
const ALWAYS_NEEDED: &str = "\0always";

/// tch-kernel: each item block's triggers (see `item_triggers`) with the code they were found
/// in, shared by the states of one context.
type TriggerCache = Arc<Mutex<HashMap<String, (String, Arc<HashSet<String>>)>>>;

/// tch-kernel: identifier-like words of `code` (string literals included, for `{x}` in format
/// strings).
fn code_words(code: &str) -> impl Iterator<Item = &str> {
    code.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

/// tch-kernel: the words that make a build need the item block `name` besides its name: the
/// trait and type of each impl in it (impls are kept with the item before them), and the names
/// of the impls' and traits' associated items (a method call names only the method).
fn item_triggers(name: &str, code: &str) -> HashSet<String> {
    const KEYWORDS: [&str; 9] = [
        "impl", "for", "where", "unsafe", "dyn", "const", "Self", "crate", "default",
    ];
    use ast::HasModuleItem;
    let mut triggers = HashSet::from([name.to_owned()]);
    let file = ast::SourceFile::parse(code, crate::rust_analyzer::EDITION).tree();
    for item in file.items() {
        let assoc = match &item {
            // An imported trait's methods are called without naming it: imports always go in
            // (they are cheap to check).
            ast::Item::Use(_) => {
                triggers.insert(ALWAYS_NEEDED.to_owned());
                None
            }
            // A `#[used]` static is there for what the linker does with it (a constructor in
            // `.init_array`), never named by the code that needs it.
            ast::Item::Static(s)
                if ast::HasAttrs::attrs(s)
                    .any(|a| a.simple_name().is_some_and(|n| n == "used")) =>
            {
                triggers.insert(ALWAYS_NEEDED.to_owned());
                None
            }
            ast::Item::Impl(imp) => {
                let header = match imp.assoc_item_list() {
                    Some(list) => {
                        let end =
                            list.syntax().text_range().start() - imp.syntax().text_range().start();
                        imp.syntax().text().slice(..end).to_string()
                    }
                    None => imp.syntax().text().to_string(),
                };
                // Path prefixes (`std` of `std::fmt::Display`) are in every cell's code.
                let mut rest = header.as_str();
                while let Some(start) = rest.find(|c: char| c.is_alphanumeric() || c == '_') {
                    let after = &rest[start..];
                    let len = after
                        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .unwrap_or(after.len());
                    let (word, tail) = after.split_at(len);
                    if !tail.starts_with("::") && !KEYWORDS.contains(&word) {
                        triggers.insert(word.to_owned());
                    }
                    rest = tail;
                }
                imp.assoc_item_list()
            }
            ast::Item::Trait(trait_) => trait_.assoc_item_list(),
            _ => None,
        };
        for assoc in assoc.iter().flat_map(|list| list.assoc_items()) {
            let name = match &assoc {
                ast::AssocItem::Fn(f) => ast::HasName::name(f),
                ast::AssocItem::Const(c) => ast::HasName::name(c),
                ast::AssocItem::TypeAlias(t) => ast::HasName::name(t),
                ast::AssocItem::MacroCall(_) => None,
            };
            triggers.extend(name.map(|n| n.text().to_string()));
        }
    }
    triggers
}

/// tch-kernel: the names of the item blocks a build of `seed` (the cell's own code, imports and
/// unnamed items) needs: those whose name or triggers appear in it, then, transitively, in the
/// blocks needed so far. Words are matched, not resolved, so a block is sometimes taken
/// without need, which costs only time.
fn needed_items<'a>(
    items: &'a BTreeMap<String, CodeBlock>,
    seed: &str,
    cache: &TriggerCache,
) -> HashSet<&'a str> {
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    // Parsing every block for its triggers took 7.5 ms per cell after 300 items.
    cache.retain(|name, _| items.contains_key(name));
    let blocks: Vec<(&str, String, Arc<HashSet<String>>)> = items
        .iter()
        .map(|(name, block)| {
            let code = block.code_string();
            let triggers = match cache.get(name) {
                Some((cached, triggers)) if *cached == code => triggers.clone(),
                _ => {
                    let triggers = Arc::new(item_triggers(name, &code));
                    cache.insert(name.clone(), (code.clone(), triggers.clone()));
                    triggers
                }
            };
            (name.as_str(), code, triggers)
        })
        .collect();
    drop(cache);
    let mut words: HashSet<&str> = code_words(seed).collect();
    let mut needed = HashSet::new();
    loop {
        let mut grew = false;
        for (name, code, triggers) in &blocks {
            if !needed.contains(name)
                && (triggers.contains(ALWAYS_NEEDED)
                    || triggers.iter().any(|t| words.contains(t.as_str())))
            {
                needed.insert(*name);
                words.extend(code_words(code));
                grew = true;
            }
        }
        if !grew {
            return needed;
        }
    }
}

#[cfg(test)]
mod needed_items_tests {
    use super::*;

    fn items() -> std::collections::BTreeMap<String, CodeBlock> {
        [
            (
                "S21",
                "struct S21 { a: f64 }\nimpl S21 { fn total(&self) -> f64 { self.a } }",
            ),
            ("f21", "fn f21(x: f64) -> f64 { S21 { a: x }.total() }"),
            (
                "Pretty",
                "trait Pretty { fn show(&self); }\nimpl Pretty for i32 { fn show(&self) {} }",
            ),
            ("sq", "macro_rules! sq { ($x:expr) => { $x * $x } }"),
            ("Write", "use std::io::Write;"),
            ("AT_LOAD", "#[used]\n#[unsafe(link_section = \".init_array\")]\nstatic AT_LOAD: extern \"C\" fn() = { extern \"C\" fn f() {} f };"),
            ("Unused", "struct Unused;\nimpl std::fmt::Display for Unused { fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result { Ok(()) } }"),
        ]
        .into_iter()
        .map(|(name, code)| (name.to_owned(), CodeBlock::new().generated(code)))
        .collect()
    }

    fn needed(seed: &str) -> Vec<String> {
        let items = items();
        let mut names: Vec<String> = needed_items(&items, seed, &TriggerCache::default())
            .into_iter()
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_cell_gets_the_items_it_uses_and_what_they_use() {
        let wrapper = "if std::panic::catch_unwind(|| { (&(1 + 5)).evcxr_display(); }).is_err() {}";
        // Imports always go in: an imported trait's methods are called without naming it; and
        // `#[used]` statics, which nothing names.
        assert_eq!(needed(wrapper), ["AT_LOAD", "Write"]);
        assert_eq!(needed("f21(3.0)"), ["AT_LOAD", "S21", "Write", "f21"]);
        // A method call names only the method; a macro by its name; a format string too.
        assert_eq!(needed("5.show()"), ["AT_LOAD", "Pretty", "Write"]);
        assert_eq!(needed("sq!(2)"), ["AT_LOAD", "Write", "sq"]);
        assert_eq!(
            needed("println!(\"{}\", Unused)"),
            ["AT_LOAD", "Unused", "Write"]
        );
        // An impl kept with another item's block comes in with the type it is for.
        assert_eq!(needed("let x: S21 = todo!();"), ["AT_LOAD", "S21", "Write"]);
    }
}
