//! What a kernel instance runs with, from the environment its kernelspec sets (see install.sh):
//!
//! | variable | meaning |
//! |---|---|
//! | `TCH_KERNEL_CACHE_DIR` | per-kernelspec build cache (prebuilt prelude + per-kernel build dirs) |
//! | `TCH_KERNEL_PRELUDE` | the prelude crate every cell sees (unset: plain Rust) |
//! | `TCH_KERNEL_LOCKFILE` | Cargo.lock that pins the prelude's dependencies |
//! | `LIBTORCH` | the libtorch the prelude was built against |
//! | `TCH_KERNEL_TORCH_VERSION` | its version, for the banner and `:gpu` |
//! | `TCH_KERNEL_TCH_VERSION` | the tch release the prelude is built on (export pins it) |
//! | `TCH_KERNEL_BINDINGS` | tch and torch-sys generated for this PyTorch (unset: tch's release) |
//! | `LIBTORCH_BYPASS_VERSION_CHECK` | set when that tch release was made for another torch |
//! | `TCH_KERNEL_OPT_LEVEL` | rustc opt-level for cells (default 1) |
//! | `TCH_KERNEL_LINKER` | `system` (default), `lld` or `mold` |
//! | `CARGO_NET_OFFLINE` | `true`: cells never touch the network |
//! | `TCH_KERNEL_SNAPSHOTS` | `off`: no snapshots of variables; a dir: keep them there (scratch), not in the cache |
//! | `JPY_SESSION_NAME` | the notebook's path (Jupyter Server sets it): its snapshots' key |

use rust_evaluator::{BuildCache, EvaluatorConfig, LoopPolls, Prelude, SnapshotConfig};
use std::path::{Path, PathBuf};

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Crates every cell (and every exported program) can `use` under their own names without a
/// `:dep`, besides the prelude: what Rust programs, tch's examples among them, start with
/// (`use anyhow::Result;`, `use rand::prelude::*;`, and `use tch::..` in a module of their own,
/// where the prelude's glob import does not reach). rand and tch are the prelude's own builds
/// (`*` takes the locked version); anyhow is built once by the installer's prebuild. None costs
/// a cell anything until it uses it. A `:dep` of the same name replaces the line.
pub const CELL_CRATES: &[&str] = &["anyhow = \"1\"", "rand = \"0.8\"", "tch = \"*\""];

/// The prelude's types whose methods Tab completes before rust-analyzer is warm (saved at
/// install, `Prelude::member_types`), as a cell names them.
const PRELUDE_MEMBER_TYPES: &[&str] = &[
    "Tensor",
    "Device",
    "Kind",
    "Scalar",
    "TchError",
    "nn::VarStore",
    "nn::Path<'static>",
    "nn::Sequential",
    "nn::SequentialT",
    "nn::Linear",
    "nn::Conv2D",
    "nn::BatchNorm",
    "nn::LayerNorm",
    "nn::Embedding",
    "nn::LSTM",
    "nn::Optimizer",
    "nn::Adam",
    "nn::Sgd",
    "ImageFolder",
    "TensorDataset",
    "DataLoader<ImageFolder>",
    "StateDict",
    "LoadReport",
    "LinePlot",
    "LiveChart",
    "Job",
    "Distributed",
];

pub struct Settings {
    pub cache: Option<BuildCache>,
    pub prelude_dir: Option<PathBuf>,
    pub lockfile: Option<PathBuf>,
    /// This kernel's generated tch and torch-sys (see [`Settings::crate_patches`]).
    pub bindings: Option<PathBuf>,
    pub libtorch: Option<PathBuf>,
    pub torch_version: Option<String>,
    pub opt_level: String,
    pub linker: String,
    pub offline: bool,
    /// How long an interrupted cell gets to reach a check for interrupts before the child is
    /// restarted (`TCH_KERNEL_INTERRUPT_GRACE`, seconds).
    pub interrupt_grace: std::time::Duration,
    /// Insert an interrupt poll into every loop of cell code (`TCH_KERNEL_LOOP_POLL=0` turns it
    /// off: for the benchmark that measures what it costs).
    pub loop_polls: LoopPolls,
    /// This notebook's variable snapshots (see [`Settings::use_snapshots_for`]).
    pub snapshots: Option<SnapshotConfig>,
    /// `TCH_KERNEL_ANALYZER=first`: rust-analyzer warms up at start and answers Tab first
    /// (about 700 MB more per kernel); by default it loads only when the names saved at
    /// install have no answer.
    pub analyzer_first: bool,
    /// `TCH_KERNEL_DEBUG_ADAPTER`: the DAP adapter breakpoints stop with (a path, or a name on
    /// `PATH`); unset, the newest lldb-dap on `PATH`.
    pub debug_adapter: Option<PathBuf>,
    /// Evaluation processes are forked by the user's zygote, which has libtorch loaded
    /// (`crates/eval-zygote`); `TCH_KERNEL_ZYGOTE=off` starts each as a subprocess instead.
    pub zygote: bool,
}

