//! Snapshots of a notebook's variables, so that they come back after the evaluation process dies
//! (a crash, a kill, the restart after an interrupt that a cell ignored) or in a new kernel
//! session on the same notebook (`:restore`).
//!
//! When a cell stores a variable, the kernel keeps with it the saver chosen here for its type
//! ([`__tch_snapshot_saver!`]): tensors, `Vec<Tensor>`, `VarStore`s, and plain data with serde's
//! traits (numbers, strings, vectors, maps, options and tuples of them). Other values get a
//! saver that records why they were not saved. After the cell, the evaluation process runs the
//! savers of what the cell stored, each taking what it needs cheaply, and a forked copy of the
//! process writes the files (child-protocol's `snapshot_format` has the format). The loaders here are
//! what `:restore` compiles.

use child_protocol::snapshot_format::{
    SnapshotHeader, SnapshotKind, SnapshotSaver, SnapshotWrite, TensorEntry,
};
use std::any::{Any, type_name};
use std::io::{BufReader, BufWriter, Read, Write};
use std::marker::PhantomData;
use std::path::Path;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// The type of a value, for choosing its saver by method resolution: `(&&&Probe::of(&x))`
/// finds [`ViaTch`] for tensors and VarStores, else [`ViaData`] for serde types, else
/// [`ViaNone`].
pub struct Probe<T>(PhantomData<T>);

impl<T> Probe<T> {
    pub fn of(_: &T) -> Probe<T> {
        Probe(PhantomData)
    }
}

/// Tensors, `Vec<Tensor>` and `VarStore`s: their tensors' bytes.
pub trait ViaTch {
    fn saver(&self) -> SnapshotSaver;
}

impl ViaTch for &&&Probe<Tensor> {
    fn saver(&self) -> SnapshotSaver {
        save_tensor
    }
}

impl ViaTch for &&&Probe<Vec<Tensor>> {
    fn saver(&self) -> SnapshotSaver {
        save_tensors
    }
}

impl ViaTch for &&&Probe<VarStore> {
    fn saver(&self) -> SnapshotSaver {
        save_var_store
    }
}

/// Plain data a snapshot keeps (written with bincode through serde's traits): numbers, `bool`,
/// `char`, `String`, and vectors, arrays, options, boxes, maps, sets and tuples of them.
///
/// A marker rather than "anything with serde's traits": the saver is chosen by method
/// resolution, which does not see lifetimes, so `&str` (which has the traits only for
/// `'static` data) would be chosen and then fail to compile. A type of the notebook's own can
/// join with `impl SnapshotData for MyType {}` when it derives the prelude's serde
/// (`#[derive(serde::Serialize, serde::Deserialize)] #[serde(crate = "tch_prelude::serde")]`).
pub trait SnapshotData: serde::Serialize + serde::de::DeserializeOwned + 'static {}

macro_rules! snapshot_data {
    ($($t:ty),*) => {$(impl SnapshotData for $t {})*};
}
snapshot_data!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    String,
    serde_json::Value
);
impl<T: SnapshotData> SnapshotData for Vec<T> {}
impl<T: SnapshotData> SnapshotData for std::collections::VecDeque<T> {}
impl<T: SnapshotData> SnapshotData for Option<T> {}
impl<T: SnapshotData> SnapshotData for Box<T> {}
impl<T: SnapshotData, const N: usize> SnapshotData for [T; N] where
    [T; N]: serde::Serialize + serde::de::DeserializeOwned
{
}
impl<K: SnapshotData + Eq + std::hash::Hash, V: SnapshotData> SnapshotData
    for std::collections::HashMap<K, V>
{
}
impl<K: SnapshotData + Ord, V: SnapshotData> SnapshotData for std::collections::BTreeMap<K, V> {}
impl<T: SnapshotData + Eq + std::hash::Hash> SnapshotData for std::collections::HashSet<T> {}
impl<T: SnapshotData + Ord> SnapshotData for std::collections::BTreeSet<T> {}
macro_rules! snapshot_tuples {
    ($(($($t:ident),+)),*) => {$(impl<$($t: SnapshotData),+> SnapshotData for ($($t,)+) {})*};
}
snapshot_tuples!(
    (A),
    (A, B),
    (A, B, C),
    (A, B, C, D),
    (A, B, C, D, E),
    (A, B, C, D, E, F)
);

/// Plain data ([`SnapshotData`]), written with bincode.
pub trait ViaData {
    fn saver(&self) -> SnapshotSaver;
}

impl<T: SnapshotData> ViaData for &&Probe<T> {
    fn saver(&self) -> SnapshotSaver {
        save_data::<T>
    }
}

