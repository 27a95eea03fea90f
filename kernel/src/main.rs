//! `tch-kernel`: the Jupyter kernel binary. Run by Jupyter with a connection file, or used to
//! install and remove its own kernelspecs.

mod install;
mod interpreter;
mod paths;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "tch-kernel", version, about = "A Jupyter kernel for deep learning in Rust")]
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
}

fn main() {
    // The same executable is re-launched as the evaluation child; this takes over there.
    rust_evaluator::child_process_hook();

    env_logger::Builder::from_env(env_logger::Env::new().filter_or("TCH_KERNEL_LOG", "warn"))
        .format_target(false)
        .init();

    if let Err(e) = run() {
        eprintln!("tch-kernel: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    match (cli.command, cli.connection_file) {
        (Some(Command::Install(args)), _) => install::install(&args),
        (Some(Command::Uninstall(args)), _) => install::uninstall(&args),
        (None, Some(file)) => {
            let conn = jupyter_server::wire::ConnectionInfo::from_file(&file)?;
            interpreter::run_kernel(conn).context("kernel failed")?;
            // Skip destructors of detached threads; the executor already released the child.
            std::process::exit(0)
        }
        (None, None) => anyhow::bail!(
            "no connection file given. Jupyter starts this kernel as `tch-kernel -f CONNECTION_FILE`; \
             to make it available in Jupyter run `tch-kernel install --name NAME --display-name TEXT`"
        ),
    }
}
