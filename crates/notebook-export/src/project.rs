//! Writing the Cargo project and the sbatch script.

use crate::{ExportError, Notebook, convert_cells};
use std::path::{Path, PathBuf};

/// Resources asked of Slurm.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    /// e.g. `gpu:a100:1` (per node).
    pub gres: Option<String>,
    /// Nodes, and processes (ranks) on each: `srun` starts `nodes * ntasks_per_node` copies of
    /// the program, which join one job with `Distributed::init()` (data-parallel training).
    pub nodes: u32,
    pub ntasks_per_node: u32,
    pub time: String,
    pub cpus_per_task: u32,
    pub mem: Option<String>,
    pub account: Option<String>,
    /// Seconds before the time limit at which Slurm sends SIGUSR1 (checkpoint hook).
    pub signal_seconds: u32,
}

impl Default for SlurmOptions {
    fn default() -> Self {
        SlurmOptions {
            partition: None,
            gres: None,
            nodes: 1,
            ntasks_per_node: 1,
            time: "01:00:00".into(),
            cpus_per_task: 8,
            mem: None,
            account: None,
            signal_seconds: 120,
        }
    }
}

/// What the exported project builds against: the kernel's own prelude and lock, and the
/// environment of its kernelspec.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The `tch-prelude` crate the kernel uses.
    pub prelude_dir: PathBuf,
    /// The Rust edition the kernel compiles cells in (`rust_evaluator::CELL_EDITION`).
    pub edition: String,
    /// Dependency lines every cell of the kernel has besides the prelude (`anyhow = "1"`), so that
    /// the program compiles what the cells did; a `:dep` of the same name replaces one.
    pub dependencies: Vec<String>,
    /// The kernel's Cargo.lock, so the program gets the same crate versions (and builds offline).
    pub lockfile: Option<PathBuf>,
    /// Crates the kernel takes from a directory instead of crates.io (its tch and torch-sys
    /// generated for its PyTorch): the program's `[patch.crates-io]`.
    pub crate_patches: Vec<(String, PathBuf)>,
    /// Environment the job needs (LIBTORCH, library path, ...), in order.
    pub env: Vec<(String, String)>,
    /// Project and binary name; from the notebook's file name when `None`.
    pub name: Option<String>,
    pub slurm: SlurmOptions,
}

/// What was written.
#[derive(Debug)]
pub struct Exported {
    pub name: String,
    pub files: Vec<PathBuf>,
    pub notes: Vec<String>,
}

/// Exit code of a program that stopped early to be resumed (see `job.sbatch`).
use launch_env::job_script::RESUME_EXIT_CODE;

fn crate_name(notebook: &Path) -> String {
    let stem = notebook
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("notebook");
    let mut name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    name = name.trim_matches('-').to_owned();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name = format!("nb-{name}");
    }
    name
}

