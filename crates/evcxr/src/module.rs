// Copyright 2020 The Evcxr Authors.
//
// Licensed under the Apache License, Version 2.0 <LICENSE or
// https://www.apache.org/licenses/LICENSE-2.0> or the MIT license <LICENSE
// or https://opensource.org/licenses/MIT>, at your option. This file may not be
// copied, modified, or distributed except according to those terms.

use self::artifacts::read_artifacts;
use self::cache::CacheResult;
use crate::code_block::CodeBlock;
use crate::errors::CompilationError;
use crate::errors::Error;
use crate::errors::bail;
use crate::eval_context::Config;
use crate::eval_context::ContextState;
use anyhow::Context;
use anyhow::Result;
use anyhow::anyhow;
use once_cell::sync::Lazy;
use regex::Regex;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;

mod artifacts;
pub(crate) mod cache;

pub(crate) const CORE_EXTERN_ENV: &str = "EVCXR_CORE_EXTERN";
pub(crate) const CACHE_ENABLED_ENV: &str = "EVCXR_CACHE_ENABLED";
const EXECUTION_SO_PATH_FILE: &str = ".evcxr-execution-so";
const EXECUTION_SO_PATH_ENV: &str = "EVCXR_EXECUTION_SO_PATH";
/// tch-kernel: where the rustc wrapper records the rustc command line cargo ran for the cell
/// crate (see [`DirectRustc`]).
const RECORD_RUSTC_ENV: &str = "EVCXR_RECORD_RUSTC";
const RECORDED_RUSTC_FILE: &str = ".evcxr-rustc-command.json";
/// tch-kernel: the key (`Module::direct_key`) the record beside it is valid for.
const RECORDED_RUSTC_KEY_FILE: &str = ".evcxr-rustc-command.key";
/// tch-kernel: `-Z` flags the engine adds to the cell crate's compile (never recorded, so a
/// replay can add or leave them out).
pub(crate) const TYPE_PROBE_RUSTC_ARGS: &[&str] = &[
    "-Ztrim-diagnostic-paths=false",
    "-Zwrite-long-types-to-disk=no",
];

/// tch-kernel: a cell built for a debugger: full debug info, kept in the shared object, and
/// unoptimised, so that every statement has a line and every local a value. With
/// [`debug_source_arg`], which names the source as the debugger will know it.
pub(crate) const DEBUG_RUSTC_ARGS: &[&str] = &["-Cdebuginfo=2", "-Cstrip=none", "-Copt-level=0"];

/// How rustc's `--remap-path-prefix` names the cell crate's source (`src/lib.rs`, as cargo
/// passes it) in a debug build's line tables.
const DEBUG_SOURCE_ARG: &str = "--remap-path-prefix=src/lib.rs=";

pub(crate) fn debug_source_arg(file: &Path) -> String {
    format!("{DEBUG_SOURCE_ARG}{}", file.display())
}

/// Whether `arg` is one a build adds for itself (the type probe's, a debug build's), never part
/// of the recorded command.
fn is_per_build_arg(arg: &std::ffi::OsStr) -> bool {
    TYPE_PROBE_RUSTC_ARGS
        .iter()
        .chain(DEBUG_RUSTC_ARGS)
        .any(|a| arg == *a)
        || arg
            .to_str()
            .is_some_and(|a| a.starts_with(DEBUG_SOURCE_ARG))
}

// tch-kernel: Linux and macOS only (Windows branches removed here and below); the link
// stand-ins need `std::os::unix`.
pub(crate) fn shared_object_prefix() -> &'static str {
    "lib"
}

pub(crate) fn rlib_prefix() -> &'static str {
    // Rlibs are, fortunately consistent in that they always start with "lib" for all platforms.
    "lib"
}

pub(crate) fn shared_object_extension() -> &'static str {
    if cfg!(target_os = "macos") {
        "dylib"
    } else {
        // tch-kernel: no Windows branch.
        "so"
    }
}

fn shared_object_name_from_crate_name(crate_name: &str) -> String {
    let prefix = shared_object_prefix();
    let extension = shared_object_extension();
    format!("{prefix}{crate_name}.{extension}")
}

fn create_dir(dir: &Path) -> Result<(), Error> {
    if let Err(err) = fs::create_dir_all(dir) {
        bail!("Error creating directory '{:?}': {}", dir, err);
    }
    Ok(())
}

fn write_file(dir: &Path, basename: &str, contents: &str) -> Result<(), Error> {
    create_dir(dir)?;
    let filename = dir.join(basename);
    // If the file contents is already correct, then skip writing it again. This
    // is mostly to avoid rewriting Cargo.toml which should change relatively
    // little.
    if fs::read_to_string(&filename)
        .map(|c| c == contents)
        .unwrap_or(false)
    {
        return Ok(());
    }
    if let Err(err) = fs::write(&filename, contents) {
        bail!("Error writing '{:?}': {}", filename, err);
    }
    Ok(())
}

