// Copyright 2020 The Evcxr Authors.
//
// Licensed under the Apache License, Version 2.0 <LICENSE or
// https://www.apache.org/licenses/LICENSE-2.0> or the MIT license <LICENSE
// or https://opensource.org/licenses/MIT>, at your option. This file may not be
// copied, modified, or distributed except according to those terms.

#[cfg(all(unix, not(target_os = "freebsd")))]
#[macro_use]
extern crate sig;

#[macro_use]
mod errors;
mod cargo_metadata;
mod child_process;
mod code_block;
mod command_context;
mod crash_guard;
mod crate_config;
// tch-kernel: `:dep` resolves beside the build (see FORK.md).
mod dep_resolution;
mod eval_context;
#[allow(dead_code)]
mod evcxr_internal_runtime;
mod item;
mod module;
mod reuse;
mod runtime;
mod rust_analyzer;
mod spawn;
mod statement_splitter;
mod toml_parse;
// tch-kernel: variable types from the cell's own build.
mod type_probe;
mod use_trees;

pub use crate::command_context::CommandContext;
pub use crate::command_context::markdown_to_html;
pub use crate::module::BuildProgress;

/// tch-kernel: the Rust edition cells are compiled (and parsed) in: 2021, the edition of tch's
/// examples and of most Rust code people paste. Edition 2024 rejects much of it: `rng.gen()` of
/// rand 0.8 (`gen` is a keyword), `extern` blocks without `unsafe`, `#[no_mangle]`,
/// `std::env::set_var` outside `unsafe`, and `fn f(vs: &Path) -> impl Module` used as
/// `f(&vs.root())` (2024 captures the borrow). Exported programs use it too.
pub const CELL_EDITION: &str = "2021";
pub use crate::code_block::CellLine;
pub use crate::errors::CompilationError;
pub use crate::errors::Error;
pub use crate::errors::Theme;
pub use crate::eval_context::BORROWED_VARIABLE;
pub use crate::eval_context::CELL_FN_PREFIX;
pub use crate::eval_context::CellDebugger;
pub use crate::eval_context::DebugBuild;
pub use crate::eval_context::EXECUTION_PHASE;
pub use crate::eval_context::EvalCallbacks;
pub use crate::eval_context::EvalContext;
pub use crate::eval_context::EvalContextOutputs;
pub use crate::eval_context::EvalOutputs;
pub use crate::eval_context::REUSED_BUILD_PHASE;
pub use crate::module::CRATE_NAME as CELL_CRATE_NAME;
// tch-kernel: lets the embedder skip the start-up warm-up eval.
pub use crate::child_process::ProcessHandle;
pub use crate::eval_context::SKIP_WARM_UP_EVAL_ENV;
pub use crate::runtime::runtime_hook;
pub use crate::spawn::{
    ChildSpawner, EvalProcess, SpawnedProcess, set_child_spawner, spawn_subprocess,
};
// tch-kernel: how a variable's type is shown.
pub use crate::type_probe::short_type_name;
pub use rust_analyzer::ANALYZER_THREAD;
pub use rust_analyzer::Completions;

/// Return the directory that evcxr tools should use for their configuration.
///
/// By default this is the `evcxr` subdirectory of whatever `dirs::config_dir()`
/// returns, but it can be overridden by the `EVCXR_CONFIG_DIR` environment
/// variable.
pub fn config_dir() -> Option<std::path::PathBuf> {
    std::env::var_os(child_protocol::env::ENGINE_CONFIG_DIR)
        .map(std::path::PathBuf::from)
        .or_else(|| dirs::config_dir().map(|d| d.join("evcxr")))
}

#[cfg(test)]
mod edition_tests {
    #[test]
    fn the_parser_and_the_compiler_agree_on_the_cells_edition() {
        assert_eq!(
            crate::CELL_EDITION.parse::<ra_ap_syntax::Edition>().ok(),
            Some(crate::rust_analyzer::EDITION)
        );
    }
}