pub fn export(
    notebook_path: &Path,
    out_dir: &Path,
    options: &ExportOptions,
) -> Result<Exported, ExportError> {
    let notebook = Notebook::read(notebook_path)?;
    let edition = options
        .edition
        .parse()
        .map_err(|_| ExportError::Edition(options.edition.clone()))?;
    let program = convert_cells(&notebook.cells, edition);
    let name = options
        .name
        .clone()
        .unwrap_or_else(|| crate_name(notebook_path));
    let write = |rel: &str, text: &str| -> Result<PathBuf, ExportError> {
        let path = out_dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ExportError::Write {
                path: parent.to_owned(),
                source,
            })?;
        }
        std::fs::write(&path, text).map_err(|source| ExportError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    };
    let source_name = notebook_path
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("notebook");
    let mut files = Vec::new();

    let prelude = child_protocol::env::toml_string(&options.prelude_dir.display().to_string());
    let lock = match &options.lockfile {
        Some(lock) => Some(
            std::fs::read_to_string(lock).map_err(|source| ExportError::Read {
                path: lock.clone(),
                source,
            })?,
        ),
        None => None,
    };
    // The torch-sys release the kernel's lockfile holds: the one built for its libtorch.
    let torch_sys = lock
        .as_deref()
        .and_then(|lock| locked_version(lock, "torch-sys"))
        .map(|v| format!("={v}"))
        .unwrap_or_else(|| "*".to_owned());
    let cell_edition = &options.edition;
    let mut manifest = format!(
        "# Exported from {source_name} by `tch-kernel export`.\n\
         [package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"{cell_edition}\"\npublish = false\n\n\
         [dependencies]\n\
         # The kernel's prelude: the same tch, helpers and versions as in the notebook.\n\
         tch-prelude = {{ path = {prelude} }}\n\
         # A direct dependency, so build.rs sees libtorch's location (DEP_TCH_LIBTORCH_LIB).\n\
         torch-sys = \"{torch_sys}\"\n"
    );
    let dep_name = |line: &str| line.split('=').next().unwrap_or("").trim().to_owned();
    let own: Vec<String> = program.dependencies.iter().map(|d| dep_name(d)).collect();
    for dep in options
        .dependencies
        .iter()
        .filter(|d| !own.contains(&dep_name(d)))
        .chain(&program.dependencies)
    {
        manifest.push_str(dep);
        manifest.push('\n');
    }
    manifest.push_str("\n[profile.release]\nopt-level = 3\n\n# Not part of any enclosing workspace.\n[workspace]\n");
    if !options.crate_patches.is_empty() {
        manifest.push_str("\n# The kernel's tch, generated for its PyTorch.\n");
        manifest.push_str(&child_protocol::env::crates_io_patch(
            &options.crate_patches,
        ));
    }
    files.push(write("Cargo.toml", &manifest)?);
    if let Some(text) = &lock {
        files.push(write("Cargo.lock", text)?);
    }
    files.push(write("build.rs", BUILD_RS)?);
    files.push(write(".cargo/config.toml", &cargo_config(&options.env))?);

    let main = format!(
        "//! Exported from {source_name} by `tch-kernel export`: the notebook's items first, then its\n\
         //! statements in cell order inside `main`.\n\
         #![allow(unused_imports, unused_variables, unused_mut, dead_code, non_snake_case, unused_must_use)]\n\n\
         use tch_prelude::*;\n\
         // Show a cell's final value as the kernel does (rich text form, else Debug).\n\
         use tch_prelude::EvcxrDisplay as _;\n\
         use tch_prelude::batch::DebugFallback as _;\n\n\
         {}\n\
         fn main() -> Result<(), Box<dyn std::error::Error>> {{\n{}\n    Ok(())\n}}\n",
        program.items, program.body
    );
    files.push(write("src/main.rs", &main)?);
    files.push(write(
        "job.sbatch",
        &sbatch(&name, source_name, notebook_path, out_dir, options),
    )?);
    Ok(Exported {
        name,
        files,
        notes: program.notes,
    })
}

/// What torch-sys's build script reads, from the kernel's environment (`CXX`: a compiler the
/// user chose for tch's C++ shim). The exporter must carry them.
pub const BUILD_ENV: [&str; 3] = ["LIBTORCH", "LIBTORCH_BYPASS_VERSION_CHECK", "CXX"];

/// `.cargo/config.toml`: the kernel's libtorch for the build, so a plain `cargo build` works in a
/// shell that has none of the kernel's environment. The binary finds libtorch through its rpath.
fn cargo_config(env: &[(String, String)]) -> String {
    let mut text = String::from(
        "# Written by `tch-kernel export`: the libtorch of the kernel the notebook ran in.\n[env]\n",
    );
    for (key, value) in env.iter().filter(|(k, _)| BUILD_ENV.contains(&k.as_str())) {
        text.push_str(&format!(
            "{key} = {}\n",
            child_protocol::env::toml_string(value)
        ));
    }
    text
}

/// The version of package `name` in a Cargo.lock, when it holds exactly one.
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let wanted = format!("name = \"{name}\"");
    let mut versions = lock.split("[[package]]").filter_map(|entry| {
        let mut lines = entry.lines().map(str::trim);
        lines.find(|l| *l == wanted)?;
        let version = lines.find_map(|l| l.strip_prefix("version = "))?;
        Some(version.trim_matches('"').to_owned())
    });
    let first = versions.next()?;
    versions.next().is_none().then_some(first)
}

