//! Snapshots of a notebook's variables: the contract between the variable store compiled into
//! cells (the evcxr fork's `evcxr_internal_runtime`), the evaluation process that writes them
//! (its runtime), the prelude's savers and loaders (notebook-helpers' `snapshot_savers`) and the
//! kernel, which lists and restores them (rust-evaluator's `snapshot_dir`).
//!
//! A snapshot directory holds one file per variable, `NAME.snap`: a header (text lines, see
//! [`SnapshotHeader`]) and then the bytes of its tensors, or its serialized value.

use std::io::BufRead;
use std::path::Path;

/// What the variable store keeps with a variable, chosen for its type when a cell stores it.
/// Called in the evaluation process after the cell, it takes what it needs cheaply (a shallow
/// copy of a tensor, a CUDA tensor copied to the host) and returns the [`SnapshotWrite`].
/// Only std types, so that the store's own alias (compiled into every cell) is the same type.
pub type SnapshotSaver = fn(&dyn std::any::Any) -> SnapshotWrite;

/// Writes a variable's file at the path given, returning the bytes written or why it could not.
/// Run in a forked copy of the evaluation process, so the next cell does not wait for the disk.
pub type SnapshotWrite = Box<dyn FnOnce(&Path) -> Result<u64, String>>;

/// The directory the evaluation process writes its snapshots to (unset: no snapshots).
pub const SNAPSHOT_DIR_ENV: &str = "TCH_KERNEL_SNAPSHOT_DIR";
/// The extension of a variable's file.
pub const SNAPSHOT_EXT: &str = "snap";
/// Held (`flock`) by the process writing into a snapshot directory.
pub const SNAPSHOT_LOCK: &str = ".lock";
/// The last snapshot's summary: `cell N: K variables, B bytes, T ms` (written last).
pub const SNAPSHOT_STATUS: &str = "status";

const MAGIC: &str = "TCHSNAP1";

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    /// A `Tensor` (one entry).
    Tensor,
    /// A `Vec<Tensor>` (entries named by index).
    Tensors,
    /// A `VarStore` (entries named as its variables).
    VarStore,
    /// A value with serde's traits, serialized with bincode after the header.
    Data,
    /// Not saved; [`SnapshotHeader::reason`] says why.
    Unsaved,
}