/// Anything else: a file that says why it was not saved.
pub trait ViaNone {
    fn saver(&self) -> SnapshotSaver;
}

impl<T: 'static> ViaNone for &Probe<T> {
    fn saver(&self) -> SnapshotSaver {
        unsaved::<T>
    }
}

/// The snapshot saver for the type of `$value` (a reference): what the kernel stores with each
/// variable.
#[doc(hidden)]
#[macro_export]
macro_rules! __tch_snapshot_saver {
    ($value:expr) => {{
        #[allow(unused_imports)]
        use $crate::snapshot_savers::{ViaData as _, ViaNone as _, ViaTch as _};
        (&&&$crate::snapshot_savers::Probe::of($value)).saver()
    }};
}

/// A tensor's bytes on the host, kept alive until the fork has written them.
struct HostTensor {
    /// Holds the storage `ptr` points into.
    _tensor: Tensor,
    ptr: usize,
    entry: TensorEntry,
}

fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".to_owned(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// A contiguous host copy of `t` (the tensor itself when it already is one): the only libtorch
/// work a snapshot does in the evaluation process.
fn host_tensor(name: &str, t: &Tensor) -> Result<HostTensor, String> {
    if !t.defined() {
        return Err("an undefined tensor".into());
    }
    if t.is_sparse() {
        return Err("a sparse tensor".into());
    }
    let kind = t.f_kind().map_err(|e| e.to_string())?;
    if !KINDS.contains(&kind) {
        return Err(format!("a {kind:?} tensor, a kind snapshots do not keep"));
    }
    let device = t.device();
    // Pinned host memory may not be readable in a forked process (the driver can keep it out of
    // the fork): such a tensor is copied like a CUDA one.
    let host = tch::no_grad(|| {
        let pinned = device == Device::Cpu
            && tch::Cuda::is_available()
            && t.f_is_pinned(Device::Cuda(0)).unwrap_or(false);
        if pinned {
            Ok(t.copy())
        } else {
            t.f_to_device(Device::Cpu).and_then(|c| c.f_contiguous())
        }
    })
    .map_err(|e| format!("cannot copy it to the host: {e}"))?;
    let bytes = host.numel() * kind.elt_size_in_bytes();
    let ptr = if bytes == 0 {
        0
    } else {
        host.data_ptr() as usize
    };
    Ok(HostTensor {
        ptr,
        entry: TensorEntry {
            name: name.to_owned(),
            dtype: format!("{kind:?}"),
            shape: host.size(),
            device: device_name(device),
            requires_grad: t.requires_grad(),
            bytes: bytes as u64,
        },
        _tensor: host,
    })
}

fn create(path: &Path) -> Result<BufWriter<std::fs::File>, String> {
    std::fs::File::create(path)
        .map(|f| BufWriter::with_capacity(1 << 20, f))
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

fn finish(mut out: BufWriter<std::fs::File>) -> Result<(), String> {
    out.flush().map_err(|e| e.to_string())?;
    out.get_ref().sync_data().map_err(|e| e.to_string())
}

fn tensors_write(
    kind: SnapshotKind,
    type_name: &'static str,
    tensors: Vec<HostTensor>,
) -> SnapshotWrite {
    Box::new(move |path: &Path| {
        let header = SnapshotHeader {
            kind,
            type_name: type_name.to_owned(),
            reason: String::new(),
            tensors: tensors.iter().map(|t| t.entry.clone()).collect(),
        };
        let mut out = create(path)?;
        let text = header.to_text();
        out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
        let mut total = text.len() as u64;
        for t in &tensors {
            if t.entry.bytes == 0 {
                continue;
            }
            // SAFETY: `ptr` points at `bytes` bytes of the contiguous host tensor this struct
            // holds, in this (forked) process's copy of the memory.
            let data =
                unsafe { std::slice::from_raw_parts(t.ptr as *const u8, t.entry.bytes as usize) };
            out.write_all(data).map_err(|e| e.to_string())?;
            total += t.entry.bytes;
        }
        finish(out)?;
        Ok(total)
    })
}

fn unsaved_write(type_name: &'static str, reason: String) -> SnapshotWrite {
    Box::new(move |path: &Path| {
        let mut out = create(path)?;
        let text = SnapshotHeader::unsaved(type_name, reason).to_text();
        out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
        finish(out)?;
        Ok(text.len() as u64)
    })
}

fn save_tensor(value: &dyn Any) -> SnapshotWrite {
    let name = type_name::<Tensor>();
    match value.downcast_ref::<Tensor>().map(|t| host_tensor("", t)) {
        Some(Ok(t)) => tensors_write(SnapshotKind::Tensor, name, vec![t]),
        Some(Err(reason)) => unsaved_write(name, reason),
        None => unsaved_write(name, "its type changed".into()),
    }
}

fn save_tensors(value: &dyn Any) -> SnapshotWrite {
    let name = type_name::<Vec<Tensor>>();
    let Some(list) = value.downcast_ref::<Vec<Tensor>>() else {
        return unsaved_write(name, "its type changed".into());
    };
    match list
        .iter()
        .enumerate()
        .map(|(i, t)| host_tensor(&i.to_string(), t))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(tensors) => tensors_write(SnapshotKind::Tensors, name, tensors),
        Err(reason) => unsaved_write(name, reason),
    }
}

