//! Kernelspec installation, with the same choices as `python -m ipykernel install`:
//! `--user` (default), `--prefix`, named specs, extra `--env`, replace-on-reinstall.

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const LOGO_SVG: &[u8] = include_bytes!("../../kernelspec/logo-svg.svg");
const LOGO_32: &[u8] = include_bytes!("../../kernelspec/logo-32x32.png");
const LOGO_64: &[u8] = include_bytes!("../../kernelspec/logo-64x64.png");
/// Marks a kernelspec directory as ours, so a reinstall never replaces someone else's kernel.
const MARKER: &str = "tch-kernel.json";

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Kernel name (letters, digits, `-`, `.`, `_`), e.g. `rust-tch-2.13-cpu`.
    #[arg(long, default_value = "rust-tch")]
    pub name: String,
    /// Name shown in JupyterLab's launcher.
    #[arg(long)]
    pub display_name: Option<String>,
    /// Install under PREFIX/share/jupyter/kernels instead of the user's Jupyter data dir.
    #[arg(long)]
    pub prefix: Option<PathBuf>,
    /// Extra environment for the kernel, `KEY=VALUE` (repeatable). `${VAR}` is expanded by
    /// Jupyter from the server's environment when the kernel starts.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// `message` (control-channel interrupts, default) or `signal` (SIGINT).
    #[arg(long, default_value = "message", value_parser = ["message", "signal"])]
    pub interrupt_mode: String,
    /// Binary to put in argv (default: this executable).
    #[arg(long)]
    pub kernel_binary: Option<PathBuf>,
    /// Replace an existing kernelspec of that name even if another tool wrote it.
    #[arg(long)]
    pub force: bool,
    /// A kernel on this Python environment's PyTorch: runs the installer of this binary's
    /// checkout (install.sh), which picks the tch release for it and prebuilds the prelude.
    #[arg(long, conflicts_with = "libtorch")]
    pub python: Option<PathBuf>,
    /// A kernel on an unpacked libtorch (see --python).
    #[arg(long)]
    pub libtorch: Option<PathBuf>,
    /// The kernel's build cache (with --python or --libtorch).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Build on this tch release instead of the one for the PyTorch found (with --python or
    /// --libtorch).
    #[arg(long)]
    pub tch: Option<String>,
}

#[derive(Args, Debug)]
pub struct UninstallArgs {
    pub name: String,
    #[arg(long)]
    pub prefix: Option<PathBuf>,
}

#[derive(Serialize)]
struct KernelJson {
    argv: Vec<String>,
    display_name: String,
    language: &'static str,
    interrupt_mode: String,
    env: BTreeMap<String, String>,
    metadata: serde_json::Value,
    kernel_protocol_version: &'static str,
}

pub fn validate_name(name: &str) -> Result<String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    {
        bail!("invalid kernel name {name:?}: use only ASCII letters, digits and - . _");
    }
    // Jupyter treats names case-insensitively and stores them lowercased.
    Ok(name.to_ascii_lowercase())
}

/// A libtorch kernel needs its prelude built for that libtorch: that is install.sh's job, in the
/// checkout this binary was built in (`target/release/tch-kernel`).
fn run_installer(args: &InstallArgs) -> Result<()> {
    if args.kernel_binary.is_some() || args.force {
        bail!("--kernel-binary and --force do not go with --python or --libtorch");
    }
    let exe = std::fs::canonicalize(std::env::current_exe()?)?;
    let script = exe
        .ancestors()
        .nth(3)
        .map(|root| root.join("install.sh"))
        .filter(|s| s.is_file())
        .with_context(|| {
            format!(
                "--python and --libtorch run install.sh of the checkout {} was built in, which is not there any more",
                exe.display()
            )
        })?;
    let mut command = std::process::Command::new(&script);
    command.args([
        "--name",
        &args.name,
        "--interrupt-mode",
        &args.interrupt_mode,
    ]);
    let paths = [
        ("--python", &args.python),
        ("--libtorch", &args.libtorch),
        ("--prefix", &args.prefix),
        ("--cache-dir", &args.cache_dir),
    ];
    for (flag, value) in paths {
        if let Some(path) = value {
            command.arg(flag).arg(path);
        }
    }
    let texts = [("--display-name", &args.display_name), ("--tch", &args.tch)];
    for (flag, value) in texts {
        if let Some(text) = value {
            command.args([flag, text]);
        }
    }
    for pair in &args.env {
        command.args(["--env", pair]);
    }
    let status = command
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !status.success() {
        bail!("{} failed (its error is above)", script.display());
    }
    Ok(())
}

fn kernels_dir(prefix: Option<&Path>) -> Result<PathBuf> {
    crate::paths::kernels_dir(prefix)
        .context("cannot find the Jupyter data dir: set HOME or JUPYTER_DATA_DIR")
}