/// On Mac, if we copy the dylib, we get intermittent failures where we end up
/// with the previous version of the file when we shouldn't.
/// On Linux either renaming or copying works, but renaming should be more
/// efficient, so we do that. tch-kernel: the Windows copy variant is removed.
fn rename_or_copy_so_file(src: &Path, dest: &Path) -> Result<(), Error> {
    if let Err(err) = fs::rename(src, dest) {
        bail!("Error renaming '{:?}' to '{:?}': {}", src, dest, err);
    }
    Ok(())
}

#[derive(Default)]
pub(crate) struct Module {
    build_num: i32,
    last_allow_static: Option<bool>,
    /// tch-kernel: how to run rustc for the cell crate without cargo.
    direct: Option<DirectRustc>,
    /// tch-kernel: native library dirs whose shared objects cells link against as empty
    /// stand-ins (see `set_link_stand_in_dirs`).
    stand_in_dirs: Vec<PathBuf>,
    /// tch-kernel: whether a record copied in with the build dir may be used (see
    /// `trust_seeded_rustc_record`), and whether that was tried.
    trust_seeded_record: bool,
    seeded_record_tried: bool,
    /// tch-kernel: told cargo's `Compiling NAME VERSION` lines of dependencies (a `:dep`'s
    /// crates), instead of this process's stderr (see `set_build_progress`).
    build_progress: Option<BuildProgress>,
    /// tch-kernel: earlier builds that a cell with the same code runs again (`crate::reuse`).
    reuse: crate::reuse::BuildReuse,
}

/// tch-kernel: a receiver of cargo's progress lines (see `Module::set_build_progress`).
pub type BuildProgress = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// tch-kernel: the rustc command line (program, arguments, environment, directory) that cargo
/// ran for the cell crate, recorded by the rustc wrapper the first time. Later cells run rustc
/// with it directly: cargo's start-up, its fingerprint checks of every dependency and the
/// wrapper process cost more than compiling a small cell does. It is valid while `key` (the
/// manifest, the cargo config and everything `cargo_command` passes) is unchanged; a `:dep`, an
/// `:opt` or a linker change goes through cargo again, which records the new command.
struct DirectRustc {
    key: String,
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: PathBuf,
}

impl DirectRustc {
    fn command(&self, extra_rustc_args: &[&str]) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .args(extra_rustc_args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd);
        if extra_rustc_args.iter().any(|a| a.starts_with("-Z")) {
            command.env("RUSTC_BOOTSTRAP", "1");
        }
        command
    }
}

/// The cell crate's name (tch-kernel: public, a debugger's stack frames name it).
pub const CRATE_NAME: &str = "ctx";

