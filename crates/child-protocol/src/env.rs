//! The environment variables the installer, the kernel, the evaluation child, the prelude and
//! programs started from a cell agree on, each named once.

/// Kernelspec settings: `install.sh` writes them into the kernelspec's `env`, the kernel reads
/// them (see the kernel's `settings.rs` for what each means).
pub mod kernelspec {
    pub const CACHE_DIR: &str = "TCH_KERNEL_CACHE_DIR";
    pub const PRELUDE: &str = "TCH_KERNEL_PRELUDE";
    pub const LOCKFILE: &str = "TCH_KERNEL_LOCKFILE";
    pub const TORCH_VERSION: &str = "TCH_KERNEL_TORCH_VERSION";
    pub const TCH_VERSION: &str = "TCH_KERNEL_TCH_VERSION";
    /// A directory holding [`super::GENERATED_CRATES`] made for this kernel's PyTorch (unset:
    /// the tch release of the lockfile, from crates.io).
    pub const BINDINGS: &str = "TCH_KERNEL_BINDINGS";
    pub const OPT_LEVEL: &str = "TCH_KERNEL_OPT_LEVEL";
    pub const LINKER: &str = "TCH_KERNEL_LINKER";
    pub const INTERRUPT_GRACE: &str = "TCH_KERNEL_INTERRUPT_GRACE";
    pub const LOOP_POLL: &str = "TCH_KERNEL_LOOP_POLL";
    pub const SNAPSHOTS: &str = "TCH_KERNEL_SNAPSHOTS";
    /// `first`: rust-analyzer warms up at start and answers Tab before the saved names.
    pub const ANALYZER: &str = "TCH_KERNEL_ANALYZER";
    /// The DAP adapter JupyterLab's debugger stops at breakpoints with (a path, or a name on
    /// `PATH`); unset: the newest `lldb-dap` / `lldb-vscode` on `PATH`.
    pub const DEBUG_ADAPTER: &str = "TCH_KERNEL_DEBUG_ADAPTER";
    /// `off`: the kernel starts its evaluation process itself instead of having it forked by
    /// the user's zygote (one per node, kernelspec and job, which has libtorch loaded).
    pub const ZYGOTE: &str = "TCH_KERNEL_ZYGOTE";
    /// The kernel's log filter (`env_logger` syntax).
    pub const LOG: &str = "TCH_KERNEL_LOG";
    /// Where the kernel keeps its history.
    pub const DATA_DIR: &str = "TCH_KERNEL_DATA_DIR";
}

/// The crates of a kernel's bindings dir ([`kernelspec::BINDINGS`]): the vendored tch and
/// torch-sys with files crates/torch-bindgen generated for that PyTorch, each in a subdirectory
/// of its name. Cells, the prelude and exported programs take them instead of crates.io's
/// (`[patch.crates-io]`).
pub const GENERATED_CRATES: [&str; 2] = ["tch", "torch-sys"];

/// Each of [`GENERATED_CRATES`] with its directory in the bindings dir `dir`: what cells and
/// exported programs patch in.
pub fn generated_crates_in(dir: &std::path::Path) -> Vec<(String, std::path::PathBuf)> {
    GENERATED_CRATES
        .iter()
        .map(|name| (name.to_string(), dir.join(name)))
        .collect()
}

/// A manifest's `[patch.crates-io]` section taking each crate of `patches` from its directory
/// (empty without patches): the cells' crate and exported programs write the same.
pub fn crates_io_patch(patches: &[(String, std::path::PathBuf)]) -> String {
    if patches.is_empty() {
        return String::new();
    }
    let mut section = String::from("[patch.crates-io]\n");
    for (name, dir) in patches {
        let dir = toml_string(&dir.display().to_string());
        section.push_str(&format!("{name} = {{ path = {dir} }}\n"));
    }
    section
}

/// The prelude's crates that decode and resize images: the cells' manifest builds them fully
/// optimized, without debug assertions or overflow checks, whatever the cells' opt-level (1 by
/// default, which made the data loader about 30% slower). Cells are not affected.
pub const PRELUDE_OPTIMIZED_CRATES: &[&str] = &[
    "tch-data",
    "zune-jpeg",
    "zune-core",
    "fast_image_resize",
    "png",
    "fdeflate",
    "flate2",
    "miniz_oxide",
    "crc32fast",
    "simd-adler32",
];

