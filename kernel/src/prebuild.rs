//! `tch-kernel prebuild` (the installer builds the prelude once, for every later kernel) and
//! what a kernel says at start about that build.

use crate::settings::Settings;
use anyhow::{Context, Result};
use rust_evaluator::{DisplayEvent, Evaluator, OutputSink, PrebuiltState, Stream};
use std::sync::Arc;

/// At kernel start: removes dead kernels' build dirs, and warns (in the server's log) when the
/// prebuilt prelude is missing or was built for another installation: this kernel then builds
/// its own before the first cell runs. The notice for that first cell, which would otherwise
/// wait minutes with no word.
pub fn check_prebuilt(settings: &Settings) -> Option<String> {
    let cache = settings.cache.as_ref()?;
    cache.collect_garbage();
    settings.prelude_dir.as_ref()?;
    let root = cache.root().display();
    // The stamp (which installation built it) goes to the log only.
    let (why, stamp) = match cache.prebuilt_state(&settings.build_stamp()) {
        PrebuiltState::Current => return None,
        PrebuiltState::Missing => (
            format!("there is no prebuilt prelude in {root}"),
            String::new(),
        ),
        PrebuiltState::Other(stamp) => (
            format!("the prebuilt prelude in {root} was built for another installation"),
            format!("\nits stamp:\n{stamp}"),
        ),
    };
    let notice = format!(
        "tch-kernel: {why}, so this kernel builds its own tch prelude before its first cell runs (a minute or more, at every kernel start). Run install.sh again to prebuild it once for all kernels, or give each installation its own --cache-dir.\n"
    );
    log::warn!("{}{stamp}", notice.trim_end());
    Some(notice)
}

/// `tch-kernel prebuild`: builds the prelude into the cache's `prebuilt/` for all later kernels.
pub fn prebuild(settings: Settings) -> Result<()> {
    let cache = settings
        .cache
        .clone()
        .context("TCH_KERNEL_CACHE_DIR is not set")?;
    settings
        .prelude_dir
        .as_ref()
        .context("TCH_KERNEL_PRELUDE is not set")?;
    let staging = cache.staging_dir();
    let _ = std::fs::remove_dir_all(&staging);
    // SAFETY: single-threaded so far.
    unsafe { rust_evaluator::use_build_dir(&staging) };
    let started = std::time::Instant::now();
    let mut evaluator = Evaluator::start(
        &settings.evaluator_config(staging.clone(), true),
        Arc::new(ConsoleSink),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let check = "(Tensor::from_slice(&[1.0f32, 2.0]) * 2).sum(Kind::Float).double_value(&[])";
    let value = evaluator
        .eval(check, &|_| Err("no input during prebuild".into()))
        .map_err(|e| anyhow::anyhow!("the prelude does not work: {e}"))?;
    anyhow::ensure!(
        value
            .data
            .iter()
            .any(|(m, v)| m == "text/plain" && v == "6.0"),
        "the prelude gave a wrong result: {:?}",
        value.data
    );
    // Names for Tab while a kernel's own rust-analyzer is still warming up.
    let names = staging.join("build").join(rust_evaluator::KNOWN_NAMES_FILE);
    let types = settings
        .prelude()
        .map(|p| p.member_types)
        .unwrap_or_default();
    if let Err(e) = evaluator.save_known_names(&names, &types) {
        log::warn!("cannot save completion names to {}: {e}", names.display());
    }
    drop(evaluator);
    cache
        .publish(&staging, &settings.build_stamp())
        .with_context(|| {
            format!(
                "cannot publish the build into {}",
                cache.prebuilt_dir().display()
            )
        })?;
    println!(
        "prelude built in {:.0?} into {}",
        started.elapsed(),
        cache.prebuilt_dir().display()
    );
    Ok(())
}

/// Prints engine output during `prebuild`.
struct ConsoleSink;

impl OutputSink for ConsoleSink {
    fn write(&self, _stream: Stream, text: &str) {
        eprint!("{text}");
    }

    fn display(&self, _event: DisplayEvent) {}
}
