//! `tch-kernel export NOTEBOOK OUTDIR`: a standalone Cargo project and an sbatch script.

use anyhow::{Context, Result};
use clap::Args;
use notebook_export::{ExportOptions, SlurmOptions};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct ExportArgs {
    /// The notebook (.ipynb).
    notebook: PathBuf,
    /// Directory for the Cargo project (created).
    out_dir: PathBuf,
    /// Crate and binary name (default: from the notebook's file name).
    #[arg(long)]
    name: Option<String>,
    /// Take the environment (libtorch, prelude, cache) from this installed kernelspec instead
    /// of from this process (which, run from a notebook cell, is the kernel's own).
    #[arg(long)]
    kernel: Option<String>,
    /// Slurm partition.
    #[arg(long)]
    partition: Option<String>,
    /// Generic resources per node, e.g. `gpu:a100:1` (typed) or `gpu:1`.
    #[arg(long)]
    gres: Option<String>,
    /// Nodes for a job of several ranks (data-parallel training).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    nodes: u32,
    /// Ranks per node, started by srun: e.g. one per GPU of a node.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    ntasks_per_node: u32,
    /// Time limit.
    #[arg(long, default_value = "01:00:00")]
    time: String,
    #[arg(long, default_value_t = 8)]
    cpus_per_task: u32,
    /// Memory, e.g. `32G`.
    #[arg(long)]
    mem: Option<String>,
    #[arg(long)]
    account: Option<String>,
    /// Seconds before the time limit at which the job gets SIGUSR1 to checkpoint.
    #[arg(long, default_value_t = 120)]
    signal_seconds: u32,
}

/// The kernelspec variables a batch job needs to see the same software, besides what its build
/// needs (`notebook_export::BUILD_ENV`).
const CARRIED: [&str; 6] = [
    // A shared install's crates (install.sh): the job builds offline from them.
    "CARGO_HOME",
    "LD_LIBRARY_PATH",
    child_protocol::env::kernelspec::TORCH_VERSION,
    child_protocol::env::kernelspec::TCH_VERSION,
    "OMP_NUM_THREADS",
    "TORCH_CUDA_ARCH_LIST",
];

fn kernelspec_env(name: &str) -> Result<Vec<(String, String)>> {
    let spec = crate::paths::find_kernelspec(name)
        .map_err(|dirs| anyhow::anyhow!("no kernelspec named {name} (looked in {dirs:?})"))?;
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&spec)?)
        .with_context(|| format!("reading {}", spec.display()))?;
    let env = json
        .get("env")
        .and_then(|e| e.as_object())
        .cloned()
        .unwrap_or_default();
    Ok(env
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
        .collect())
}

pub fn export(args: &ExportArgs) -> Result<()> {
    let env: Vec<(String, String)> = match &args.kernel {
        Some(name) => kernelspec_env(name)?,
        None => std::env::vars().collect(),
    };
    let get = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let prelude_dir = get(child_protocol::env::kernelspec::PRELUDE).map(PathBuf::from).context(
        "TCH_KERNEL_PRELUDE is not set: run `export` from a notebook cell, or pass --kernel NAME (a kernel installed with libtorch)",
    )?;
    let carried = notebook_export::BUILD_ENV
        .iter()
        .chain(&CARRIED)
        .filter_map(|key| {
            let value = get(key)?;
            // From a running kernel, LD_LIBRARY_PATH is expanded; keep only the libtorch part.
            if *key == "LD_LIBRARY_PATH" && args.kernel.is_none() {
                let lib = get("LIBTORCH").map(|l| format!("{l}/lib"))?;
                return Some((key.to_string(), format!("{lib}:${{LD_LIBRARY_PATH}}")));
            }
            Some((key.to_string(), value))
        })
        .collect();
    let options = ExportOptions {
        prelude_dir,
        edition: rust_evaluator::CELL_EDITION.to_owned(),
        dependencies: crate::settings::CELL_CRATES
            .iter()
            .map(|c| c.to_string())
            .collect(),
        lockfile: get(child_protocol::env::kernelspec::LOCKFILE).map(PathBuf::from),
        crate_patches: get(child_protocol::env::kernelspec::BINDINGS)
            .map(|dir| child_protocol::env::generated_crates_in(Path::new(&dir)))
            .unwrap_or_default(),
        env: carried,
        name: args.name.clone(),
        slurm: SlurmOptions {
            partition: args.partition.clone(),
            gres: args.gres.clone(),
            nodes: args.nodes,
            ntasks_per_node: args.ntasks_per_node,
            time: args.time.clone(),
            cpus_per_task: args.cpus_per_task,
            mem: args.mem.clone(),
            account: args.account.clone(),
            signal_seconds: args.signal_seconds,
        },
    };
    let out_dir = std::path::absolute(&args.out_dir).context("output directory")?;
    let exported = notebook_export::export(&args.notebook, &out_dir, &options)?;
    println!(
        "exported {} to {}:",
        args.notebook.display(),
        out_dir.display()
    );
    for file in &exported.files {
        println!("  {}", file.display());
    }
    for note in &exported.notes {
        println!("  note: {note}");
    }
    println!(
        "build: cd {} && cargo build --release    run: ./target/release/{}    submit: sbatch job.sbatch",
        out_dir.display(),
        exported.name
    );
    Ok(())
}
