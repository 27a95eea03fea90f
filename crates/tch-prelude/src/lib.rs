//! The tch-kernel prelude: what every notebook cell sees without a `:dep` or a `use`.
//!
//! The kernel runs `use tch_prelude::*;` at start-up, so cells can write `Tensor`, `Device`,
//! `Kind`, `nn`, `nn::Module`, `no_grad` and so on directly, exactly as in tch's examples.
//!
//! It also brings the notebook helpers: `display(&x)` and display handles, `Html`/`Markdown`/
//! `Svg`/`Png`, tensors shown like PyTorch, `LinePlot`/`ScatterPlot`/`Histogram`/
//! `ConfusionMatrix`/`LiveChart`, `image`/`image_grid`, `progress(iter)` and `check_interrupt()`;
//! for your own data, `ImageFolder`, `TensorDataset`, `DataLoader` and torchvision's transforms;
//! PyTorch's weights through `vs.load_state_dict(path)` and `vs.save_state_dict(path)`;
//! and for training on several processes, `Distributed`, `DataParallel` and `ShardedSampler`.
//!
//! This crate is built as a Rust `dylib` once, at install time, and every cell links to it
//! dynamically: a cell compiles against tch's metadata but never re-links tch itself.

pub use tch;
pub use tch::nn::{Module, ModuleT, OptimizerConfig};
pub use tch::{
    CModule, Cuda, Device, IndexOp, Kind, Reduction, Scalar, TchError, Tensor, data, kind,
    manual_seed, nn, no_grad, no_grad_guard, vision, with_grad,
};

// Display, plots, images, progress bars and interrupt checks (see notebook-helpers).
pub use notebook_helpers::*;

// Your own data, as torchvision and torch.utils.data name it: image folders, CSV lists and
// arrays, transforms, and a loader whose worker threads build batches ahead of the loop.
pub use tch_data::{
    self, CenterCrop, Compose, DataError, DataLoader, Dataset, DatasetExt, IMAGENET_MEAN,
    IMAGENET_STD, ImageFolder, Normalize, RandomHorizontalFlip, RandomResizedCrop, Resize, Subset,
    TensorDataset, Transform, transforms,
};

// PyTorch's weights: `vs.load_state_dict("resnet18.pth")?`, `vs.save_state_dict(path)?`.
pub use torch_weights::{self, LoadReport, StateDict, VarStoreStateDict, WeightsError};

// More than one process: the job's ranks (Slurm's srun or torchrun; alone in a notebook) and a
// VarStore trained data-parallel on them (see the c10d crate).
pub use c10d::{self, DataParallel, Distributed, ReduceOp};

/// The tch release this prelude is built on and the libtorch it runs with, as the installer
/// chose them (the prelude builds on several tch releases; see kernelspec/torch-versions.tsv).
pub fn versions() -> (String, String) {
    let get = |name: &str| std::env::var(name).unwrap_or_else(|_| "(unknown)".to_owned());
    (
        get(child_protocol::env::kernelspec::TCH_VERSION),
        get(child_protocol::env::kernelspec::TORCH_VERSION),
    )
}

/// CUDA devices, versions and scheduler context, as `:gpu` prints them.
pub fn gpu_report() -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let (tch, torch) = versions();
    let _ = writeln!(out, "libtorch {torch} (tch {tch})");
    let cuda = tch::Cuda::is_available();
    let count = tch::Cuda::device_count();
    if cuda {
        let _ = writeln!(
            out,
            "CUDA available: {count} device(s); cuDNN {}",
            if tch::Cuda::cudnn_is_available() {
                "available"
            } else {
                "not available"
            }
        );
        let _ = writeln!(
            out,
            "Device::cuda_if_available() = {:?}",
            Device::cuda_if_available()
        );
    } else {
        let _ = writeln!(
            out,
            "CUDA not available: running on CPU (Device::cuda_if_available() = Cpu)."
        );
        if !std::path::Path::new("/proc/driver/nvidia/version").exists() {
            let _ = writeln!(
                out,
                "  No NVIDIA driver on this machine (on a cluster: request a GPU, e.g. --gres=gpu:1)."
            );
        } else if !tch::utils::has_cuda() {
            let _ = writeln!(
                out,
                "  This libtorch was built without CUDA, or libtorch_cuda.so could not be loaded"
            );
            let _ = writeln!(
                out,
                "  (see the kernel's log in the Jupyter server output)."
            );
        }
    }
    let _ = writeln!(out, "CPU threads used by torch: {}", tch::get_num_threads());
    for var in [
        "CUDA_VISIBLE_DEVICES",
        "SLURM_JOB_ID",
        "SLURM_JOB_PARTITION",
        "SLURM_JOB_GPUS",
        "SLURMD_NODENAME",
    ] {
        if let Ok(v) = std::env::var(var) {
            let _ = writeln!(out, "{var}={v}");
        }
    }
    if cuda {
        // Names and memory come from the driver; tch has no API for them.
        if let Ok(o) = std::process::Command::new("nvidia-smi")
            .args([
                "--query-gpu=index,name,memory.used,memory.total,utilization.gpu",
                "--format=csv",
            ])
            .output()
        {
            out.push_str(&String::from_utf8_lossy(&o.stdout));
        }
    }
    out
}