fn save_var_store(value: &dyn Any) -> SnapshotWrite {
    let name = type_name::<VarStore>();
    let Some(vs) = value.downcast_ref::<VarStore>() else {
        return unsaved_write(name, "its type changed".into());
    };
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    match variables
        .iter()
        .map(|(n, t)| host_tensor(n, t))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(tensors) => tensors_write(SnapshotKind::VarStore, name, tensors),
        Err(reason) => unsaved_write(name, reason),
    }
}

fn save_data<T: serde::Serialize + 'static>(value: &dyn Any) -> SnapshotWrite {
    let name = type_name::<T>();
    let Some(value) = value.downcast_ref::<T>() else {
        return unsaved_write(name, "its type changed".into());
    };
    let ptr = value as *const T as usize;
    Box::new(move |path: &Path| {
        // SAFETY: a write runs only in the fork made right after the savers ran, where the
        // store (and so the value) is exactly as it was then.
        let value = unsafe { &*(ptr as *const T) };
        let header = SnapshotHeader {
            kind: SnapshotKind::Data,
            type_name: name.to_owned(),
            reason: String::new(),
            tensors: Vec::new(),
        };
        let mut out = create(path)?;
        let text = header.to_text();
        out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
        let mut counted = CountingWriter {
            inner: &mut out,
            count: 0,
        };
        bincode::serialize_into(&mut counted, value).map_err(|e| e.to_string())?;
        let total = text.len() as u64 + counted.count;
        finish(out)?;
        Ok(total)
    })
}

struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Why a value of type `name` is not saved, in the words of someone training a model.
pub fn unsaved_reason(name: &str) -> String {
    if name.contains("Optimizer") {
        "an optimizer: its state (momentum, Adam's moments) lives in libtorch; create it again from the restored VarStore".into()
    } else if name.contains("{{closure}}") {
        "a closure".into()
    } else if name.starts_with("tch::nn::") || name.contains("tch::CModule") {
        "a model or layer: run the cell that builds it again (its weights come back with its VarStore, by `:restore`)".into()
    } else if name.starts_with('&') || name.contains("<&") || name.contains(", &") {
        "it holds a reference: only owned data is saved".into()
    } else {
        format!(
            "`{name}` is not plain data a snapshot keeps (numbers, strings, and vectors, maps, options and tuples of them)"
        )
    }
}

fn unsaved<T: 'static>(_: &dyn Any) -> SnapshotWrite {
    let name = type_name::<T>();
    unsaved_write(name, unsaved_reason(name))
}

// --- restoring (what `:restore` compiles) ------------------------------------------------------

fn open(path: &str) -> Result<(SnapshotHeader, BufReader<std::fs::File>), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {path}: {e}"))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let header = SnapshotHeader::read(&mut reader)?;
    Ok((header, reader))
}

const KINDS: [Kind; 13] = [
    Kind::Uint8,
    Kind::Int8,
    Kind::Int16,
    Kind::Int,
    Kind::Int64,
    Kind::Half,
    Kind::Float,
    Kind::Double,
    Kind::ComplexHalf,
    Kind::ComplexFloat,
    Kind::ComplexDouble,
    Kind::Bool,
    Kind::BFloat16,
];

/// The device a tensor that was on `device` goes back to: that GPU when this process has it,
/// else the CPU (said on stdout).
fn restore_device(device: &str) -> Device {
    if let Some(i) = device
        .strip_prefix("cuda:")
        .and_then(|i| i.parse::<usize>().ok())
    {
        if tch::Cuda::device_count() > i as i64 {
            return Device::Cuda(i);
        }
        println!("(was on {device}, which this process does not have: restored on the CPU)");
    }
    Device::Cpu
}