/// tch-kernel: a cargo config without its `offline` setting (see `Module::direct_key`).
fn without_offline(cargo_config: &str) -> String {
    cargo_config
        .lines()
        .filter(|line| !line.trim_start().starts_with("offline"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Module {
    pub(crate) fn new() -> Result<Module, Error> {
        Ok(Module {
            build_num: 0,
            last_allow_static: None,
            direct: None,
            stand_in_dirs: Vec::new(),
            trust_seeded_record: false,
            seeded_record_tried: false,
            build_progress: None,
            reuse: Default::default(),
        })
    }

    /// tch-kernel: native library dirs (`-L native=DIR` from a dependency's build script) whose
    /// shared objects the process already loads through a dylib dependency (tch-kernel's
    /// prelude and libtorch). A cell resolves those symbols at load time, so its link needs
    /// only empty stand-ins with the same names; reading libtorch's 900 MB of shared objects
    /// was half of a small cell's link time. Other files in the dir are linked to as they are.
    pub(crate) fn set_link_stand_in_dirs(&mut self, dirs: Vec<PathBuf>) {
        self.stand_in_dirs = dirs;
        self.direct = None;
    }

    /// tch-kernel: where cargo's `Compiling NAME VERSION` lines for dependencies go (a `:dep`
    /// takes as long as its crates take to build; the embedder shows which one is building).
    /// Without it, upstream's: this process's stderr.
    pub(crate) fn set_build_progress(&mut self, progress: Option<BuildProgress>) {
        self.build_progress = progress;
    }

    /// tch-kernel: lets the first build use a rustc record that came with the build dir (a
    /// kernel's build dir is a copy of the installer's, which built the same first cell), with
    /// the installer's paths replaced by this dir's. That skips cargo for the first cell, whose
    /// fingerprint checks of every dependency took a third of a fresh kernel's first second.
    /// Only for a copy known to match its sources: cargo is what would notice they changed.
    pub(crate) fn trust_seeded_rustc_record(&mut self, trusted: bool) {
        self.trust_seeded_record = trusted;
    }

    /// tch-kernel: the copied record, moved to `config`'s crate dir, if its key then matches.
    fn seeded_direct(&self, config: &Config, key: &str) -> Option<DirectRustc> {
        let dir = config.crate_dir();
        let seeded_key = fs::read_to_string(dir.join(RECORDED_RUSTC_KEY_FILE)).ok()?;
        let mut direct = read_recorded_rustc(&dir.join(RECORDED_RUSTC_FILE), String::new())?;
        let old = direct.cwd.to_str()?.to_owned();
        let new = dir.to_str()?.to_owned();
        let moved =
            |s: &OsString| -> Option<OsString> { Some(s.to_str()?.replace(&old, &new).into()) };
        if seeded_key.replace(&old, &new) != key {
            return None;
        }
        direct.args = direct.args.iter().map(moved).collect::<Option<_>>()?;
        direct.env = direct
            .env
            .iter()
            .map(|(k, v)| Some((k.clone(), moved(v)?)))
            .collect::<Option<_>>()?;
        direct.cwd = dir.to_owned();
        direct.key = key.to_owned();
        direct.args = self.with_stand_ins(config, std::mem::take(&mut direct.args));
        Some(direct)
    }

    /// tch-kernel: the directory of stand-ins for `dir`, made once per build dir.
    fn stand_ins_for(&self, config: &Config, index: usize, dir: &Path) -> Option<PathBuf> {
        let out = config
            .common_target_dir()
            .join("link-stand-ins")
            .join(index.to_string());
        if out.join(".complete").exists() {
            return Some(out);
        }
        let _ = fs::remove_dir_all(&out);
        fs::create_dir_all(&out).ok()?;
        let empty = out.join(".empty.c");
        fs::write(&empty, "").ok()?;
        for entry in fs::read_dir(dir).ok()?.flatten() {
            let name = entry.file_name();
            let Some(name_str) = name.to_str() else {
                continue;
            };
            if name_str.starts_with("lib") && name_str.ends_with(".so") {
                let status = Command::new("cc")
                    .arg("-shared")
                    .arg("-o")
                    .arg(out.join(&name))
                    .arg(format!("-Wl,-soname,{name_str}"))
                    .arg(&empty)
                    .output()
                    .ok()?;
                if !status.status.success() {
                    return None;
                }
            } else {
                std::os::unix::fs::symlink(entry.path(), out.join(&name)).ok()?;
            }
        }
        fs::write(out.join(".complete"), "").ok()?;
        Some(out)
    }

    /// tch-kernel: `args` with each stand-in dir's `-L native=DIR` pointing at its stand-ins.
    fn with_stand_ins(&self, config: &Config, args: Vec<OsString>) -> Vec<OsString> {
        if self.stand_in_dirs.is_empty() {
            return args;
        }
        let canonical = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
        let wanted: Vec<PathBuf> = self.stand_in_dirs.iter().map(|d| canonical(d)).collect();
        args.into_iter()
            .map(|arg| {
                let Some(dir) = arg.to_str().and_then(|a| a.strip_prefix("native=")) else {
                    return arg;
                };
                let Some(index) = wanted.iter().position(|w| *w == canonical(Path::new(dir)))
                else {
                    return arg;
                };
                match self.stand_ins_for(config, index, Path::new(dir)) {
                    Some(out) => {
                        let mut replaced = OsString::from("native=");
                        replaced.push(out);
                        replaced
                    }
                    None => arg,
                }
            })
            .collect()
    }

    /// tch-kernel: what a recorded rustc command depends on besides the cell's source.
    fn direct_key(config: &Config) -> Option<String> {
        if config.cache_bytes() > 0 || !config.allow_static_linking || config.time_passes {
            return None;
        }
        let read = |path: PathBuf| fs::read_to_string(path).ok();
        let command = config.cargo_command("rustc");
        let envs: Vec<_> = command.get_envs().collect();
        // `[net] offline` decides where cargo may fetch crates from, not how it runs rustc; the
        // kernel's start-up compiles offline and then turns it off, which would otherwise send
        // the first cell through cargo again.
        let cargo_config = read(config.crate_dir().join(".cargo").join("config.toml"))?;
        Some(format!(
            "{:?}\n{}\n{}\n{:?}\n{:?}",
            config.crate_dir(),
            read(config.crate_dir().join("Cargo.toml"))?,
            without_offline(&cargo_config),
            envs,
            command.get_program(),
        ))
    }

    /// tch-kernel: builds the cell crate (a `cargo rustc --lib` build), by running rustc
    /// directly when a recorded command is valid, through cargo otherwise (recording it).
    /// Returns the output once rustc succeeded; rustc's errors otherwise.
    /// `key`: the build's `direct_key`.
    fn build_cell_crate(
        &mut self,
        config: &Config,
        code_block: &CodeBlock,
        extra_rustc_args: &[&str],
        so_path_file: Option<&Path>,
        key: Option<String>,
    ) -> Result<(std::process::Output, Option<PathBuf>), Error> {
        if self.direct.is_none() && self.trust_seeded_record && !self.seeded_record_tried {
            self.seeded_record_tried = true;
            self.direct = key
                .as_deref()
                .and_then(|key| self.seeded_direct(config, key));
        }
        if let (Some(key), Some(direct)) = (&key, &self.direct)
            && &direct.key == key
        {
            let command = direct.command(extra_rustc_args);
            let so_file = execution_so_source(&command);
            let output = run_cargo(command, code_block, None)?;
            return Ok((output, so_file));
        }
        // Cargo may rebuild dependencies: no earlier build is known to match them any more.
        self.reuse.forget_all();
        let mut command = config.cargo_command("rustc");
        command.arg("--lib").arg("--").args(extra_rustc_args);
        let record_file = config.crate_dir().join(RECORDED_RUSTC_FILE);
        let _ = fs::remove_file(&record_file);
        command.env(RECORD_RUSTC_ENV, &record_file);
        if let Some(so_path_file) = so_path_file {
            command.env(EXECUTION_SO_PATH_ENV, so_path_file);
        }
        let output = run_cargo(command, code_block, self.build_progress.as_deref())?;
        if let Some(key) = &key {
            let _ = fs::write(config.crate_dir().join(RECORDED_RUSTC_KEY_FILE), key);
        }
        // Without a record (it should not happen), later cells keep going through cargo.
        self.direct = key
            .and_then(|key| read_recorded_rustc(&record_file, key))
            .map(|mut direct| {
                direct.args = self.with_stand_ins(config, std::mem::take(&mut direct.args));
                direct
            });
        Ok((output, None))
    }

    // Writes Cargo.toml. Should be called before compile.
    pub(crate) fn write_cargo_toml(&self, state: &ContextState) -> Result<(), Error> {
        write_file(
            state.config.crate_dir(),
            "Cargo.toml",
            &self.get_cargo_toml_contents(state),
        )
    }

    // Writes .cargo/config.toml. Should be called before compile.
    pub(crate) fn write_config_toml(&self, state: &ContextState) -> Result<(), Error> {
        let dot_config_dir = state.config.crate_dir().join(".cargo");
        fs::create_dir_all(dot_config_dir.as_path())?;
        write_file(
            dot_config_dir.as_path(),
            "config.toml",
            &self.get_config_toml_contents(state),
        )
    }

    // tch-kernel: no `check` (nothing called it once rust-analyzer stopped typing variables).

    /// tch-kernel: builds the cell crate, or, with `reuse`, runs again an earlier build of the
    /// same crate (`crate::reuse`). `fn_name`: the function this build exports. Builds are not
    /// reused where there is no `direct_key` (evcxr's own build cache, static linking,
    /// `time_passes`).
    pub(crate) fn build(
        &mut self,
        code_block: &CodeBlock,
        config: &Config,
        extra_rustc_args: &[&str],
        fn_name: &str,
        reuse: bool,
    ) -> Result<Built, Error> {
        let source = code_block.code_string();
        let manifest = Self::direct_key(config);
        let reuse_key = manifest
            .as_deref()
            .filter(|_| reuse)
            .map(|m| crate::reuse::key(&source, fn_name, m, extra_rustc_args));
        if let Some(found) = reuse_key.as_ref().and_then(|k| self.reuse.get(k)) {
            return Ok(Built {
                so_file: SoFile {
                    path: found.so_file.clone(),
                },
                warnings: found.warnings.clone(),
                fn_name: found.fn_name.clone(),
                reused: true,
            });
        }
        let (so_file, warnings) =
            self.compile(code_block, &source, config, extra_rustc_args, manifest)?;
        if let Some(key) = reuse_key {
            self.reuse.remember(
                key,
                crate::reuse::Reusable {
                    so_file: so_file.path.clone(),
                    fn_name: fn_name.to_owned(),
                    warnings: warnings.clone(),
                },
            );
        }
        Ok(Built {
            so_file,
            warnings,
            fn_name: fn_name.to_owned(),
            reused: false,
        })
    }

    /// Builds the cell crate. tch-kernel: `extra_rustc_args` go to the cell crate only, and
    /// the build's warnings are returned with the shared object (the type probe reads them);
    /// `source` is `code_block`'s text, `manifest` the build's `direct_key`.
    fn compile(
        &mut self,
        code_block: &CodeBlock,
        source: &str,
        config: &Config,
        extra_rustc_args: &[&str],
        manifest: Option<String>,
    ) -> Result<(SoFile, Vec<CompilationError>), Error> {
        if self.last_allow_static == Some(!config.allow_static_linking) {
            // If allow_static_linking has changed, then we need to rebuild everything.
            config.cargo_command("clean").output()?;
            // tch-kernel: the recorded rustc command is stale after a clean.
            self.direct = None;
        }
        self.last_allow_static = Some(config.allow_static_linking);
        if config.time_passes && config.toolchain != "nightly" {
            bail!("time_passes option requires nightly compiler");
        }

        self.write_code(source, config)?;

        let next_build_num = self.build_num + 1;
        let so_path_file = config.crate_dir().join(EXECUTION_SO_PATH_FILE);
        // tch-kernel: the build command (and `EXECUTION_SO_PATH_ENV`) is `build_cell_crate`'s.

        match fs::remove_file(&so_path_file) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error.into()),
        }

        // tch-kernel: direct rustc when possible; a direct build names its shared object
        // itself, and the warnings go back to the type probe.
        let (cargo_output, direct_so_file) = self.build_cell_crate(
            config,
            code_block,
            extra_rustc_args,
            Some(&so_path_file),
            manifest,
        )?;
        if config.time_passes {
            let output = String::from_utf8_lossy(&cargo_output.stderr);
            eprintln!("{output}");
        }
        let warnings = errors_from_cargo_output(&cargo_output, code_block).0;

        let so_file = match direct_so_file {
            Some(path) => path,
            None => match fs::read_to_string(&so_path_file) {
                Ok(path) => PathBuf::from(path),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    compiled_so_path(&cargo_output.stdout)?
                }
                Err(error) => return Err(error.into()),
            },
        };

        let copied_so_file = so_file.with_file_name(shared_object_name_from_crate_name(&format!(
            "code_{next_build_num}"
        )));

        rename_or_copy_so_file(&so_file, &copied_so_file)?;
        self.build_num = next_build_num;

        if config.cache_bytes() > 0 {
            crate::module::cache::cleanup(config.cache_bytes())?;
        }

        // tch-kernel: with the build's warnings.
        Ok((
            SoFile {
                path: copied_so_file,
            },
            warnings,
        ))
    }

    fn write_code(&self, source: &str, config: &Config) -> Result<(), Error> {
        write_file(&config.src_dir(), "lib.rs", source)?;
        self.maybe_bump_lib_mtime(config);
        Ok(())
    }

    #[cfg(not(target_os = "macos"))]
    fn maybe_bump_lib_mtime(&self, _config: &Config) {}

    #[cfg(target_os = "macos")]
    fn maybe_bump_lib_mtime(&self, config: &Config) {
        // Some Macs use a filesystem that only has 1 second precision on file modification
        // timestamps. Cargo uses these timestamps to see if it needs to recompile things, otherwise
        // it just reuses the previous output. We set the modification timestamp on our source file
        // to be 10 seconds in the future. That way it's guaranteed to be newer than any outputs
        // produced by previous runs. In the event that setting the mtime fails, we just ignore it,
        // as this mostly affects tests and we don't want inability to set mtime to break things for
        // users.
        let _ = filetime::set_file_mtime(
            config.src_dir().join("lib.rs"),
            filetime::FileTime::from_unix_time(filetime::FileTime::now().unix_seconds() + 10, 0),
        );
    }

    fn get_cargo_toml_contents(&self, state: &ContextState) -> String {
        cargo_toml_contents(state)
    }

    // Pass offline mode to cargo through .cargo/config.toml
    fn get_config_toml_contents(&self, state: &ContextState) -> String {
        format!(
            r#"
[net]
offline = {}
"#,
            state.offline_mode()
        )
    }
}