pub fn install(args: &InstallArgs) -> Result<()> {
    let name = validate_name(&args.name)?;
    if args.python.is_some() || args.libtorch.is_some() {
        return run_installer(args);
    }
    if args.cache_dir.is_some() || args.tch.is_some() {
        bail!("--cache-dir and --tch go with --python or --libtorch (a kernel with libtorch)");
    }
    let binary = match &args.kernel_binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("cannot locate this executable")?,
    };
    // An absolute argv[0]: after `module purge` on a cluster, PATH is not to be trusted.
    let binary = std::fs::canonicalize(&binary)
        .with_context(|| format!("kernel binary {}", binary.display()))?;
    let mut env = BTreeMap::new();
    for pair in &args.env {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--env {pair:?}: expected KEY=VALUE"))?;
        if k.is_empty() {
            bail!("--env {pair:?}: empty variable name");
        }
        env.insert(k.to_owned(), v.to_owned());
    }
    let has_debugger = env.contains_key(child_protocol::env::kernelspec::PRELUDE);
    let spec = KernelJson {
        argv: vec![
            binary.display().to_string(),
            "--connection-file".into(),
            "{connection_file}".into(),
        ],
        display_name: args.display_name.clone().unwrap_or_else(|| name.clone()),
        language: "rust",
        interrupt_mode: args.interrupt_mode.clone(),
        env,
        // JupyterLab shows the debugger's bug icon for kernels whose spec says so; a kernel
        // with the prelude has one (see `debugger`).
        metadata: serde_json::json!({
            "tch_kernel": { "version": env!("CARGO_PKG_VERSION") },
            "debugger": has_debugger,
        }),
        kernel_protocol_version: jupyter_server::wire::PROTOCOL_VERSION,
    };

    let dir = kernels_dir(args.prefix.as_deref())?.join(&name);
    if dir.exists() {
        if !dir.join(MARKER).exists() && !args.force {
            bail!(
                "{} exists and was not written by tch-kernel; choose another --name or pass --force",
                dir.display()
            );
        }
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    // Write into a sibling temp dir and rename, so Jupyter never sees a half-written spec.
    let parent = dir.parent().context("kernel dir has no parent")?;
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let write = |file: &str, bytes: &[u8]| {
        std::fs::write(tmp.join(file), bytes).with_context(|| format!("cannot write {file}"))
    };
    write(
        "kernel.json",
        serde_json::to_string_pretty(&spec)?.as_bytes(),
    )?;
    write("logo-svg.svg", LOGO_SVG)?;
    write("logo-32x32.png", LOGO_32)?;
    write("logo-64x64.png", LOGO_64)?;
    write(
        MARKER,
        serde_json::to_string_pretty(
            &serde_json::json!({"name": name, "version": env!("CARGO_PKG_VERSION")}),
        )?
        .as_bytes(),
    )?;
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("cannot move kernelspec into {}", dir.display()))?;
    println!("Installed kernelspec {name} in {}", dir.display());
    Ok(())
}

pub fn uninstall(args: &UninstallArgs) -> Result<()> {
    let name = validate_name(&args.name)?;
    let dir = kernels_dir(args.prefix.as_deref())?.join(&name);
    if !dir.exists() {
        bail!(
            "no kernelspec {name} in {}",
            dir.parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    if !dir.join(MARKER).exists() {
        bail!(
            "{} was not written by tch-kernel; not removing it",
            dir.display()
        );
    }
    std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    println!("Removed kernelspec {name} from {}", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(validate_name("Rust-TCH_2.13").unwrap(), "rust-tch_2.13");
        assert!(validate_name("bad name").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("a/b").is_err());
    }

    #[test]
    fn install_replace_and_uninstall() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().to_path_buf();
        let exe = std::env::current_exe().unwrap();
        let args = |name: &str| InstallArgs {
            name: name.into(),
            display_name: Some("Rust + tch".into()),
            prefix: Some(prefix.clone()),
            env: vec!["LD_LIBRARY_PATH=/opt/torch/lib:${LD_LIBRARY_PATH}".into()],
            interrupt_mode: "message".into(),
            kernel_binary: Some(exe.clone()),
            force: false,
            python: None,
            libtorch: None,
            cache_dir: None,
            tch: None,
        };
        install(&args("Demo")).unwrap();
        let spec_dir = prefix.join("share/jupyter/kernels/demo");
        let spec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(spec_dir.join("kernel.json")).unwrap())
                .unwrap();
        assert_eq!(spec["argv"][2], "{connection_file}");
        assert!(Path::new(spec["argv"][0].as_str().unwrap()).is_absolute());
        assert_eq!(
            spec["env"]["LD_LIBRARY_PATH"],
            "/opt/torch/lib:${LD_LIBRARY_PATH}"
        );
        assert_eq!(spec["language"], "rust");
        assert!(spec_dir.join("logo-64x64.png").exists());
        // Reinstalling replaces our own spec...
        install(&args("demo")).unwrap();
        // ...but not someone else's.
        let other = prefix.join("share/jupyter/kernels/python3");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("kernel.json"), "{}").unwrap();
        assert!(install(&args("python3")).is_err());
        assert!(
            uninstall(&UninstallArgs {
                name: "python3".into(),
                prefix: Some(prefix.clone())
            })
            .is_err()
        );
        uninstall(&UninstallArgs {
            name: "demo".into(),
            prefix: Some(prefix.clone()),
        })
        .unwrap();
        assert!(!spec_dir.exists());
        assert!(other.exists());
    }
}