fn read_tensor(reader: &mut impl Read, entry: &TensorEntry) -> Result<Tensor, String> {
    let kind = KINDS
        .into_iter()
        .find(|k| format!("{k:?}") == entry.dtype)
        .ok_or_else(|| format!("tensor kind {} is not supported", entry.dtype))?;
    // The header says how many bytes follow; libtorch copies as many as the shape says.
    let expected = entry
        .shape
        .iter()
        .try_fold(kind.elt_size_in_bytes() as u64, |n, d| {
            u64::try_from(*d).ok().and_then(|d| n.checked_mul(d))
        });
    if expected != Some(entry.bytes) {
        return Err(format!(
            "the header does not add up ({} bytes for shape {:?} of {})",
            entry.bytes, entry.shape, entry.dtype
        ));
    }
    let mut data = vec![0u8; entry.bytes as usize];
    reader
        .read_exact(&mut data)
        .map_err(|e| format!("the file is cut short: {e}"))?;
    let t = Tensor::f_from_data_size(&data, &entry.shape, kind).map_err(|e| e.to_string())?;
    let t = t.to_device(restore_device(&entry.device));
    Ok(if entry.requires_grad {
        t.set_requires_grad(true)
    } else {
        t
    })
}

fn read_tensors(path: &str, kind: SnapshotKind) -> Result<Vec<(String, bool, Tensor)>, String> {
    let (header, mut reader) = open(path)?;
    if header.kind != kind {
        return Err(format!(
            "holds a {}, not a {}",
            header.kind.as_str(),
            kind.as_str()
        ));
    }
    header
        .tensors
        .iter()
        .map(|e| {
            Ok((
                e.name.clone(),
                e.requires_grad,
                read_tensor(&mut reader, e)?,
            ))
        })
        .collect()
}

fn or_panic<T>(path: &str, r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("cannot restore {path}: {e}"))
}

/// A saved `Tensor`.
pub fn load_tensor(path: &str) -> Tensor {
    let mut tensors = or_panic(path, read_tensors(path, SnapshotKind::Tensor));
    or_panic(
        path,
        tensors
            .pop()
            .map(|(_, _, t)| t)
            .ok_or_else(|| "no tensor".to_owned()),
    )
}

/// A saved `Vec<Tensor>`.
pub fn load_tensors(path: &str) -> Vec<Tensor> {
    or_panic(path, read_tensors(path, SnapshotKind::Tensors))
        .into_iter()
        .map(|(_, _, t)| t)
        .collect()
}

/// A saved `VarStore`, as a new one holding its variables (trainable as they were).
pub fn load_var_store(path: &str) -> VarStore {
    let tensors = or_panic(path, read_tensors(path, SnapshotKind::VarStore));
    let device = tensors.first().map_or(Device::Cpu, |(_, _, t)| t.device());
    let vs = VarStore::new(device);
    for (name, trainable, t) in tensors {
        // Its path again (`layer1.weight` is `weight` under `layer1`), so it is named as it was.
        let mut parts: Vec<&str> = name.split('.').collect();
        let last = parts.pop().unwrap_or_default();
        let path = parts.iter().fold(vs.root(), |path, part| path.sub(*part));
        let _ = path.add(last, t, trainable);
    }
    vs
}

/// Copies a saved `VarStore`'s weights into `vs`, by name (a model built again on `vs` gets
/// them). Returns what it did, in a line.
pub fn load_into_var_store(vs: &VarStore, path: &str) -> String {
    let saved = or_panic(path, read_tensors(path, SnapshotKind::VarStore));
    let current = vs.variables();
    let (mut loaded, mut missing, mut mismatched) = (0, Vec::new(), Vec::new());
    for (name, _, t) in &saved {
        match current.get(name) {
            Some(dest) if dest.size() == t.size() => {
                tch::no_grad(|| {
                    let mut dest = dest.shallow_clone();
                    dest.copy_(t)
                });
                loaded += 1;
            }
            Some(_) => mismatched.push(name.as_str()),
            None => missing.push(name.as_str()),
        }
    }
    let mut line = format!(
        "{loaded} of {} weights loaded into the existing VarStore",
        saved.len()
    );
    if !missing.is_empty() {
        line.push_str(&format!("; not in it: {}", missing.join(", ")));
    }
    if !mismatched.is_empty() {
        line.push_str(&format!("; other shapes: {}", mismatched.join(", ")));
    }
    line
}

