//! PyTorch's weights in tch: a `state_dict` that Python saved (`torch.save(model.state_dict())`
//! as `.pt`/`.pth`, or safetensors) read into a [`VarStore`] by name, with the report PyTorch's
//! `load_state_dict` gives (matched, missing, unexpected, shape mismatches), and a VarStore saved
//! so that Python's `torch.load` + `load_state_dict` read it.
//!
//! Python's archive is a zip holding a pickle and one file per storage. The pickle is read with
//! an allow-list, as `torch.load(weights_only=True)` reads it: no code in a file is run.

mod pickle;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

pub use pickle::{TensorRef, Value};

/// Why weights could not be read, written or loaded; the message names the file or the keys.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    /// A strict load that found missing, unexpected or mismatched keys: nothing was loaded.
    #[error("the state_dict does not fit the model, nothing was loaded:\n{0}")]
    Mismatch(LoadReport),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

fn file_error(path: &Path, reason: impl ToString) -> WeightsError {
    WeightsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// BatchNorm's step counter, which tch's BatchNorm does not keep: ignored when loading, written
/// as 0 when saving (PyTorch uses it only with `momentum=None`).
pub const NUM_BATCHES_TRACKED: &str = "num_batches_tracked";

/// Named tensors, in the file's order, as a Python `state_dict`.
pub struct StateDict {
    tensors: Vec<(String, Tensor)>,
}

impl fmt::Debug for StateDict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "StateDict({} tensors)", self.tensors.len())?;
        for (name, t) in self.tensors.iter().take(20) {
            writeln!(f, "  {name}: {:?} {:?}", t.kind(), t.size())?;
        }
        if self.tensors.len() > 20 {
            writeln!(f, "  ...")?;
        }
        Ok(())
    }
}

fn storage_kind(storage_type: &str) -> Option<Kind> {
    Some(match storage_type.trim_start_matches("torch.") {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        "ComplexFloatStorage" => Kind::ComplexFloat,
        "ComplexDoubleStorage" => Kind::ComplexDouble,
        _ => return None,
    })
}

fn storage_type(kind: Kind) -> Option<&'static str> {
    Some(match kind {
        Kind::Float => "FloatStorage",
        Kind::Double => "DoubleStorage",
        Kind::Half => "HalfStorage",
        Kind::BFloat16 => "BFloat16Storage",
        Kind::Int64 => "LongStorage",
        Kind::Int => "IntStorage",
        Kind::Int16 => "ShortStorage",
        Kind::Int8 => "CharStorage",
        Kind::Uint8 => "ByteStorage",
        Kind::Bool => "BoolStorage",
        Kind::ComplexFloat => "ComplexFloatStorage",
        Kind::ComplexDouble => "ComplexDoubleStorage",
        _ => return None,
    })
}

/// Tensors of a value, named by their dict keys joined with dots (a checkpoint's
/// `{"model": state_dict, "epoch": 3}` gives `model.conv1.weight`, ...).
fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, TensorRef)>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match value {
        Value::Tensor(t) => out.push((prefix.to_owned(), t.clone())),
        Value::Dict(items) => {
            for (k, v) in items {
                let key = match k {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    _ => continue,
                };
                flatten(&join(&key), v, out);
            }
        }
        Value::List(items) | Value::Tuple(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&join(&i.to_string()), v, out);
            }
        }
        _ => {}
    }
}

impl StateDict {
    /// Reads `torch.save`'s archive (`.pt`, `.pth`, `.bin`, ...) or a safetensors file (by its
    /// content, whatever the extension). Tensors are on the CPU.
    pub fn read(path: impl AsRef<Path>) -> Result<StateDict, WeightsError> {
        let path = path.as_ref();
        let mut file = std::fs::File::open(path).map_err(|e| file_error(path, e))?;
        let mut magic = [0u8; 4];
        let n = file.read(&mut magic).map_err(|e| file_error(path, e))?;
        if n == 4 && &magic == b"PK\x03\x04" {
            StateDict::read_torch_zip(path)
        } else if n >= 2 && magic[0] == 0x80 {
            Err(file_error(
                path,
                "a torch.save file in the legacy format (before PyTorch 1.6): load it in Python \
                 and save it again with torch.save",
            ))
        } else {
            let tensors = Tensor::read_safetensors(path).map_err(|e| {
                file_error(
                    path,
                    format!("neither torch.save's zip archive nor safetensors: {e}"),
                )
            })?;
            Ok(StateDict { tensors })
        }
    }