/// A manifest's `[profile.dev.package.<crate>]` sections building `crates` at opt-level 3
/// (empty without crates).
pub fn optimized_profiles(crates: &[String]) -> String {
    crates
        .iter()
        .map(|name| {
            format!(
                "[profile.dev.package.{}]\nopt-level = 3\ndebug-assertions = false\noverflow-checks = false\n",
                toml_string(name)
            )
        })
        .collect()
}

/// `s` as a TOML basic string (quoted, `\` and `"` escaped), for manifests and cargo configs.
pub fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Set by the engine in the evaluation child: the kernel's executable, started again, runs
/// cells instead of serving Jupyter.
pub const IS_RUNTIME: &str = "EVCXR_IS_RUNTIME";
/// Set by the kernel: shared libraries (colon-separated paths) the child loads first, with
/// `RTLD_GLOBAL` (`libtorch_cuda.so`, which nothing references directly).
pub const CHILD_PRELOAD: &str = "TCH_KERNEL_CHILD_PRELOAD";
/// Set by a kernel that has its evaluation child forked by another process (its zygote, which
/// has libtorch loaded): the kernel's pid, which the child watches (it exits with the kernel)
/// and lets attach a debugger. Unset: the child's parent is the kernel.
pub const KERNEL_PID: &str = "TCH_KERNEL_PID";
/// Set by the kernel for the zygote it starts: the abstract socket name the zygote listens on.
pub const ZYGOTE_SOCKET: &str = "TCH_KERNEL_ZYGOTE_SOCKET";
/// Set by the kernel: its own executable, which `submit()` runs for `tch-kernel export`. Passed
/// on to programs and jobs (not in [`KERNEL_ONLY`]): a job's program may submit another notebook.
pub const KERNEL_EXE: &str = "TCH_KERNEL_EXE";
/// Set by the kernel: where the engine finds its settings.
pub const ENGINE_CONFIG_DIR: &str = "EVCXR_CONFIG_DIR";
/// Set by the kernel: the engine skips its own warm-up compile (the kernel's first cell is one).
pub const SKIP_WARM_UP_EVAL: &str = "EVCXR_SKIP_WARM_UP_EVAL";
pub use crate::snapshot_format::SNAPSHOT_DIR_ENV;
pub use crate::{INTERRUPT_COUNTER_ENV, PASSWORDS_ENV};

/// Everything the kernel and the evaluation child set for themselves: a build or a job started
/// from a cell must not inherit them (the program would think it runs in a kernel).
pub const KERNEL_ONLY: [&str; 9] = [
    IS_RUNTIME,
    KERNEL_PID,
    ZYGOTE_SOCKET,
    CHILD_PRELOAD,
    ENGINE_CONFIG_DIR,
    SKIP_WARM_UP_EVAL,
    SNAPSHOT_DIR_ENV,
    INTERRUPT_COUNTER_ENV,
    PASSWORDS_ENV,
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    #[test]
    fn optimized_crates_get_a_profile_section_each() {
        let crates = vec!["zune-jpeg".to_owned(), "tch-data".to_owned()];
        let toml = optimized_profiles(&crates);
        assert_eq!(toml.matches("opt-level = 3").count(), 2);
        assert!(toml.starts_with("[profile.dev.package.\"zune-jpeg\"]\nopt-level = 3\n"));
        assert!(toml.contains("overflow-checks = false"));
        assert_eq!(optimized_profiles(&[]), "");
    }

    #[test]
    fn a_bindings_dir_patches_each_generated_crate() {
        let patches = generated_crates_in(Path::new("/c/b \"x\""));
        assert_eq!(
            patches[0],
            ("tch".to_owned(), PathBuf::from("/c/b \"x\"/tch"))
        );
        assert_eq!(
            crates_io_patch(&patches),
            "[patch.crates-io]\ntch = { path = \"/c/b \\\"x\\\"/tch\" }\n\
             torch-sys = { path = \"/c/b \\\"x\\\"/torch-sys\" }\n"
        );
        assert_eq!(crates_io_patch(&[]), "");
        assert_eq!(toml_string(r"C:\a"), r#""C:\\a""#);
    }
}