impl Settings {
    /// The DAP adapter JupyterLab's debugger stops at breakpoints with, if one is there.
    pub fn debug_adapter(&self) -> Option<PathBuf> {
        dap_client::find_adapter(self.debug_adapter.as_deref(), std::env::var_os("PATH"))
    }

    pub fn from_env() -> Settings {
        Settings {
            cache: var(child_protocol::env::kernelspec::CACHE_DIR)
                .map(|root| own_instances(BuildCache::new(root))),
            prelude_dir: var(child_protocol::env::kernelspec::PRELUDE).map(PathBuf::from),
            lockfile: var(child_protocol::env::kernelspec::LOCKFILE).map(PathBuf::from),
            bindings: var(child_protocol::env::kernelspec::BINDINGS).map(PathBuf::from),
            libtorch: var("LIBTORCH").map(PathBuf::from),
            torch_version: var(child_protocol::env::kernelspec::TORCH_VERSION),
            opt_level: var(child_protocol::env::kernelspec::OPT_LEVEL)
                .unwrap_or_else(|| "1".to_owned()),
            // Measured: mold saves nothing per cell here (the cell's link is small).
            linker: var(child_protocol::env::kernelspec::LINKER)
                .unwrap_or_else(|| "system".to_owned()),
            offline: var("CARGO_NET_OFFLINE").is_some_and(|v| v == "true" || v == "1"),
            interrupt_grace: std::time::Duration::from_secs_f64(
                var(child_protocol::env::kernelspec::INTERRUPT_GRACE)
                    .and_then(|v| v.parse().ok())
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .unwrap_or(3.0),
            ),
            loop_polls: LoopPolls::from_setting(
                var(child_protocol::env::kernelspec::LOOP_POLL).as_deref(),
            ),
            snapshots: None,
            analyzer_first: var(child_protocol::env::kernelspec::ANALYZER)
                .is_some_and(|v| v == "first"),
            debug_adapter: var(child_protocol::env::kernelspec::DEBUG_ADAPTER).map(PathBuf::from),
            zygote: !var(child_protocol::env::kernelspec::ZYGOTE)
                .is_some_and(|v| v == "off" || v == "0"),
        }
    }

    /// Snapshots for the notebook this kernel serves: the one Jupyter Server names
    /// (`JPY_SESSION_NAME`), else this kernel's connection file (which a restart by the client
    /// keeps). Needs the prelude; off with `TCH_KERNEL_SNAPSHOTS=off`.
    pub fn use_snapshots_for(&mut self, connection_file: &Path) {
        let choice = var(child_protocol::env::kernelspec::SNAPSHOTS);
        if self.prelude_dir.is_none() || choice.as_deref().is_some_and(|v| v == "off" || v == "0") {
            return;
        }
        let base = match (choice, &self.cache) {
            (Some(dir), _) => PathBuf::from(dir),
            (None, Some(cache)) => cache.snapshots_dir(),
            (None, None) => return,
        };
        let notebook = var("JPY_SESSION_NAME").unwrap_or_else(|| {
            let file = std::fs::canonicalize(connection_file)
                .unwrap_or_else(|_| connection_file.to_owned());
            format!("{}{}", rust_evaluator::CONNECTION_FILE_KEY, file.display())
        });
        self.snapshots = Some(SnapshotConfig {
            dir: base.join(snapshot_key(&notebook)),
            notebook,
            prelude_path: "::tch_prelude".to_owned(),
        });
    }

