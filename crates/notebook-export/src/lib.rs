//! `tch-kernel export`: a notebook becomes a Cargo project that builds and runs the same code
//! outside Jupyter, plus an sbatch script.
//!
//! Every code cell is split the way the kernel splits it: items (`fn`, `struct`, `impl`, `use`,
//! ...) go to the top of `src/main.rs`, statements go into `main` in cell order (so variables
//! live on from cell to cell, as in the notebook), and a cell's final expression is shown the
//! way the kernel shows it (its text form). `:dep` lines become dependencies; `:gpu` prints the
//! GPU report; other kernel commands are left out with a comment. Cells tagged
//! `raises-exception` or `notebook-only` are left out ([`LEFT_OUT_TAGS`]).

mod cells;
mod project;

pub use cells::{LEFT_OUT_TAGS, Program, convert_cells};
pub use project::{BUILD_ENV, ExportOptions, Exported, SlurmOptions, export};

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a notebook: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("not a Rust edition: {0}")]
    Edition(String),
}

/// The parts of an `.ipynb` the export reads.
#[derive(Debug, Deserialize)]
pub struct Notebook {
    pub cells: Vec<Cell>,
}

#[derive(Debug, Deserialize)]
pub struct Cell {
    pub cell_type: String,
    #[serde(deserialize_with = "source_text")]
    pub source: String,
    #[serde(default)]
    pub metadata: CellMetadata,
}

#[derive(Debug, Default, Deserialize)]
pub struct CellMetadata {
    #[serde(default)]
    pub tags: Vec<String>,
}

/// nbformat stores a cell's source as a string or as a list of lines.
fn source_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Source {
        Text(String),
        Lines(Vec<String>),
    }
    Ok(match Source::deserialize(d)? {
        Source::Text(s) => s,
        Source::Lines(lines) => lines.concat(),
    })
}

impl Notebook {
    pub fn read(path: &std::path::Path) -> Result<Notebook, ExportError> {
        let text = std::fs::read_to_string(path).map_err(|source| ExportError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ExportError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}