/// The cell crate's manifest for `state` (tch-kernel: a free function, so that `:dep` can
/// resolve the manifest it would make before anything is written; see `dep_resolution`).
pub(crate) fn cargo_toml_contents(state: &ContextState) -> String {
    let crate_imports = state.format_cargo_deps();
    format!(
        r#"
[package]
name = "{}"
version = "1.0.0"
edition = "{}"

[lib]
crate-type = ["cdylib"]
path = "src/lib.rs"

[profile.dev]
opt-level = {}
debug = false
strip = "debuginfo"
rpath = true
lto = false
debug-assertions = true
codegen-units = 16
panic = 'unwind'
incremental = true
overflow-checks = true

# tch-kernel: fewer codegen units for the cell crate only (dependencies keep theirs, and their
# fingerprints): measured fastest on 2 cores with incremental builds of small cells.
[profile.dev.package.{}]
codegen-units = 4

[dependencies]
{}

# tch-kernel: never part of an enclosing workspace (a cache dir may be inside a checkout).
[workspace]

{}
{}"#,
        CRATE_NAME,
        crate::CELL_EDITION,
        state.opt_level(),
        CRATE_NAME,
        crate_imports,
        state.format_crate_patches(),
        state.format_optimized_profiles()
    )
}

pub(crate) fn wrap_rustc() {
    match wrap_rustc_helper() {
        Err(error) => {
            eprintln!("Failed to wrap rustc: {error}");
            std::process::exit(-1);
        }
        Ok(exit_code) => {
            std::process::exit(exit_code);
        }
    }
}