    /// This kernel's private build dir: in the cache when there is one, else under $TMPDIR.
    pub fn build_dir(&self) -> PathBuf {
        match &self.cache {
            Some(cache) => cache.instance_dir(),
            None => std::env::temp_dir().join(format!("tch-kernel-{}", std::process::id())),
        }
    }

    pub fn prelude(&self) -> Option<Prelude> {
        let dir = self.prelude_dir.as_ref()?;
        let mut dependencies = vec![format!(
            "tch-prelude = {{ path = {} }}",
            child_protocol::env::toml_string(&dir.display().to_string())
        )];
        dependencies.extend(CELL_CRATES.iter().map(|c| c.to_string()));
        Some(Prelude {
            dependencies,
            import: "use tch_prelude::*;".to_owned(),
            warm_up: "Tensor::zeros([1], (Kind::Float, Device::Cpu))".to_owned(),
            variable_describer: Some(format!(
                "::tch_prelude::{}",
                child_protocol::VARIABLE_DESCRIBER_MACRO
            )),
            member_types: PRELUDE_MEMBER_TYPES.iter().map(|t| t.to_string()).collect(),
            optimized_crates: child_protocol::env::PRELUDE_OPTIMIZED_CRATES
                .iter()
                .map(|c| c.to_string())
                .collect(),
        })
    }

    /// `keep`: leave the build dir in place afterwards (to publish it as the prebuilt one).
    pub fn evaluator_config(&self, build_dir: PathBuf, keep: bool) -> EvaluatorConfig {
        EvaluatorConfig {
            opt_level: self.opt_level.clone(),
            offline: self.offline,
            linker: self.linker.clone(),
            build_dir,
            // Kernels start from the installer's build; a re-install starts from the previous one.
            seed_from: self.cache.as_ref().map(|c| c.prebuilt_dir().join("build")),
            // The installer's prebuild goes through cargo, which checks everything.
            seed_is_current: !keep
                && self.cache.as_ref().is_some_and(|c| {
                    c.prebuilt_is_current(&self.build_stamp(), &self.prelude_sources())
                }),
            keep_build_dir: keep,
            prelude: self.prelude(),
            lockfile: self.lockfile.clone(),
            crate_patches: self.crate_patches(),
            // Not for the installer's prebuild, which only compiles; and only for a kernel that
            // asks rust-analyzer first (otherwise it loads when the saved names have nothing).
            warm_up_analyzer: !keep && self.analyzer_first,
            analyzer_first: self.analyzer_first,
            interrupt_grace: self.interrupt_grace,
            loop_polls: self.loop_polls,
            // The kernel's debugger, if it has one, is set by `run_kernel`.
            debugger: None,
            // The prelude dylib loads libtorch; cells need not read its libraries to link.
            link_stand_in_dirs: self.libtorch.iter().map(|l| l.join("lib")).collect(),
            // Loaded by the kernel, which completes from them before the evaluator starts.
            known_names: Default::default(),
            variables: Default::default(),
            snapshots: self.snapshots.clone(),
        }
    }

    /// The crates cells take from this kernel's bindings dir instead of crates.io.
    pub fn crate_patches(&self) -> Vec<(String, PathBuf)> {
        self.bindings
            .as_deref()
            .map(child_protocol::env::generated_crates_in)
            .unwrap_or_default()
    }

    /// What the prelude is built from: its crate dir, those of its path dependencies (found
    /// through their manifests' `path = "..."`), this kernel's generated crates, and the
    /// lockfile.
    fn prelude_sources(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.prelude_dir.iter().cloned().collect();
        dirs.extend(self.crate_patches().into_iter().map(|(_, dir)| dir));
        let mut next = 0;
        while let Some(dir) = dirs.get(next).cloned() {
            next += 1;
            let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
            for path in manifest.split("path = \"").skip(1) {
                let Some(path) = path.split('"').next() else {
                    continue;
                };
                let dep = dir.join(path);
                let dep = std::fs::canonicalize(&dep).unwrap_or(dep);
                if !dirs.contains(&dep) {
                    dirs.push(dep);
                }
            }
        }
        dirs.extend(self.lockfile.iter().cloned());
        dirs
    }