impl SnapshotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Tensor => "tensor",
            SnapshotKind::Tensors => "tensors",
            SnapshotKind::VarStore => "varstore",
            SnapshotKind::Data => "data",
            SnapshotKind::Unsaved => "unsaved",
        }
    }

    pub fn parse(s: &str) -> Option<SnapshotKind> {
        [
            SnapshotKind::Tensor,
            SnapshotKind::Tensors,
            SnapshotKind::VarStore,
            SnapshotKind::Data,
            SnapshotKind::Unsaved,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One tensor of a file, its bytes following the header in entry order.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    pub name: String,
    /// tch's `Kind`, as its `Debug` writes it (`Float`).
    pub dtype: String,
    pub shape: Vec<i64>,
    /// Where it was: `cpu` or `cuda:N`.
    pub device: String,
    pub requires_grad: bool,
    pub bytes: u64,
}

/// A file's header: `TCHSNAP1 US kind US type US reason US entries`, then one line per tensor
/// entry, `name US dtype US shape US device US requires_grad US bytes` (fields escaped).
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotHeader {
    pub kind: SnapshotKind,
    /// `std::any::type_name` of the variable's type, checked again when it is restored.
    pub type_name: String,
    /// Why it was not saved ([`SnapshotKind::Unsaved`]), else empty.
    pub reason: String,
    pub tensors: Vec<TensorEntry>,
}

impl SnapshotHeader {
    /// The header of a variable that is not saved: its type and why.
    pub fn unsaved(type_name: &str, reason: String) -> SnapshotHeader {
        SnapshotHeader {
            kind: SnapshotKind::Unsaved,
            type_name: type_name.to_owned(),
            reason,
            tensors: Vec::new(),
        }
    }

    pub fn to_text(&self) -> String {
        let sep = crate::FIELD_SEP;
        let esc = crate::escape;
        let mut text = format!(
            "{MAGIC}{sep}{}{sep}{}{sep}{}{sep}{}\n",
            self.kind.as_str(),
            esc(&self.type_name),
            esc(&self.reason),
            self.tensors.len()
        );
        for t in &self.tensors {
            let shape: Vec<String> = t.shape.iter().map(i64::to_string).collect();
            text.push_str(&format!(
                "{}{sep}{}{sep}{}{sep}{}{sep}{}{sep}{}\n",
                esc(&t.name),
                esc(&t.dtype),
                shape.join(","),
                esc(&t.device),
                u8::from(t.requires_grad),
                t.bytes
            ));
        }
        text
    }

    /// Reads a header, leaving `reader` at the first byte after it.
    pub fn read(reader: &mut impl BufRead) -> Result<SnapshotHeader, String> {
        let mut line = String::new();
        let mut next_line = |line: &mut String| -> Result<(), String> {
            line.clear();
            reader
                .read_line(line)
                .map_err(|e| format!("cannot read: {e}"))?;
            if !line.ends_with('\n') {
                return Err("the header is cut short".into());
            }
            line.pop();
            Ok(())
        };
        next_line(&mut line)?;
        let fields: Vec<&str> = line.split(crate::FIELD_SEP).collect();
        let [magic, kind, type_name, reason, count] = fields[..] else {
            return Err("not a snapshot header".into());
        };
        if magic != MAGIC {
            return Err("not a snapshot file".into());
        }
        let kind = SnapshotKind::parse(kind).ok_or_else(|| format!("unknown kind {kind}"))?;
        let count: usize = count.parse().map_err(|_| "bad entry count".to_owned())?;
        let mut header = SnapshotHeader {
            kind,
            type_name: crate::unescape(type_name),
            reason: crate::unescape(reason),
            tensors: Vec::with_capacity(count.min(1 << 16)),
        };
        for _ in 0..count {
            next_line(&mut line)?;
            let fields: Vec<&str> = line.split(crate::FIELD_SEP).collect();
            let [name, dtype, shape, device, requires_grad, bytes] = fields[..] else {
                return Err("bad tensor entry".into());
            };
            let shape = if shape.is_empty() {
                Vec::new()
            } else {
                shape
                    .split(',')
                    .map(|d| d.parse::<i64>().map_err(|_| "bad shape".to_owned()))
                    .collect::<Result<_, _>>()?
            };
            header.tensors.push(TensorEntry {
                name: crate::unescape(name),
                dtype: crate::unescape(dtype),
                shape,
                device: crate::unescape(device),
                requires_grad: requires_grad == "1",
                bytes: bytes.parse().map_err(|_| "bad byte count".to_owned())?,
            });
        }
        Ok(header)
    }

    /// The header of the file at `path`.
    pub fn read_file(path: &Path) -> Result<SnapshotHeader, String> {
        let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        SnapshotHeader::read(&mut std::io::BufReader::new(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reads_back_and_leaves_the_payload() {
        let header = SnapshotHeader {
            kind: SnapshotKind::VarStore,
            type_name: "tch::nn::var_store::VarStore".into(),
            reason: String::new(),
            tensors: vec![
                TensorEntry {
                    name: "layer1.weight".into(),
                    dtype: "Float".into(),
                    shape: vec![2, 3],
                    device: "cuda:0".into(),
                    requires_grad: true,
                    bytes: 24,
                },
                TensorEntry {
                    name: "scalar\u{1f}odd:name".into(),
                    dtype: "Int64".into(),
                    shape: vec![],
                    device: "cpu".into(),
                    requires_grad: false,
                    bytes: 8,
                },
            ],
        };
        let mut bytes = header.to_text().into_bytes();
        bytes.extend_from_slice(b"\npayload");
        let mut reader = std::io::Cursor::new(bytes);
        assert_eq!(SnapshotHeader::read(&mut reader).unwrap(), header);
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut rest).unwrap();
        assert_eq!(rest, b"\npayload");
    }

    #[test]
    fn other_files_are_refused() {
        let mut reader = std::io::Cursor::new(b"hello\n".to_vec());
        assert!(SnapshotHeader::read(&mut reader).is_err());
        let cut = SnapshotHeader {
            kind: SnapshotKind::Tensor,
            type_name: "T".into(),
            reason: String::new(),
            tensors: vec![],
        }
        .to_text();
        let mut reader = std::io::Cursor::new(cut.trim_end().as_bytes().to_vec());
        assert!(SnapshotHeader::read(&mut reader).is_err());
    }
}
