//! tch's generated bindings, made from the operator declarations of a PyTorch: the C shim
//! (`torch_api_generated.{cpp,h}`), torch-sys's FFI (`c_generated.rs`) and `Tensor`'s methods
//! (`tensor_generated.rs`, `tensor_fallible_generated.rs`).
//!
//! A port of tch-rs's OCaml generator (`gen/gen.ml`): same filters, names, overload suffixes and
//! text, so that for the declarations tch was generated from the output equals tch's files
//! (tests/test_bindgen.py checks it against tch's releases). The declarations come from the
//! environment's own torchgen (`torchgen.rs`), so a PyTorch without a tch release gets bindings
//! for exactly its operators.

pub mod compat;
pub mod declarations;
pub mod emit;
pub mod filters;
pub mod naming;
pub mod torchgen;

use std::path::{Path, PathBuf};

/// A generated file: where it goes inside tch's sources (`tch/...` or `torch-sys/...`).
pub struct Generated {
    pub path: &'static str,
    pub text: String,
}

/// The generated files' places in tch-rs's tree, as the vendored crates hold them.
pub mod paths {
    pub const CPP: &str = "torch-sys/libtch/torch_api_generated.cpp";
    pub const HEADER: &str = "torch-sys/libtch/torch_api_generated.h";
    pub const FFI: &str = "torch-sys/src/c_generated.rs";
    pub const WRAPPER: &str = "tch/src/wrappers/tensor_generated.rs";
    pub const FALLIBLE: &str = "tch/src/wrappers/tensor_fallible_generated.rs";
    pub const ALL: [&str; 5] = [CPP, HEADER, FFI, WRAPPER, FALLIBLE];
    /// The PyTorch version they were made for: torch-sys's build script checks libtorch's.
    pub const GENERATED_FOR: &str = "torch-sys/libtch/generated-for";
    /// tch's rustfmt settings, which its generated Rust files are formatted with.
    pub const RUSTFMT_TOML: &str = "tch/rustfmt.toml";
}

/// `torch.__version__` of the torch in `site_packages` (from `torch/version.py`).
pub fn torch_version(site_packages: &Path) -> Option<String> {
    let text = std::fs::read_to_string(site_packages.join("torch/version.py")).ok()?;
    text.lines().find_map(|line| {
        let value = line
            .strip_prefix("__version__")?
            .trim_start()
            .strip_prefix('=')?;
        let value = value.trim().trim_matches(|c| c == '\'' || c == '"');
        Some(value.to_owned())
    })
}

/// Whether `path` is one of the files [`generate`] writes under `root`.
pub fn is_generated(root: &Path, path: &Path) -> bool {
    paths::ALL
        .iter()
        .chain([&paths::GENERATED_FOR])
        .any(|p| root.join(p) == path)
}

/// `text` (Rust) formatted as tch formats its generated files (rustfmt with tch's settings),
/// so that they are the same text as tch's own; they compile either way.
pub fn rustfmt(text: &str) -> std::io::Result<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::var_os("RUSTFMT").unwrap_or_else(|| "rustfmt".into()))
        .args([
            "--edition",
            "2021",
            "--config",
            "use_small_heuristics=Max",
            "--emit",
            "stdout",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = text.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    writer.join().expect("the writer does not panic")?;
    if !out.status.success() {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    String::from_utf8(out.stdout).map_err(std::io::Error::other)
}

impl Generated {
    /// Whether this is one of the Rust files (which [`rustfmt`] formats).
    pub fn is_rust(&self) -> bool {
        self.path.ends_with(".rs")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Declarations(#[from] declarations::DeclarationsError),
    #[error(transparent)]
    Naming(#[from] naming::NameClash),
}

/// What [`generate`] made.
pub struct Bindings {
    pub files: Vec<Generated>,
    /// How many functions they bind.
    pub count: usize,
    /// Operators tch 0.26 had that these declarations lack, kept on their replacement.
    pub kept: Vec<&'static str>,
}

/// The five files for the declarations `yaml` (torchgen's `Declarations.yaml`).
pub fn generate(yaml: &str) -> Result<Bindings, GenerateError> {
    let mut funcs = naming::name_overloads(declarations::read(yaml)?)?;
    let kept = compat::keep_removed(&mut funcs);
    let (cpp, header) = emit::cpp(&funcs);
    let files = vec![
        Generated {
            path: paths::CPP,
            text: cpp,
        },
        Generated {
            path: paths::HEADER,
            text: header,
        },
        Generated {
            path: paths::FFI,
            text: emit::ffi(&funcs),
        },
        Generated {
            path: paths::WRAPPER,
            text: emit::wrapper(&funcs),
        },
        Generated {
            path: paths::FALLIBLE,
            text: emit::fallible_wrapper(&funcs),
        },
    ];
    Ok(Bindings {
        files,
        count: funcs.len(),
        kept,
    })
}

/// Writes `text` to `path` unless it already holds it: cargo rebuilds a path crate (minutes
/// for tch's C++ shim) when a file's mtime changes, so a reinstall that generates the same
/// bindings must leave them untouched.
pub fn write_if_changed(path: &Path, text: &[u8]) -> std::io::Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Whole or not at all: a build never reads half a file.
    let tmp = path.with_extension("torch-bindgen-tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

/// Writes `files` under `root` (which holds `tch/` and `torch-sys/`); returns the paths that
/// changed.
pub fn write(files: &[Generated], root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    for f in files {
        let path = root.join(f.path);
        if write_if_changed(&path, f.text.as_bytes())? {
            changed.push(path);
        }
    }
    Ok(changed)
}

/// Makes `to` a copy of the directory `from` (the vendored crate), writing only files whose
/// content differs and removing files `from` lacks; files for which `generated` says true (by
/// their path under `to`) are left to the generator. Returns how many files it wrote.
pub fn mirror_dir(
    from: &Path,
    to: &Path,
    generated: &dyn Fn(&Path) -> bool,
) -> std::io::Result<usize> {
    let mut written = 0;
    std::fs::create_dir_all(to)?;
    let mut names = std::collections::HashSet::new();
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (source, dest) = (entry.path(), to.join(entry.file_name()));
        names.insert(entry.file_name());
        if entry.file_type()?.is_dir() {
            written += mirror_dir(&source, &dest, generated)?;
        } else if !generated(&dest) && write_if_changed(&dest, &std::fs::read(&source)?)? {
            written += 1;
        }
    }
    for entry in std::fs::read_dir(to)? {
        let entry = entry?;
        if !names.contains(&entry.file_name()) {
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    Ok(written)
}