pub(crate) fn wrap_rustc_helper() -> Result<i32> {
    let mut command = rustc_command()?;
    // tch-kernel: record the cell crate's rustc command for direct replay.
    record_rustc_command(&command)?;

    let cache_result = cache::access_cache(&command)?;
    if matches!(cache_result, CacheResult::Hit) {
        report_execution_so(&command)?;
        return Ok(0);
    }

    let output = command.output()?;

    std::io::stdout().write_all(&output.stdout)?;
    std::io::stderr().write_all(&output.stderr)?;

    if output.status.code() == Some(0) {
        let stderr = std::str::from_utf8(&output.stderr).context("Rustc emitted invalid UTF-8")?;
        let artifacts = read_artifacts(stderr);
        if let CacheResult::Miss(cache_miss) = cache_result {
            cache_miss.update_cache(&artifacts)?;
        }
        report_execution_so(&command)?;
    }

    Ok(output.status.code().unwrap_or(-1))
}

/// tch-kernel: writes the rustc command for the cell crate where the engine asked for it (see
/// [`DirectRustc`]), without the engine's own `-Z` flags, which each build adds as it needs.
fn record_rustc_command(command: &Command) -> Result<()> {
    let Some(path) = std::env::var_os(RECORD_RUSTC_ENV) else {
        return Ok(());
    };
    if execution_so_source(command).is_none() {
        return Ok(());
    }
    let strings = |items: Vec<&std::ffi::OsStr>| -> Option<Vec<String>> {
        items
            .into_iter()
            .map(|s| s.to_str().map(str::to_owned))
            .collect()
    };
    let args: Vec<&std::ffi::OsStr> = command
        .get_args()
        .filter(|a| !is_per_build_arg(a))
        .collect();
    let Some(args) = strings(args) else {
        return Ok(());
    };
    // The wrapper's environment is the one cargo gives rustc; what the engine uses only to
    // talk to the wrapper is left out.
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            ![
                RECORD_RUSTC_ENV,
                EXECUTION_SO_PATH_ENV,
                crate::runtime::WRAP_RUSTC_ENV,
                "RUSTC_BOOTSTRAP",
            ]
            .contains(&k.as_str())
        })
        .collect();
    let record = serde_json::json!({
        "program": command.get_program().to_str(),
        "args": args,
        "env": env,
        "cwd": std::env::current_dir()?,
    });
    fs::write(path, record.to_string())?;
    Ok(())
}

