//! `torch-bindgen`: tch's generated bindings for the torch of a Python environment (install.sh
//! runs it for a PyTorch that no tch release was made for).

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Generate tch's bindings from a PyTorch's own operator declarations")]
struct Args {
    /// torchgen's Declarations.yaml (else made with --python from --site-packages' torchgen).
    #[arg(long, conflicts_with_all = ["site_packages", "python"])]
    declarations: Option<PathBuf>,
    /// The site-packages holding torch and torchgen.
    #[arg(long, requires = "python")]
    site_packages: Option<PathBuf>,
    /// A Python with PyYAML to run torchgen with.
    #[arg(long)]
    python: Option<PathBuf>,
    /// The PyTorch version they are for (default: read from --site-packages' torch).
    #[arg(long)]
    torch_version: Option<String>,
    /// Leave the Rust files as generated (rustfmt formats them as tch's by default).
    #[arg(long)]
    no_rustfmt: bool,
    /// The vendored crates (a dir with tch/ and torch-sys/) to copy into --out first.
    #[arg(long)]
    crates_from: Option<PathBuf>,
    /// Where to write: the files go to tch/... and torch-sys/... under it.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let declarations = match (&args.declarations, &args.site_packages, &args.python) {
        (Some(d), _, _) => d.clone(),
        (None, Some(site), Some(python)) => {
            let torchgen = torch_bindgen::torchgen::torchgen_dir(site)?;
            torch_bindgen::torchgen::declarations(python, &torchgen, &args.out)
                .context("making Declarations.yaml with torchgen")?
        }
        _ => anyhow::bail!("pass --declarations FILE, or --site-packages DIR with --python PATH"),
    };
    if let Some(from) = &args.crates_from {
        for name in child_protocol::env::GENERATED_CRATES {
            let generated = |path: &std::path::Path| torch_bindgen::is_generated(&args.out, path);
            torch_bindgen::mirror_dir(&from.join(name), &args.out.join(name), &generated)
                .with_context(|| {
                    format!(
                        "copying {} into {}",
                        from.join(name).display(),
                        args.out.display()
                    )
                })?;
        }
    }
    let version = args
        .torch_version
        .clone()
        .or_else(|| {
            args.site_packages
                .as_deref()
                .and_then(torch_bindgen::torch_version)
        })
        .context("which PyTorch are these declarations of? pass --torch-version")?;
    let yaml = std::fs::read_to_string(&declarations)
        .with_context(|| format!("reading {}", declarations.display()))?;
    let mut bindings = torch_bindgen::generate(&yaml)
        .with_context(|| format!("generating from {}", declarations.display()))?;
    if !args.no_rustfmt {
        for file in bindings.files.iter_mut().filter(|f| f.is_rust()) {
            match torch_bindgen::rustfmt(&file.text) {
                Ok(text) => file.text = text,
                // Cosmetic: the files compile as they are.
                Err(e) => eprintln!(
                    "warning: rustfmt failed ({e}): {} left unformatted",
                    file.path
                ),
            }
        }
    }
    torch_bindgen::write(&bindings.files, &args.out)
        .with_context(|| format!("writing into {}", args.out.display()))?;
    let generated_for = args.out.join(torch_bindgen::paths::GENERATED_FOR);
    torch_bindgen::write_if_changed(&generated_for, format!("{version}\n").as_bytes())
        .with_context(|| format!("writing {}", generated_for.display()))?;
    println!(
        "{} functions bound for PyTorch {version} from {}",
        bindings.count,
        declarations.display()
    );
    if !bindings.kept.is_empty() {
        println!(
            "removed upstream, kept on their replacement: {}",
            bindings.kept.join(", ")
        );
    }
    Ok(())
}