    /// What a prebuilt prelude depends on. A kernel whose stamp differs from the one in the
    /// cache (another checkout, libtorch, opt-level or linker) would rebuild it at every start.
    pub fn build_stamp(&self) -> String {
        let show = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        format!(
            "prelude={}\nlockfile={}\nlibtorch={}\nopt_level={}\nlinker={}\noptimized={}\n",
            show(&self.prelude_dir),
            show(&self.lockfile),
            show(&self.libtorch),
            self.opt_level,
            self.linker,
            child_protocol::env::PRELUDE_OPTIMIZED_CRATES.join(",")
        )
    }

    /// Libraries the evaluation child loads when it starts, before any cell:
    /// - `libtorch_cpu.so`: every cell needs it (through the prelude), and loading it takes
    ///   ~0.2 s; the child loads it while the kernel compiles the first cell instead of after.
    /// - `libtorch_cuda.so`, when this libtorch has it. Nothing references it directly, so
    ///   without this libtorch runs without CUDA. It is loaded on a node without a GPU too, as a
    ///   program built with tch's link flags (tch's examples, `tch-kernel export`) loads it, so
    ///   that a cell behaves as that program: `tch::utils::version_cudnn()` answers instead of
    ///   failing, `Cuda::is_available()` is false. It costs 0.14 s (while the first cell
    ///   compiles) and about 270 MB of the child's RSS, half of it shared file pages; PyTorch's
    ///   `import torch` loads it as well.
    pub fn child_preload(&self) -> Vec<PathBuf> {
        let Some(libtorch) = &self.libtorch else {
            return vec![];
        };
        preload_from(&libtorch.join("lib"))
    }
}

/// A notebook's snapshot directory name: a hash of its whole path (FNV-1a: stable across
/// builds), so two notebooks never share, and the name says nothing of the notebook to someone
/// listing the directory (its path is inside, in the private `notebook`).
fn snapshot_key(notebook: &str) -> String {
    format!("nb-{:016x}", child_protocol::fnv1a(notebook.as_bytes()))
}

/// A cache this user cannot write (a course's, installed by its teacher) is used read-only: the
/// kernel's build dir goes to the user's own cache instead.
fn own_instances(cache: BuildCache) -> BuildCache {
    if cache.instances_writable() {
        return cache;
    }
    let Some(base) = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| Path::new(&h).join(".cache")))
    else {
        return cache;
    };
    let key: String = cache
        .root()
        .display()
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let own = cache
        .clone()
        .with_instances_in(base.join("tch-kernel").join("shared").join(key));
    log::info!(
        "{} is read-only here: build dirs go to {}",
        cache.root().display(),
        own.instance_dir().display()
    );
    own
}

fn preload_from(lib: &Path) -> Vec<PathBuf> {
    ["libtorch_cpu.so", "libtorch_cuda.so"]
        .into_iter()
        .map(|name| lib.join(name))
        .filter(|path| path.exists())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::preload_from;

    #[test]
    fn prelude_sources_follow_path_dependencies() {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let settings = super::Settings {
            prelude_dir: std::fs::canonicalize(repo.join("crates/tch-prelude")).ok(),
            lockfile: Some(repo.join("Cargo.lock")),
            ..super::Settings::from_env()
        };
        let names: Vec<String> = settings
            .prelude_sources()
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        for crate_dir in [
            "tch-prelude",
            "notebook-helpers",
            "child-protocol",
            "loop-chunks",
            "Cargo.lock",
        ] {
            assert!(names.iter().any(|n| n == crate_dir), "{names:?}");
        }
        assert!(!names.iter().any(|n| n == "rust-evaluator"), "{names:?}");
    }

    #[test]
    fn the_child_preloads_libtorch_cpu_and_cuda_when_there() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            preload_from(dir.path()).is_empty(),
            "a libtorch without them"
        );
        let cpu = dir.path().join("libtorch_cpu.so");
        std::fs::write(&cpu, b"").unwrap();
        assert_eq!(preload_from(dir.path()), vec![cpu.clone()], "a CPU build");
        let cuda = dir.path().join("libtorch_cuda.so");
        std::fs::write(&cuda, b"").unwrap();
        assert_eq!(preload_from(dir.path()), vec![cpu, cuda], "a CUDA build");
    }
}