    fn read_torch_zip(path: &Path) -> Result<StateDict, WeightsError> {
        let file = std::fs::File::open(path).map_err(|e| file_error(path, e))?;
        let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
            .map_err(|e| file_error(path, format!("not a readable zip archive: {e}")))?;
        let pkl_name = archive
            .file_names()
            .filter_map(Result::ok)
            .find(|n| n.ends_with("/data.pkl") || n == "data.pkl")
            .map(|n| n.into_owned())
            .ok_or_else(|| file_error(path, "a zip archive without data.pkl: not torch.save's"))?;
        let prefix = pkl_name.trim_end_matches("data.pkl").to_owned();
        let mut read_entry = |name: &str| -> Result<Vec<u8>, WeightsError> {
            let mut entry = archive
                .by_name(name)
                .map_err(|e| file_error(path, format!("{name}: {e}")))?;
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| file_error(path, format!("{name}: {e}")))?;
            Ok(bytes)
        };
        if let Ok(order) = read_entry(&format!("{prefix}byteorder"))
            && order.trim_ascii() != b"little"
        {
            return Err(file_error(path, "saved on a big-endian machine"));
        }
        let pickle = read_entry(&pkl_name)?;
        let value = pickle::load(&pickle).map_err(|e| file_error(path, e))?;
        let mut refs = Vec::new();
        flatten("", &value, &mut refs);
        let mut storages: HashMap<String, Tensor> = HashMap::new();
        let mut tensors = Vec::with_capacity(refs.len());
        for (name, r) in refs {
            let kind = storage_kind(&r.storage_type).ok_or_else(|| {
                file_error(
                    path,
                    format!("{name}: storage type {} is not supported", r.storage_type),
                )
            })?;
            if !storages.contains_key(&r.key) {
                let bytes = read_entry(&format!("{prefix}data/{}", r.key))?;
                let expected = r.storage_numel as usize * kind.elt_size_in_bytes();
                if bytes.len() != expected {
                    return Err(file_error(
                        path,
                        format!(
                            "{name}: storage {} has {} bytes, expected {expected} (a truncated file?)",
                            r.key,
                            bytes.len()
                        ),
                    ));
                }
                let storage = Tensor::f_from_data_size(&bytes, &[r.storage_numel], kind)?;
                storages.insert(r.key.clone(), storage);
            }
            let storage = &storages[&r.key];
            // The view must lie inside the storage (as_strided does not check).
            let last = r.offset
                + r.size
                    .iter()
                    .zip(&r.stride)
                    .map(|(&s, &st)| (s - 1).max(0) * st)
                    .sum::<i64>();
            let empty = r.size.contains(&0);
            if !empty
                && (r.offset < 0 || r.stride.iter().any(|&s| s < 0) || last >= r.storage_numel)
            {
                return Err(file_error(path, format!("{name}: a view past its storage")));
            }
            let t = if empty {
                Tensor::f_zeros(&r.size, (kind, Device::Cpu))?
            } else {
                storage
                    .f_as_strided(&r.size, &r.stride, Some(r.offset))?
                    .f_contiguous()?
            };
            tensors.push((name, t));
        }
        Ok(StateDict { tensors })
    }

    /// A VarStore's variables (PyTorch's `model.state_dict()`), with BatchNorm's
    /// `num_batches_tracked` added as PyTorch's modules have it.
    pub fn from_var_store(vs: &VarStore) -> StateDict {
        let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        let mut tensors = Vec::with_capacity(vars.len());
        for (name, t) in &vars {
            tensors.push((name.clone(), t.detach()));
            if let Some(prefix) = name.strip_suffix(".running_var") {
                let counter = format!("{prefix}.{NUM_BATCHES_TRACKED}");
                if !vars.contains_key(&counter) {
                    tensors.push((counter, Tensor::from(0i64)));
                }
            }
        }
        StateDict { tensors }
    }

    /// Writes what Python's `torch.load` reads (a `.safetensors` path: safetensors).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), WeightsError> {
        let path = path.as_ref();
        if path.extension().is_some_and(|e| e == "safetensors") {
            let named: Vec<(&str, &Tensor)> =
                self.tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
            return Ok(Tensor::write_safetensors(&named, path)?);
        }
        // The archive's folder is named after the file, as torch.save names it.
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
            .unwrap_or("archive")
            .to_owned();
        let mut entries = Vec::with_capacity(self.tensors.len());
        let mut blobs = Vec::with_capacity(self.tensors.len());
        for (i, (name, t)) in self.tensors.iter().enumerate() {
            let st = storage_type(t.kind()).ok_or_else(|| {
                file_error(
                    path,
                    format!("{name}: dtype {:?} has no torch storage type", t.kind()),
                )
            })?;
            let t = t.f_to_device(Device::Cpu)?.f_contiguous()?;
            let numel = t.numel();
            let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
            t.f_copy_data_u8(&mut bytes, numel)?;
            let size = t.size();
            let stride = t.stride();
            entries.push(pickle::Entry {
                name: name.clone(),
                storage_type: st,
                key: i.to_string(),
                numel: numel as i64,
                size,
                stride,
            });
            blobs.push(bytes);
        }
        let pickle = pickle::dump_state_dict(&entries);
        let write = || -> zip::result::ZipResult<()> {
            let tmp = path.with_extension("partial");
            let file = std::fs::File::create(&tmp)?;
            let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
            // Stored and 64-byte aligned, as torch.save writes them (torch.load can mmap them).
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored)
                .with_alignment(64);
            zip.start_file(format!("{stem}/data.pkl"), options)?;
            zip.write_all(&pickle)?;
            zip.start_file(format!("{stem}/byteorder"), options)?;
            zip.write_all(b"little")?;
            for (i, blob) in blobs.iter().enumerate() {
                zip.start_file(format!("{stem}/data/{i}"), options)?;
                zip.write_all(blob)?;
            }
            zip.start_file(format!("{stem}/version"), options)?;
            zip.write_all(b"3\n")?;
            zip.finish()?.flush()?;
            std::fs::rename(&tmp, path)?;
            Ok(())
        };
        write().map_err(|e| file_error(path, e))
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Names and tensors, in order.
    pub fn tensors(&self) -> &[(String, Tensor)] {
        &self.tensors
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Only the tensors under `prefix.`, renamed without it: a checkpoint's
    /// `select("model")`, or DDP's `select("module")`. Other names are dropped.
    pub fn select(self, prefix: &str) -> StateDict {
        let dotted = format!("{}.", prefix.trim_end_matches('.'));
        StateDict {
            tensors: self
                .tensors
                .into_iter()
                .filter_map(|(n, t)| n.strip_prefix(&dotted).map(|s| (s.to_owned(), t)))
                .collect(),
        }
    }

    /// What loading into `vs` would do: the keys that match (name and shape), those missing
    /// from the file, those the model does not have, and the shape mismatches.
    pub fn compare(&self, vs: &VarStore) -> LoadReport {
        let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        let mut report = LoadReport::default();
        let in_file: BTreeMap<&str, &Tensor> =
            self.tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        for (name, var) in &vars {
            match in_file.get(name.as_str()) {
                None => report.missing.push(name.clone()),
                Some(t) if t.size() != var.size() => {
                    report.mismatched.push((name.clone(), var.size(), t.size()))
                }
                Some(_) => report.matched.push(name.clone()),
            }
        }
        for (name, _) in &self.tensors {
            if !vars.contains_key(name) {
                if name.rsplit('.').next() == Some(NUM_BATCHES_TRACKED) {
                    report.ignored.push(name.clone());
                } else {
                    report.unexpected.push(name.clone());
                }
            }
        }
        report
    }

    /// Copies the matching tensors into `vs` (converted to each variable's dtype and device).
    /// Strict: any missing, unexpected or mismatched key is an error and nothing is copied;
    /// otherwise what matches is copied and the report lists the rest.
    pub fn load_into(&self, vs: &VarStore, strict: bool) -> Result<LoadReport, WeightsError> {
        let report = self.compare(vs);
        if strict && !report.fits() {
            return Err(WeightsError::Mismatch(report));
        }
        let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        tch::no_grad(|| -> Result<(), WeightsError> {
            for name in &report.matched {
                if let (Some(var), Some(src)) = (vars.get(name), self.get(name)) {
                    let mut var = var.shallow_clone();
                    var.f_copy_(&src.f_to_kind(var.kind())?.f_to_device(var.device())?)?;
                }
            }
            Ok(())
        })?;
        Ok(report)
    }
}