/// tch's own link flags, which only reach tch's examples: without them `--as-needed` drops
/// libtorch_cuda and the program silently runs on the CPU (see tch-rs #980, #907).
const BUILD_RS: &str = r#"fn main() {
    // Not on every change in the project dir (job logs and checkpoints are written there).
    println!("cargo:rerun-if-changed=build.rs");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath={lib}");
    }
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
}
"#;

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn sbatch(
    name: &str,
    source_name: &str,
    notebook_path: &Path,
    out_dir: &Path,
    options: &ExportOptions,
) -> String {
    let s = &options.slurm;
    let mut lines = vec![
        "#!/bin/bash".to_owned(),
        format!("#SBATCH --job-name={name}"),
    ];
    if let Some(p) = &s.partition {
        lines.push(format!("#SBATCH --partition={p}"));
    }
    if let Some(a) = &s.account {
        lines.push(format!("#SBATCH --account={a}"));
    }
    if s.nodes > 1 {
        lines.push(format!("#SBATCH --nodes={}", s.nodes));
    }
    if s.ntasks_per_node > 1 {
        lines.push(format!("#SBATCH --ntasks-per-node={}", s.ntasks_per_node));
    }
    if let Some(g) = &s.gres {
        lines.push(format!("#SBATCH --gres={g}"));
    }
    lines.push(format!("#SBATCH --time={}", s.time));
    lines.push(format!("#SBATCH --cpus-per-task={}", s.cpus_per_task));
    if let Some(m) = &s.mem {
        lines.push(format!("#SBATCH --mem={m}"));
    }
    lines.push("#SBATCH --output=%x-%j.out".into());
    lines.push(format!("# SIGUSR1 {} s before the time limit: programs that call stop_on_signals() save a checkpoint and exit {RESUME_EXIT_CODE}.", s.signal_seconds));
    lines.push(format!("#SBATCH --signal=USR1@{}", s.signal_seconds));
    lines.push(String::new());
    lines.push(format!(
        "# Exported from {source_name} by `tch-kernel export`."
    ));
    lines.push("set -euo pipefail".into());
    lines.push(String::new());
    lines.push(
        "# The software environment of the kernel the notebook ran in (its kernelspec env).".into(),
    );
    for (key, value) in &options.env {
        if key == "LD_LIBRARY_PATH" {
            // Kernelspecs write `${LD_LIBRARY_PATH}` for "the current value".
            let value = value
                .replace(":${LD_LIBRARY_PATH}", "")
                .replace("${LD_LIBRARY_PATH}", "");
            lines.push(format!(
                "export LD_LIBRARY_PATH={}\"${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\"",
                shell_quote(&value)
            ));
        } else {
            lines.push(format!("export {key}={}", shell_quote(value)));
        }
    }
    lines.push("# Compute nodes may have no internet: every crate was fetched when the kernel was installed.".into());
    lines.push("export CARGO_NET_OFFLINE=true".into());
    // Which notebook this job runs: submit() in it will not submit that notebook again.
    let source = std::fs::canonicalize(notebook_path).unwrap_or_else(|_| notebook_path.to_owned());
    lines.push(format!(
        "export {}={}",
        launch_env::job_script::EXPORTED_FROM_ENV,
        shell_quote(&source.display().to_string())
    ));
    lines.push("# libtorch's threads: the CPUs Slurm gave each task, not every core of a node other tasks share.".into());
    lines.push("export OMP_NUM_THREADS=\"${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}\"".into());
    lines.push("export CHECKPOINT_DIR=\"${CHECKPOINT_DIR:-$SLURM_SUBMIT_DIR/checkpoints-$SLURM_JOB_NAME}\"".into());
    lines.push(String::new());
    lines.push(format!(
        "cd {}",
        shell_quote(&out_dir.display().to_string())
    ));
    lines.push(
        "# A no-op when already built (build on the login node first: cargo build --release)."
            .into(),
    );
    lines.push("cargo build --release --offline".into());
    lines.push("status=0".into());
    if s.nodes * s.ntasks_per_node > 1 {
        lines.push(format!(
            "# srun starts {} ranks ({} per node); Distributed::init() reads their rank from Slurm.",
            s.nodes * s.ntasks_per_node,
            s.ntasks_per_node
        ));
    }
    lines.push(format!(
        "srun \"${{CARGO_TARGET_DIR:-target}}/release/{name}\" || status=$?"
    ));
    lines.push(format!("if [ \"$status\" -eq {RESUME_EXIT_CODE} ]; then"));
    lines.push("    echo \"stopped before the time limit with a checkpoint in $CHECKPOINT_DIR: resubmitting\"".into());
    lines.push("    sbatch --dependency=afterany:\"$SLURM_JOB_ID\" job.sbatch".into());
    lines.push("    exit 0".into());
    lines.push("fi".into());
    lines.push("exit \"$status\"".into());
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_sees_the_kernels_libtorch() {
        let env = [
            ("LIBTORCH".to_owned(), "/sw/torch \"2.11\"".to_owned()),
            ("LD_LIBRARY_PATH".to_owned(), "/x".to_owned()),
            ("LIBTORCH_BYPASS_VERSION_CHECK".to_owned(), "1".to_owned()),
        ];
        let config = cargo_config(&env);
        assert!(
            config.contains("[env]\nLIBTORCH = \"/sw/torch \\\"2.11\\\"\"\n"),
            "{config}"
        );
        assert!(
            config.contains("LIBTORCH_BYPASS_VERSION_CHECK = \"1\"\n"),
            "{config}"
        );
        assert!(
            !config.contains("LD_LIBRARY_PATH"),
            "the binary has an rpath"
        );
    }

    #[test]
    fn the_locked_torch_sys_release_is_pinned() {
        let lock = "[[package]]\nname = \"tch\"\nversion = \"0.24.0\"\n\n\
                    [[package]]\nname = \"torch-sys\"\nversion = \"0.24.0\"\nsource = \"x\"\n";
        assert_eq!(locked_version(lock, "torch-sys").as_deref(), Some("0.24.0"));
        assert_eq!(locked_version(lock, "zip"), None);
        let two = format!("{lock}\n[[package]]\nname = \"torch-sys\"\nversion = \"0.26.0\"\n");
        assert_eq!(locked_version(&two, "torch-sys"), None, "ambiguous");
    }

    #[test]
    fn names_are_valid_crate_names() {
        assert_eq!(
            crate_name(Path::new("/x/02-first-classifier.ipynb")),
            "nb-02-first-classifier"
        );
        assert_eq!(crate_name(Path::new("My Model.ipynb")), "my-model");
    }

    #[test]
    fn writes_a_project_and_a_job() {
        let dir = tempfile::tempdir().unwrap();
        let nb = dir.path().join("train.ipynb");
        std::fs::write(
            &nb,
            r#"{"cells": [{"cell_type": "code", "source": [":dep rand = \"0.9\"\n", "fn f() -> i32 { 1 }\n", "f()"], "metadata": {}}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}"#,
        )
        .unwrap();
        let out = dir.path().join("out");
        let options = ExportOptions {
            prelude_dir: PathBuf::from("/opt/tch-kernel/crates/tch-prelude"),
            edition: "2021".into(),
            dependencies: vec!["anyhow = \"1\"".into(), "rand = \"0.8\"".into()],
            lockfile: None,
            crate_patches: Vec::new(),
            env: vec![
                ("LIBTORCH".into(), "/env/torch".into()),
                (
                    "LD_LIBRARY_PATH".into(),
                    "/env/torch/lib:${LD_LIBRARY_PATH}".into(),
                ),
            ],
            name: None,
            slurm: SlurmOptions {
                partition: Some("gpu".into()),
                gres: Some("gpu:a40:1".into()),
                ..Default::default()
            },
        };
        let e = export(&nb, &out, &options).unwrap();
        assert_eq!(e.name, "train");
        let manifest = std::fs::read_to_string(out.join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains("tch-prelude = { path = \"/opt/tch-kernel/crates/tch-prelude\" }")
        );
        // The crates every cell has, unless the notebook's own `:dep` replaces one.
        assert!(manifest.contains("anyhow = \"1\"\n"), "{manifest}");
        assert!(
            manifest.contains("rand = \"0.9\"\n") && !manifest.contains("rand = \"0.8\""),
            "{manifest}"
        );
        let main = std::fs::read_to_string(out.join("src/main.rs")).unwrap();
        assert!(main.contains("fn f() -> i32 { 1 }") && main.contains("(&(f())).evcxr_display();"));
        let job = std::fs::read_to_string(out.join("job.sbatch")).unwrap();
        for needle in [
            "#SBATCH --partition=gpu",
            "#SBATCH --gres=gpu:a40:1",
            "#SBATCH --time=01:00:00",
            "#SBATCH --signal=USR1@120",
            "export LIBTORCH='/env/torch'",
            "export LD_LIBRARY_PATH='/env/torch/lib'\"${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\"",
            "srun \"${CARGO_TARGET_DIR:-target}/release/train\"",
            "export OMP_NUM_THREADS=\"${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}\"",
            &format!(
                "export TCH_KERNEL_EXPORTED_FROM='{}'",
                std::fs::canonicalize(&nb).unwrap().display()
            ),
        ] {
            assert!(job.contains(needle), "{needle} missing from\n{job}");
        }
        assert!(!job.contains("CUDA_VISIBLE_DEVICES"));
        assert!(!job.contains("--nodes") && !job.contains("--ntasks-per-node"));
        assert!(
            !manifest.contains("[patch"),
            "no patch for a kernel on a tch release"
        );
        // A kernel whose tch was generated for its PyTorch: the program builds on the same.
        let generated = ExportOptions {
            crate_patches: vec![("tch".into(), PathBuf::from("/cache/bindings/tch"))],
            ..options.clone()
        };
        export(&nb, &out, &generated).unwrap();
        let manifest = std::fs::read_to_string(out.join("Cargo.toml")).unwrap();
        assert!(
            manifest.ends_with("[patch.crates-io]\ntch = { path = \"/cache/bindings/tch\" }\n"),
            "{manifest}"
        );
        let ranks = ExportOptions {
            slurm: SlurmOptions {
                nodes: 2,
                ntasks_per_node: 2,
                gres: Some("gpu:2".into()),
                ..Default::default()
            },
            ..options
        };
        export(&nb, &out, &ranks).unwrap();
        let job = std::fs::read_to_string(out.join("job.sbatch")).unwrap();
        for needle in [
            "#SBATCH --nodes=2",
            "#SBATCH --ntasks-per-node=2",
            "#SBATCH --gres=gpu:2",
            "# srun starts 4 ranks (2 per node)",
        ] {
            assert!(job.contains(needle), "{needle} missing from\n{job}");
        }
    }
}
