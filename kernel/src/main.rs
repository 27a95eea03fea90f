//! `tch-kernel`: the Jupyter kernel binary. Run by Jupyter with a connection file, or used to
//! install and remove its own kernelspecs.

mod debugger;
mod error_report;
mod export;
mod install;
mod interpreter;
mod paths;
mod prebuild;
mod settings;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "tch-kernel",
    version,
    about = "A Jupyter kernel for deep learning in Rust"
)]
struct Cli {
    /// Connection file written by Jupyter (`{connection_file}` in kernel.json).
    #[arg(short = 'f', long = "connection-file", global = false)]
    connection_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Write a kernelspec for this binary (like `ipykernel install`).
    Install(install::InstallArgs),
    /// Remove a kernelspec written by `install`.
    Uninstall(install::UninstallArgs),
    /// Build the prelude into the kernelspec's cache (run by install.sh with the kernelspec's
    /// environment), so no kernel ever compiles tch at its first cell.
    Prebuild,
    /// Turn a notebook into a standalone Cargo project (same prelude, same tch) and an sbatch
    /// script, to run the same training as a batch job.
    Export(export::ExportArgs),
}

fn main() {
    // The same executable is re-launched as the evaluation child; this takes over there.
    rust_evaluator::child_process_hook();

    init_logging();
    // rust-analyzer's own bugs are caught where it is queried; keep them off stderr.
    rust_evaluator::quiet_analyzer_panics();

    if let Err(e) = run() {
        eprintln!("tch-kernel: error: {e:#}");
        std::process::exit(1);
    }
}

/// `TCH_KERNEL_LOG=info|debug|…` raises the level of our own crates only (the engine's
/// rust-analyzer is very chatty); a full filter such as `debug,ra_ap_hir_ty=warn` is used as is.
fn init_logging() {
    const OURS: [&str; 4] = [
        "tch_kernel",
        "jupyter_server",
        "jupyter_wire",
        "rust_evaluator",
    ];
    let spec = std::env::var(child_protocol::env::kernelspec::LOG).unwrap_or_default();
    let filters = match spec.as_str() {
        "" => "warn".to_owned(),
        level @ ("error" | "warn" | "info" | "debug" | "trace") => {
            std::iter::once("warn".to_owned())
                .chain(OURS.iter().map(|c| format!("{c}={level}")))
                .collect::<Vec<_>>()
                .join(",")
        }
        full => full.to_owned(),
    };
    env_logger::Builder::new()
        .parse_filters(&filters)
        .format_target(false)
        .init();
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    match (cli.command, cli.connection_file) {
        (Some(Command::Install(args)), _) => install::install(&args),
        (Some(Command::Uninstall(args)), _) => install::uninstall(&args),
        (Some(Command::Prebuild), _) => prebuild::prebuild(settings::Settings::from_env()),
        (Some(Command::Export(args)), _) => export::export(&args),
        (None, Some(file)) => {
            let conn = jupyter_server::wire::ConnectionInfo::from_file(&file)?;
            let mut settings = settings::Settings::from_env();
            settings.use_snapshots_for(&file);
            let build_dir = settings.build_dir();
            // SAFETY: no thread has been started yet (the server starts below).
            unsafe { prepare_process_env(&settings, &build_dir) };
            interpreter::run_kernel(conn, settings, build_dir).context("kernel failed")?;
            // Skip destructors of detached threads; the executor already released the child.
            std::process::exit(0)
        }
        (None, None) => anyhow::bail!(
            "no connection file given. Jupyter starts this kernel as `tch-kernel -f CONNECTION_FILE`; \
             to make it available in Jupyter run `tch-kernel install --name NAME --display-name TEXT`"
        ),
    }
}

/// Environment the engine and the evaluation child read.
///
/// # Safety
/// Sets environment variables: only before other threads exist.
unsafe fn prepare_process_env(settings: &settings::Settings, build_dir: &std::path::Path) {
    // SAFETY: forwarded from the caller.
    unsafe {
        rust_evaluator::use_build_dir(build_dir);
        // Cells can run `tch-kernel export` (see notebooks/05-from-notebook-to-slurm).
        if let Ok(exe) = std::env::current_exe() {
            std::env::set_var(child_protocol::env::KERNEL_EXE, exe);
        }
        // The evaluation process writes its snapshots there (rust-evaluator's `snapshot_dir`).
        if let Some(snapshots) = &settings.snapshots {
            std::env::set_var(rust_evaluator::SNAPSHOT_DIR_ENV, snapshots.live_dir());
        }
        let preload = settings.child_preload();
        if !preload.is_empty()
            && let Ok(list) = std::env::join_paths(preload)
        {
            std::env::set_var(child_protocol::env::CHILD_PRELOAD, list);
        }
    }
}