/// What a load matched and what it did not, as PyTorch's `_IncompatibleKeys` plus the matches,
/// the shape mismatches and the ignored `num_batches_tracked` counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    pub matched: Vec<String>,
    /// In the model, not in the file.
    pub missing: Vec<String>,
    /// In the file, not in the model.
    pub unexpected: Vec<String>,
    /// `(name, the model's shape, the file's shape)`.
    pub mismatched: Vec<(String, Vec<i64>, Vec<i64>)>,
    /// BatchNorm counters tch does not keep ([`NUM_BATCHES_TRACKED`]).
    pub ignored: Vec<String>,
}

impl LoadReport {
    /// Every variable loaded, nothing left over.
    pub fn fits(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |names: &[String]| -> String {
            let shown: Vec<&str> = names.iter().take(12).map(String::as_str).collect();
            let more = names.len().saturating_sub(shown.len());
            let mut s = format!("{shown:?}");
            if more > 0 {
                s.push_str(&format!(" and {more} more"));
            }
            s
        };
        writeln!(f, "matched: {} tensors", self.matched.len())?;
        writeln!(
            f,
            "missing_keys ({}): {}",
            self.missing.len(),
            list(&self.missing)
        )?;
        writeln!(
            f,
            "unexpected_keys ({}): {}",
            self.unexpected.len(),
            list(&self.unexpected)
        )?;
        write!(f, "shape mismatches ({})", self.mismatched.len())?;
        for (name, model, file) in self.mismatched.iter().take(12) {
            write!(f, "\n  {name}: the model has {model:?}, the file {file:?}")?;
        }
        if !self.ignored.is_empty() {
            write!(
                f,
                "\nignored: {} BatchNorm num_batches_tracked counters (tch does not keep them)",
                self.ignored.len()
            )?;
        }
        Ok(())
    }
}

