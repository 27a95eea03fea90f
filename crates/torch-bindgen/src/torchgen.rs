//! `Declarations.yaml` from a PyTorch's own torchgen: every wheel ships torchgen with
//! `packaged/ATen/native/native_functions.yaml`, and torchgen writes the declarations tch's
//! generator reads (PyTorch does not ship them: pytorch/pytorch#69471).

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum TorchgenError {
    #[error(
        "{0} has no torchgen (torchgen/packaged/ATen/native/native_functions.yaml): an unpacked libtorch does not ship it; pass the Python environment that has this torch"
    )]
    NoTorchgen(PathBuf),
    #[error("running {python}: {source}")]
    Spawn {
        python: PathBuf,
        source: std::io::Error,
    },
    #[error("{python} cannot run torchgen: {why}")]
    NoYaml { python: PathBuf, why: String },
    #[error("torchgen failed (exit {status}); its output is in {log}")]
    Failed { status: String, log: PathBuf },
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// torchgen's directory in the site-packages that holds `torch/` (a torch install's parent).
pub fn torchgen_dir(site_packages: &Path) -> Result<PathBuf, TorchgenError> {
    let dir = site_packages.join("torchgen");
    if dir
        .join("packaged/ATen/native/native_functions.yaml")
        .is_file()
    {
        Ok(dir)
    } else {
        Err(TorchgenError::NoTorchgen(site_packages.to_owned()))
    }
}

/// Runs `torchgen_dir`'s generator with `python` (which needs PyYAML, not torch: it may be
/// another environment's Python) and returns the path of the `Declarations.yaml` written in
/// `work` (torchgen's output goes to `work/torchgen.log`).
pub fn declarations(
    python: &Path,
    torchgen_dir: &Path,
    work: &Path,
) -> Result<PathBuf, TorchgenError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |e| TorchgenError::Io(path, e)
    };
    // Only torchgen on the path: not the rest of that site-packages (its torch, its numpy).
    let shim = work.join("pythonpath");
    std::fs::create_dir_all(&shim).map_err(io(&shim))?;
    let link = shim.join("torchgen");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(torchgen_dir, &link).map_err(io(&link))?;
    let spawn = |e| TorchgenError::Spawn {
        python: python.to_owned(),
        source: e,
    };
    let probe = Command::new(python)
        .args(["-c", "import yaml, typing_extensions"])
        .env("PYTHONPATH", &shim)
        .output()
        .map_err(spawn)?;
    if !probe.status.success() {
        return Err(TorchgenError::NoYaml {
            python: python.to_owned(),
            why: format!(
                "{} (pip install pyyaml typing_extensions)",
                String::from_utf8_lossy(&probe.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ),
        });
    }
    let out = work.join("aten");
    let log = work.join("torchgen.log");
    let log_file = std::fs::File::create(&log).map_err(io(&log))?;
    let status = Command::new(python)
        .args([
            "-m",
            "torchgen.gen",
            "--generate",
            "declarations_yaml",
            "-s",
        ])
        .arg(torchgen_dir.join("packaged/ATen"))
        .arg("-d")
        .arg(&out)
        .env("PYTHONPATH", &shim)
        .stdout(log_file.try_clone().map_err(io(&log))?)
        .stderr(log_file)
        .status()
        .map_err(spawn)?;
    let yaml = out.join("Declarations.yaml");
    if !status.success() || !yaml.is_file() {
        return Err(TorchgenError::Failed {
            status: status.to_string(),
            log,
        });
    }
    Ok(yaml)
}