/// tch-kernel: reads what `record_rustc_command` wrote; `None` if it is missing or malformed.
fn read_recorded_rustc(path: &Path, key: String) -> Option<DirectRustc> {
    let record: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).ok()?).ok()?;
    let strings = |v: &serde_json::Value| -> Option<Vec<OsString>> {
        v.as_array()?
            .iter()
            .map(|s| s.as_str().map(OsString::from))
            .collect()
    };
    let env = record["env"]
        .as_array()?
        .iter()
        .map(|pair| {
            Some((
                OsString::from(pair.get(0)?.as_str()?),
                OsString::from(pair.get(1)?.as_str()?),
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(DirectRustc {
        key,
        program: OsString::from(record["program"].as_str()?),
        args: strings(&record["args"])?,
        env,
        cwd: PathBuf::from(record["cwd"].as_str()?),
    })
}

fn report_execution_so(command: &Command) -> Result<()> {
    let Some(source) = execution_so_source(command) else {
        return Ok(());
    };

    let Some(path_file) = std::env::var_os(EXECUTION_SO_PATH_ENV) else {
        return Ok(());
    };
    fs::write(path_file, source.to_string_lossy().as_bytes())?;

    Ok(())
}

fn compiled_so_path(cargo_stdout: &[u8]) -> Result<PathBuf, Error> {
    let expected_name = shared_object_name_from_crate_name(CRATE_NAME);

    for line in String::from_utf8_lossy(cargo_stdout).lines().rev() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };

        if message["reason"] != "compiler-artifact" || message["target"]["name"] != CRATE_NAME {
            continue;
        }

        let Some(filenames) = message["filenames"].as_array() else {
            continue;
        };

        if let Some(path) = filenames
            .iter()
            .filter_map(|filename| filename.as_str())
            .map(PathBuf::from)
            .find(|path| {
                path.file_name()
                    .is_some_and(|name| name == std::ffi::OsStr::new(&expected_name))
            })
        {
            return Ok(path);
        }
    }

    bail!(
        "Cargo did not report the path of the compiled shared object '{}'. Cargo stdout:\n{}",
        expected_name,
        String::from_utf8_lossy(cargo_stdout)
    );
}

fn execution_so_source(command: &Command) -> Option<PathBuf> {
    let mut args = command.get_args();
    let mut is_ctx = false;
    let mut out_dir = None;
    while let Some(arg) = args.next() {
        if arg == "--crate-name" {
            is_ctx = args.next().is_some_and(|name| name == CRATE_NAME);
        } else if arg == "--out-dir" {
            out_dir = args.next().map(PathBuf::from);
        }
    }
    if is_ctx {
        Some(out_dir?.join(shared_object_name_from_crate_name(CRATE_NAME)))
    } else {
        None
    }
}

fn rustc_command() -> Result<Command> {
    let mut args = std::env::args().peekable();
    args.next();
    let rustc = args.next().ok_or_else(|| anyhow!("Insufficient args"))?;
    let mut command = std::process::Command::new(rustc);

    if !should_force_dylibs() {
        let args: Vec<String> = args.collect();
        // tch-kernel: the type probe passes unstable `-Z` flags to the cell crate only.
        if args.iter().any(|arg| arg.starts_with("-Z")) {
            command.env("RUSTC_BOOTSTRAP", "1");
        }
        command.args(args);
        return Ok(command);
    }

    let num_crate_types = std::env::args_os()
        .filter(|arg| arg == "--crate-type")
        .count();
    let core_extern = std::env::var(CORE_EXTERN_ENV)
        .with_context(|| format!("Internal env var {CORE_EXTERN_ENV}` not set"))?;

    let mut got_prefer_dynamic = false;
    while let Some(arg) = args.next() {
        if arg == "-C" {
            let next = args.peek();
            if next.map(|n| n == "prefer-dynamic").unwrap_or_default() {
                got_prefer_dynamic = true;
            }
        }
        if arg == "-Cprefer-dynamic" {
            got_prefer_dynamic = true;
        }

        // If a static library is being linked into this crate, then we modify the linker arguments
        // to make sure that the whole archive gets linked in, otherwise any symbol not referenced
        // by the functions in this crate (most of them) will be garbage collected by the linker.
        // This would be slightly nicer if we could just pass `-l static:+whole-archive=...` to
        // rustc, however rustc doesn't permit `+whole-archive` and `+bundle` at the same time which
        // is what we want.
        if arg == "-l" {
            let Some(next) = args.next() else { continue };
            if let Some(rest) = next.strip_prefix("static=") {
                command.arg("-Clink-arg=-Wl,--whole-archive");
                command.arg("-l").arg(rest);
                command.arg("-Clink-arg=-Wl,--no-whole-archive");
            } else {
                command.arg(arg);
                command.arg(next);
            }
            continue;
        }

        command.arg(&arg);

        // If we're compiling as a crate-type of lib and nothing else, then we tell rustc to also
        // compile as a dylib. We still need compile as type lib though, since otherwise cargo
        // recompiles every time - presumably because it detects that the lib file it asked for
        // isn't present.
        if arg == "--crate-type"
            && num_crate_types == 1
            && let Some(crate_type) = args.next()
        {
            command.arg(&crate_type);
            if crate_type == "lib" {
                command.arg("--crate-type");
                command.arg("dylib");
            }
        }
        // Make paths to our dependencies to use dylibs rather than rlibs.
        if arg == "--extern" {
            let ext = args.next().ok_or_else(|| anyhow!("Insufficient args"))?;
            let so_arg = map_extern_arg(&ext);
            command.arg(so_arg);
        }
    }
    command.arg("--extern").arg(core_extern);
    if !got_prefer_dynamic {
        command.arg("-C").arg("prefer-dynamic");
    }
    Ok(command)
}

fn should_force_dylibs() -> bool {
    std::env::var(crate::runtime::FORCE_DYLIB_ENV).is_ok()
}

fn map_extern_arg(ext: &str) -> OsString {
    if let Some((crate_name, path)) = ext.split_once('=') {
        let mut path = PathBuf::from(path);
        let mut so_arg = OsString::from(crate_name);
        // Remove the rlib prefix and add the shared object prefix (if any). On unix platforms this
        // is redundant because both are "lib", but it's necessary on Windows. We do it
        // unconditionally though because it's cheap and it makes sure the code always gets tested.
        if let Some(without_prefix) = path
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| f.strip_prefix(rlib_prefix()))
        {
            let prefix = shared_object_prefix();
            path = path.with_file_name(format!("{prefix}{without_prefix}"));
        }
        so_arg.push("=");
        let path = path.with_extension(shared_object_extension());
        // The shared object might not exist yet if we're doing a `cargo check`, so we only attempt
        // to use it if it actually exists.
        if path.exists() {
            so_arg.push(path);
            return so_arg;
        }
    }
    OsString::from(ext)
}