/// PyTorch's names on a [`VarStore`]: `vs.load_state_dict(path)`, as `model.load_state_dict(
/// torch.load(path))`, and `vs.save_state_dict(path)`, as `torch.save(model.state_dict(), path)`.
pub trait VarStoreStateDict {
    /// Loads a Python `state_dict` file strictly: every variable must be in it with its shape,
    /// and nothing else (but BatchNorm's counters); else an error listing the differences, and
    /// nothing loaded.
    fn load_state_dict(&self, path: impl AsRef<Path>) -> Result<LoadReport, WeightsError>;
    /// Loads what matches and reports the rest (PyTorch's `strict=False`, which also skips
    /// shape mismatches here instead of failing).
    fn load_state_dict_non_strict(
        &self,
        path: impl AsRef<Path>,
    ) -> Result<LoadReport, WeightsError>;
    /// Saves the variables as `torch.save(model.state_dict(), path)` does.
    fn save_state_dict(&self, path: impl AsRef<Path>) -> Result<(), WeightsError>;
}

impl VarStoreStateDict for VarStore {
    fn load_state_dict(&self, path: impl AsRef<Path>) -> Result<LoadReport, WeightsError> {
        StateDict::read(path)?.load_into(self, true)
    }
    fn load_state_dict_non_strict(
        &self,
        path: impl AsRef<Path>,
    ) -> Result<LoadReport, WeightsError> {
        StateDict::read(path)?.load_into(self, false)
    }
    fn save_state_dict(&self, path: impl AsRef<Path>) -> Result<(), WeightsError> {
        StateDict::from_var_store(self).save(path)
    }
}