/// A saved value with serde's traits, as type `T` (which must be the type it was saved as).
pub fn load_data<T: serde::de::DeserializeOwned + 'static>(path: &str) -> T {
    let (header, reader) = or_panic(path, open(path));
    if header.kind != SnapshotKind::Data || header.type_name != type_name::<T>() {
        panic!(
            "cannot restore {path}: it holds a `{}`, not a `{}`",
            header.type_name,
            type_name::<T>()
        );
    }
    or_panic(
        path,
        bincode::deserialize_from(reader).map_err(|e| e.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(saver: SnapshotSaver, value: &dyn Any, dir: &Path, name: &str) -> String {
        let path = dir.join(name);
        saver(value)(&path).unwrap();
        path.to_str().unwrap().to_owned()
    }

    #[test]
    fn the_saver_follows_the_type() {
        let t = Tensor::from_slice(&[1.0f32, 2.0]);
        let v = vec![1.0f64];
        let s = std::rc::Rc::new(1);
        let dir = tempfile::tempdir().unwrap();
        let kind = |saver: SnapshotSaver, value: &dyn Any| {
            let path = write(saver, value, dir.path(), "x");
            SnapshotHeader::read_file(Path::new(&path)).unwrap()
        };
        assert_eq!(
            kind(__tch_snapshot_saver!(&t), &t).kind,
            SnapshotKind::Tensor
        );
        assert_eq!(kind(__tch_snapshot_saver!(&v), &v).kind, SnapshotKind::Data);
        let header = kind(__tch_snapshot_saver!(&s), &s);
        assert_eq!(header.kind, SnapshotKind::Unsaved);
        assert!(
            header.reason.contains("not plain data"),
            "{}",
            header.reason
        );
        let word: &'static str = "tch";
        let header = kind(__tch_snapshot_saver!(&word), &word);
        assert!(header.reason.contains("reference"), "{}", header.reason);
        let n = 41;
        assert_eq!(kind(__tch_snapshot_saver!(&n), &n).kind, SnapshotKind::Data);
        let map: std::collections::HashMap<String, (Vec<f32>, Option<u8>)> = Default::default();
        assert_eq!(
            kind(__tch_snapshot_saver!(&map), &map).kind,
            SnapshotKind::Data
        );
        let opt = tch::nn::Sgd::default();
        assert_eq!(
            kind(__tch_snapshot_saver!(&opt), &opt).kind,
            SnapshotKind::Unsaved
        );
    }

    #[test]
    fn values_come_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::from_slice(&[1.5f32, -2.0, 3.25, 4.0])
            .reshape([2, 2])
            .set_requires_grad(true);
        let path = write(save_tensor, &t, dir.path(), "t");
        let back = load_tensor(&path);
        assert_eq!(back.size(), vec![2, 2]);
        assert!(back.requires_grad());
        assert_eq!(
            Vec::<f32>::try_from(back.flatten(0, -1)).unwrap(),
            vec![1.5, -2.0, 3.25, 4.0]
        );

        let data = (vec![f64::NAN, 1.0], "text".to_owned(), Some(3u8));
        let path = write(
            save_data::<(Vec<f64>, String, Option<u8>)>,
            &data,
            dir.path(),
            "d",
        );
        let back: (Vec<f64>, String, Option<u8>) = load_data(&path);
        assert!(back.0[0].is_nan() && back.0[1] == 1.0 && back.1 == "text" && back.2 == Some(3));

        let list = vec![Tensor::from_slice(&[1i64, 2]), Tensor::from_slice(&[true])];
        let path = write(save_tensors, &list, dir.path(), "l");
        let back = load_tensors(&path);
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].kind(), Kind::Bool);
    }

    #[test]
    #[should_panic(expected = "not a")]
    fn another_type_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(save_data::<Vec<u8>>, &vec![1u8], dir.path(), "d");
        let _: Vec<u32> = load_data(&path);
    }

    #[test]
    fn a_var_store_comes_back_new_or_into_a_model() {
        let dir = tempfile::tempdir().unwrap();
        let vs = VarStore::new(Device::Cpu);
        let lin = tch::nn::linear(vs.root() / "fc", 3, 2, Default::default());
        let path = write(save_var_store, &vs, dir.path(), "vs");

        let other = VarStore::new(Device::Cpu);
        let rebuilt = tch::nn::linear(other.root() / "fc", 3, 2, Default::default());
        assert!(!rebuilt.ws.equal(&lin.ws));
        let line = load_into_var_store(&other, &path);
        assert!(line.starts_with("2 of 2 weights loaded"), "{line}");
        assert!(rebuilt.ws.equal(&lin.ws));

        let fresh = load_var_store(&path);
        assert_eq!(fresh.trainable_variables().len(), 2);
        assert!(fresh.variables()["fc.weight"].equal(&lin.ws));
    }
}