/// Run a cargo command prepared for the provided `code_block`, processing the
/// command's output.
fn run_cargo(
    mut command: std::process::Command,
    code_block: &CodeBlock,
    progress: Option<&(dyn Fn(&str) + Send + Sync)>,
) -> Result<std::process::Output, Error> {
    use std::io::BufRead;
    use std::io::Read;

    let mb_child = command
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn();
    let mut child = match mb_child {
        Ok(out) => out,
        Err(err) => bail!("Error running 'cargo rustc': {}", err),
    };

    // Collect stdout in a parallel thread
    let mut stdout = child.stdout.take().unwrap();
    let output_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf)?;
        Ok::<_, Error>(buf)
    });

    // Collect stderr synchronously
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut all_errors = Vec::new();
    for mb_line in stderr.split(10) {
        let mut line = mb_line?;
        tee_error_line(&line, progress);
        all_errors.append(&mut line);
        all_errors.push(10);
    }

    let status = child.wait()?;
    let all_output = output_thread.join().expect("Panic in child thread")?;

    let cargo_output = std::process::Output {
        status,
        stdout: all_output,
        stderr: all_errors,
    };
    if cargo_output.status.success() {
        Ok(cargo_output)
    } else {
        let (errors, non_json_error) = errors_from_cargo_output(&cargo_output, code_block);
        if errors.is_empty() {
            if let Some(error) = non_json_error {
                bail!(Error::Message(error));
            } else {
                bail!(Error::Message(format!(
                    "Compilation failed, but no parsable errors were found. STDERR:\n\
                     {}\nSTDOUT:{}\n",
                    String::from_utf8_lossy(&cargo_output.stderr),
                    String::from_utf8_lossy(&cargo_output.stdout)
                )));
            }
        } else {
            bail!(Error::CompilationErrors(errors));
        }
    }
}

/// Process one line from cargo, either copying it to stderr or ignoring.
///
/// At this point it looks for messages about compiling dependency crates.
fn tee_error_line(line: &[u8], progress: Option<&(dyn Fn(&str) + Send + Sync)>) {
    static CRATE_COMPILING: Lazy<regex::bytes::Regex> =
        Lazy::new(|| regex::bytes::Regex::new("^\\s*Compiling (\\w+)(?:\\s+.*)?$").unwrap());
    if let Some(captures) = CRATE_COMPILING.captures(line) {
        let crate_name = captures.get(1).unwrap().as_bytes();
        if crate_name != CRATE_NAME.as_bytes() {
            if let Some(progress) = progress {
                progress(String::from_utf8_lossy(line).trim());
                return;
            }
            // write line and the following nl symbol as it was stripped before
            std::io::stderr()
                .write_all(line)
                .expect("Writing to stderr should not fail");
            eprintln!();
        }
    }
}

fn errors_from_cargo_output(
    cargo_output: &std::process::Output,
    code_block: &CodeBlock,
) -> (Vec<CompilationError>, Option<String>) {
    // Our compiler errors should all be in JSON format, but for errors from
    // Cargo errors, we need to add explicit matching for those errors that we
    // expect we might see.
    static KNOWN_NON_JSON_ERRORS: Lazy<Regex> =
        Lazy::new(|| Regex::new("(error: no matching package named)").unwrap());

    let stderr = String::from_utf8_lossy(&cargo_output.stderr);
    let stdout = String::from_utf8_lossy(&cargo_output.stdout);
    let mut non_json_error = None;
    let errors = stderr
        .lines()
        .chain(stdout.lines())
        .filter_map(|line| {
            serde_json::from_str(line)
                .ok()
                .and_then(|json| CompilationError::opt_new(json, code_block))
                .or_else(|| {
                    if KNOWN_NON_JSON_ERRORS.is_match(line) {
                        non_json_error = Some(line.to_owned());
                    }
                    None
                })
        })
        .collect();
    (errors, non_json_error)
}

pub(crate) struct SoFile {
    pub(crate) path: PathBuf,
}

/// tch-kernel: what `Module::build` made or found.
pub(crate) struct Built {
    pub(crate) so_file: SoFile,
    pub(crate) warnings: Vec<CompilationError>,
    /// The function to run: this build's, or the reused build's own.
    pub(crate) fn_name: String,
    /// An earlier build of the same crate, which rustc did not build again.
    pub(crate) reused: bool,
}

// tch-kernel: unit test of the fork's direct-rustc key.
#[cfg(test)]
mod tests {
    #[test]
    fn per_build_args_stay_out_of_the_recorded_command() {
        use super::*;
        use std::ffi::OsStr;
        let file = Path::new("/c/debug/build-1/lib.rs");
        assert!(is_per_build_arg(OsStr::new(&debug_source_arg(file))));
        assert!(
            DEBUG_RUSTC_ARGS
                .iter()
                .all(|a| is_per_build_arg(OsStr::new(a)))
        );
        assert!(is_per_build_arg(OsStr::new(TYPE_PROBE_RUSTC_ARGS[0])));
        assert!(!is_per_build_arg(OsStr::new("-Copt-level=1")));
        assert!(!is_per_build_arg(OsStr::new("--remap-path-prefix=/home=~")));
    }

    use super::without_offline;

    #[test]
    fn turning_offline_off_keeps_the_recorded_rustc_command() {
        let on = "\n[net]\noffline = true\n";
        let off = "\n[net]\noffline = false\n";
        assert_eq!(without_offline(on), without_offline(off));
        assert_ne!(without_offline(on), without_offline("\n[net]\nretry = 3\n"));
    }
}
