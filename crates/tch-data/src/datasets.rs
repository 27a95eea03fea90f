//! Data sets a loader draws batches from: a folder of images per class or a CSV list of images
//! (as torchvision's `ImageFolder`), arrays in memory, `.npy`/`.npz` or safetensors files (as
//! `TensorDataset`), and subsets and random splits of any of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rand::SeedableRng;
use tch::{Device, Tensor};

use crate::error::DataError;
use crate::image::{IMAGE_EXTENSIONS, RgbImage, decode};
use crate::transforms::{Normalize, Rng, Transform};

/// What a worker needs to build one batch.
pub struct BatchContext<'a> {
    /// The loader's seed and the epoch: with the sample's index they seed its transforms.
    pub seed: u64,
    pub epoch: u64,
    /// Where the batch goes: a CUDA device means pinned host memory.
    pub device: Device,
    /// Set when the epoch is abandoned (an interrupt, an error, the loop left early).
    pub stop: &'a AtomicBool,
    /// Skip unreadable files (counted in `skipped`) instead of failing the batch.
    pub skip_bad_files: bool,
    pub skipped: &'a Mutex<Vec<DataError>>,
}

impl BatchContext<'_> {
    /// The generator for sample `index` this epoch: the same on any worker, rank or machine.
    pub fn rng(&self, index: usize) -> Rng {
        let mut z = self
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(self.epoch.wrapping_mul(0xBF58_476D_1CE4_E5B9))
            .wrapping_add(index as u64);
        // SplitMix64's finalizer spreads neighbouring indices over the whole seed space.
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng::seed_from_u64(z ^ (z >> 31))
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// `tensor` in pinned memory when the batch goes to a CUDA device (so that the copy there
    /// is asynchronous), as it is otherwise.
    pub fn pin(&self, tensor: Tensor) -> Result<Tensor, DataError> {
        if self.device.is_cuda() {
            Ok(tensor.f_pin_memory(self.device)?)
        } else {
            Ok(tensor)
        }
    }
}

/// A batch as a worker hands it over: inputs and targets on the CPU (pinned for a GPU).
pub struct Batch {
    pub inputs: Tensor,
    pub targets: Tensor,
}

impl Batch {
    /// No samples (all of the batch's files skipped): the loader passes over it.
    fn empty(inputs: Tensor) -> Batch {
        Batch {
            inputs,
            targets: Tensor::from_slice::<i64>(&[]),
        }
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.targets.size().first().copied().unwrap_or(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A data set a [`DataLoader`](crate::DataLoader) can batch: it builds whole batches, so that a
/// worker decodes a batch's images straight into the batch's memory.
pub trait Dataset: Send + Sync {
    /// How many samples.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples at `indices`, stacked.
    fn batch(&self, indices: &[usize], ctx: &BatchContext<'_>) -> Result<Batch, DataError>;

    /// The normalization the loader applies on the device (images' [`Normalize`]).
    fn normalization(&self) -> Option<Normalize> {
        None
    }

    /// What a progress bar counts (`"images"`, `"samples"`).
    fn unit(&self) -> &'static str {
        "samples"
    }
}

impl<D: Dataset + ?Sized> Dataset for Arc<D> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn batch(&self, indices: &[usize], ctx: &BatchContext<'_>) -> Result<Batch, DataError> {
        (**self).batch(indices, ctx)
    }
    fn normalization(&self) -> Option<Normalize> {
        (**self).normalization()
    }
    fn unit(&self) -> &'static str {
        (**self).unit()
    }
}

/// Images with a class each: a folder with one subfolder per class (torchvision's
/// `ImageFolder`), or a CSV file of paths and labels ([`ImageFolder::from_csv`]).
///
/// JPEG and PNG files are decoded to RGB (grayscale, CMYK, palette and 16-bit too), passed
/// through the [`transform`](Self::transform) and batched as bytes `[N, 3, H, W]`; the loader
/// normalizes them on their device when the transform holds a [`Normalize`].
#[derive(Clone)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    samples: Vec<(PathBuf, i64)>,
    transform: Option<Arc<dyn Transform>>,
}

impl std::fmt::Debug for ImageFolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ImageFolder({} images, {} classes, root {})",
            self.samples.len(),
            self.classes.len(),
            self.root.display()
        )?;
        if let Some(t) = &self.transform {
            write!(f, "\n{}", t.describe())?;
        }
        Ok(())
    }
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let read = std::fs::read_dir(dir).map_err(|e| DataError::bad_file(dir, e))?;
    let mut entries = Vec::new();
    for entry in read {
        entries.push(entry.map_err(|e| DataError::bad_file(dir, e))?.path());
    }
    entries.sort();
    Ok(entries)
}

impl ImageFolder {
    /// The images under `root/<class>/...` (subfolders too), classes in name order, files in
    /// path order, as torchvision lists them.
    pub fn new(root: impl AsRef<Path>) -> Result<ImageFolder, DataError> {
        let root = root.as_ref().to_path_buf();
        let mut classes = Vec::new();
        let mut samples = Vec::new();
        for dir in sorted_entries(&root)? {
            if !dir.is_dir() {
                continue;
            }
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let label = classes.len() as i64;
            let before = samples.len();
            let mut stack = vec![dir.clone()];
            let mut files = Vec::new();
            while let Some(d) = stack.pop() {
                for path in sorted_entries(&d)? {
                    if path.is_dir() {
                        stack.push(path);
                    } else if is_image(&path) {
                        files.push(path);
                    }
                }
            }
            files.sort();
            samples.extend(files.into_iter().map(|p| (p, label)));
            if samples.len() == before {
                return Err(DataError::invalid(format!(
                    "class folder {} has no image files ({})",
                    dir.display(),
                    IMAGE_EXTENSIONS.join(", ")
                )));
            }
            classes.push(name);
        }
        if classes.is_empty() {
            return Err(DataError::invalid(format!(
                "{} has no class folders: an image folder holds one subfolder of images per class",
                root.display()
            )));
        }
        Ok(ImageFolder {
            root,
            classes,
            samples,
            transform: None,
        })
    }

    /// The images a CSV file lists: a path column (relative paths from the CSV's folder) and a
    /// label column, either class indices (0, 1, ...) or class names (numbered in name order).
    /// A header row is used when it names the columns `path` and `label` (in any order);
    /// otherwise the first two columns are path and label.
    pub fn from_csv(csv_file: impl AsRef<Path>) -> Result<ImageFolder, DataError> {
        let csv_file = csv_file.as_ref();
        let base = csv_file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_path(csv_file)
            .map_err(|e| DataError::bad_file(csv_file, e))?;
        let mut rows = Vec::new();
        for (line, record) in reader.records().enumerate() {
            let record = record.map_err(|e| DataError::bad_file(csv_file, e))?;
            rows.push((line + 1, record));
        }
        let (mut path_col, mut label_col) = (0, 1);
        if let Some((_, head)) = rows.first() {
            let names: Vec<String> = head.iter().map(|h| h.to_ascii_lowercase()).collect();
            let find = |n: &str| names.iter().position(|h| h == n);
            if let (Some(p), Some(l)) = (find("path"), find("label")) {
                (path_col, label_col) = (p, l);
                rows.remove(0);
            }
        }
        let mut entries = Vec::with_capacity(rows.len());
        for (line, record) in &rows {
            let (Some(path), Some(label)) = (record.get(path_col), record.get(label_col)) else {
                return Err(DataError::bad_file(
                    csv_file,
                    format!("line {line}: expected a path and a label"),
                ));
            };
            entries.push((*line, base.join(path), label.to_owned()));
        }
        if entries.is_empty() {
            return Err(DataError::bad_file(csv_file, "no images listed"));
        }
        let numeric = entries.iter().all(|(_, _, l)| l.parse::<i64>().is_ok());
        let (classes, samples) = if numeric {
            let mut samples = Vec::with_capacity(entries.len());
            let mut highest = 0;
            for (line, path, label) in entries {
                let label: i64 = label.parse().unwrap_or(-1);
                if label < 0 {
                    return Err(DataError::bad_file(
                        csv_file,
                        format!("line {line}: label {label} is negative"),
                    ));
                }
                highest = highest.max(label);
                samples.push((path, label));
            }
            ((0..=highest).map(|c| c.to_string()).collect(), samples)
        } else {
            let names: BTreeMap<String, i64> = entries
                .iter()
                .map(|(_, _, l)| (l.clone(), 0))
                .collect::<BTreeMap<_, _>>()
                .into_keys()
                .enumerate()
                .map(|(i, n)| (n, i as i64))
                .collect();
            let samples = entries
                .into_iter()
                .map(|(_, p, l)| {
                    let label = names[&l];
                    (p, label)
                })
                .collect();
            (names.into_keys().collect(), samples)
        };
        Ok(ImageFolder {
            root: base,
            classes,
            samples,
            transform: None,
        })
    }

    /// Checks that every label is below `n` (a model's number of classes), naming the first
    /// image whose label is not; a CSV list with indices up to `n - 1` then has `n` classes.
    pub fn num_classes(mut self, n: usize) -> Result<ImageFolder, DataError> {
        if let Some((path, label)) = self.samples.iter().find(|(_, l)| *l as usize >= n) {
            return Err(DataError::bad_file(
                path,
                format!(
                    "label {label} is out of range for {n} classes (0 to {})",
                    n.max(1) - 1
                ),
            ));
        }
        while self.classes.len() < n {
            self.classes.push(self.classes.len().to_string());
        }
        Ok(self)
    }

    /// The same images through `transform` (e.g. a [`Compose`](crate::Compose)).
    pub fn transform(mut self, transform: impl Transform + 'static) -> ImageFolder {
        self.transform = Some(Arc::new(transform));
        self
    }

    /// Class names, indexed by label.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Each image's path and label.
    pub fn samples(&self) -> &[(PathBuf, i64)] {
        &self.samples
    }

    /// Image `index` and its label, transformed as the loader's first epoch with `seed` would
    /// (PyTorch's `dataset[index]`, to look at).
    pub fn sample(&self, index: usize, seed: u64) -> Result<(RgbImage, i64), DataError> {
        let stop = AtomicBool::new(false);
        let skipped = Mutex::new(Vec::new());
        let ctx = BatchContext {
            seed,
            epoch: 0,
            device: Device::Cpu,
            stop: &stop,
            skip_bad_files: false,
            skipped: &skipped,
        };
        let image = self.image(index, &mut ctx.rng(index))?;
        Ok((image, self.samples[index].1))
    }

    /// Reads, decodes and transforms one image.
    pub fn image(&self, index: usize, rng: &mut Rng) -> Result<RgbImage, DataError> {
        let (path, _) = self
            .samples
            .get(index)
            .ok_or_else(|| DataError::invalid(format!("index {index} of {}", self.len())))?;
        let bytes = std::fs::read(path).map_err(|e| DataError::bad_file(path, e))?;
        let image = decode(&bytes).map_err(|e| DataError::bad_file(path, e))?;
        match &self.transform {
            Some(t) => t
                .apply(image, rng)
                .map_err(|e| DataError::bad_file(path, e)),
            None => Ok(image),
        }
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn batch(&self, indices: &[usize], ctx: &BatchContext<'_>) -> Result<Batch, DataError> {
        let mut images = Vec::with_capacity(indices.len());
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            if ctx.stopped() {
                break;
            }
            match self.image(i, &mut ctx.rng(i)) {
                Ok(image) => {
                    images.push(image);
                    labels.push(self.samples[i].1);
                }
                Err(e @ DataError::BadFile { .. }) if ctx.skip_bad_files => {
                    if let Ok(mut skipped) = ctx.skipped.lock() {
                        skipped.push(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let (w, h) = match images.first() {
            Some(first) => (first.width, first.height),
            None => (1, 1),
        };
        if let Some((k, odd)) = images
            .iter()
            .enumerate()
            .find(|(_, im)| (im.width, im.height) != (w, h))
        {
            let path = &self.samples[indices[k]].0;
            return Err(DataError::bad_file(
                path,
                format!(
                    "{}x{} after the transform, but the batch's first image is {w}x{h}: add a \
                     Resize + CenterCrop or a RandomResizedCrop so that all images have one size",
                    odd.width, odd.height
                ),
            ));
        }
        let size = [images.len() as i64, 3, i64::from(h), i64::from(w)];
        // For a GPU: bytes, pinned, normalized on the device after a copy 4x smaller than
        // floats. For the CPU: floats normalized here, in the worker, in the same pass that
        // lays the pixels out as planes (normalizing in the loop's thread would hold it up).
        let normalize_here = self.normalization().filter(|_| !ctx.device.is_cuda());
        let inputs = match normalize_here {
            None => planes::<u8>(&images, size, |_, v| v)?,
            Some(norm) => {
                let scale = norm.std.map(|s| (1.0 / (s * 255.0)) as f32);
                let shift = norm.mean.map(|m| (m * 255.0) as f32);
                planes::<f32>(&images, size, |c, v| (f32::from(v) - shift[c]) * scale[c])?
            }
        };
        if images.is_empty() {
            return Ok(Batch::empty(inputs));
        }
        Ok(Batch {
            inputs: ctx.pin(inputs)?,
            targets: ctx.pin(Tensor::from_slice(&labels))?,
        })
    }

    fn normalization(&self) -> Option<Normalize> {
        self.transform.as_ref().and_then(|t| t.normalization())
    }

    fn unit(&self) -> &'static str {
        "images"
    }
}

/// A `[N, 3, H, W]` tensor of `images`' pixels laid out as planes, each byte through
/// `value(channel, byte)`, written in place: no second copy of the batch.
fn planes<T: tch::kind::Element + Copy>(
    images: &[RgbImage],
    size: [i64; 4],
    value: impl Fn(usize, u8) -> T,
) -> Result<Tensor, DataError> {
    let tensor = Tensor::f_empty(size, (T::KIND, Device::Cpu))?;
    if images.is_empty() {
        return Ok(tensor);
    }
    let plane = (size[2] * size[3]) as usize;
    // SAFETY: a fresh contiguous tensor of T with N*3*H*W elements, owned here.
    let out = unsafe {
        std::slice::from_raw_parts_mut(tensor.data_ptr() as *mut T, images.len() * 3 * plane)
    };
    for (image, out) in images.iter().zip(out.chunks_exact_mut(3 * plane)) {
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (p, px) in image.pixels.chunks_exact(3).enumerate() {
            r[p] = value(0, px[0]);
            g[p] = value(1, px[1]);
            b[p] = value(2, px[2]);
        }
    }
    Ok(tensor)
}

/// Inputs and targets held as two tensors whose first dimensions match, as PyTorch's
/// `TensorDataset`; read from `.npy`, `.npz` or safetensors files.
pub struct TensorDataset {
    // Tensor is Send but not Sync: workers take turns to index it.
    tensors: Mutex<(Tensor, Tensor)>,
    len: usize,
}

impl std::fmt::Debug for TensorDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.tensors.lock() {
            Ok(t) => write!(
                f,
                "TensorDataset({} samples: inputs {:?} {:?}, targets {:?} {:?})",
                self.len,
                t.0.size(),
                t.0.kind(),
                t.1.size(),
                t.1.kind()
            ),
            Err(_) => write!(f, "TensorDataset({} samples)", self.len),
        }
    }
}

impl TensorDataset {
    /// Samples along the first dimension of both.
    pub fn new(inputs: Tensor, targets: Tensor) -> Result<TensorDataset, DataError> {
        let (n, m) = (
            inputs.size().first().copied(),
            targets.size().first().copied(),
        );
        match (n, m) {
            (Some(n), Some(m)) if n == m => Ok(TensorDataset {
                tensors: Mutex::new((
                    inputs.to_device(Device::Cpu),
                    targets.to_device(Device::Cpu),
                )),
                len: n as usize,
            }),
            _ => Err(DataError::invalid(format!(
                "inputs of shape {:?} and targets of shape {:?}: their first dimensions (the \
                 number of samples) must be equal",
                inputs.size(),
                targets.size()
            ))),
        }
    }

    /// Checks that the targets are class indices below `n` (a model's number of classes),
    /// naming the first sample whose target is not, instead of a loss failing mid-epoch.
    pub fn num_classes(self, n: usize) -> Result<TensorDataset, DataError> {
        {
            let t = self
                .tensors
                .lock()
                .map_err(|_| DataError::invalid("a worker panicked holding the data set"))?;
            let targets = &t.1;
            if targets.is_floating_point() || targets.is_complex() {
                return Err(DataError::invalid(format!(
                    "targets of kind {:?} are not class indices",
                    targets.kind()
                )));
            }
            let flat = targets.f_flatten(0, -1)?;
            let bad = flat.f_lt(0)?.f_logical_or(&flat.f_ge(n as i64)?)?;
            if bad.f_any()?.int64_value(&[]) != 0 {
                let first = bad.f_nonzero()?.int64_value(&[0, 0]);
                let per_sample = (flat.numel() / self.len.max(1)).max(1) as i64;
                return Err(DataError::invalid(format!(
                    "sample {}: target {} is out of range for {n} classes (0 to {})",
                    first / per_sample,
                    flat.int64_value(&[first]),
                    n.max(1) - 1
                )));
            }
        }
        Ok(self)
    }

    /// Two `.npy` files, as NumPy's `np.save` writes them.
    pub fn from_npy(
        inputs: impl AsRef<Path>,
        targets: impl AsRef<Path>,
    ) -> Result<TensorDataset, DataError> {
        let read = |p: &Path| Tensor::read_npy(p).map_err(|e| DataError::bad_file(p, e));
        TensorDataset::new(read(inputs.as_ref())?, read(targets.as_ref())?)
    }

    /// Two arrays of an `.npz` file (`np.savez`), by name.
    pub fn from_npz(
        file: impl AsRef<Path>,
        inputs: &str,
        targets: &str,
    ) -> Result<TensorDataset, DataError> {
        let file = file.as_ref();
        let arrays = Tensor::read_npz(file).map_err(|e| DataError::bad_file(file, e))?;
        TensorDataset::from_named(file, arrays, inputs, targets)
    }

    /// Two tensors of a safetensors file, by name.
    pub fn from_safetensors(
        file: impl AsRef<Path>,
        inputs: &str,
        targets: &str,
    ) -> Result<TensorDataset, DataError> {
        let file = file.as_ref();
        let tensors = Tensor::read_safetensors(file).map_err(|e| DataError::bad_file(file, e))?;
        TensorDataset::from_named(file, tensors, inputs, targets)
    }

    fn from_named(
        file: &Path,
        tensors: Vec<(String, Tensor)>,
        inputs: &str,
        targets: &str,
    ) -> Result<TensorDataset, DataError> {
        let names: Vec<String> = tensors.iter().map(|(n, _)| n.clone()).collect();
        let mut by_name: BTreeMap<String, Tensor> = tensors.into_iter().collect();
        let mut take = |name: &str| {
            by_name.remove(name).ok_or_else(|| {
                DataError::bad_file(file, format!("no array named {name:?} (it has {names:?})"))
            })
        };
        let (x, y) = (take(inputs)?, take(targets)?);
        TensorDataset::new(x, y)
    }
}

impl Dataset for TensorDataset {
    fn len(&self) -> usize {
        self.len
    }

    fn batch(&self, indices: &[usize], ctx: &BatchContext<'_>) -> Result<Batch, DataError> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len) {
            return Err(DataError::invalid(format!("index {bad} of {}", self.len)));
        }
        let index = Tensor::from_slice(&indices.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let (x, y) = {
            let t = self
                .tensors
                .lock()
                .map_err(|_| DataError::invalid("a worker panicked holding the data set"))?;
            (
                t.0.f_index_select(0, &index)?,
                t.1.f_index_select(0, &index)?,
            )
        };
        Ok(Batch {
            inputs: ctx.pin(x)?,
            targets: ctx.pin(y)?,
        })
    }
}

/// Some samples of a data set, by index (as `torch.utils.data.Subset`).
#[derive(Clone)]
pub struct Subset<D> {
    dataset: Arc<D>,
    indices: Vec<usize>,
}

impl<D: Dataset> Subset<D> {
    /// The samples at `indices` of `dataset`; an index past its end is an error.
    pub fn new(dataset: Arc<D>, indices: Vec<usize>) -> Result<Subset<D>, DataError> {
        let len = dataset.len();
        if let Some(bad) = indices.iter().find(|&&i| i >= len) {
            return Err(DataError::invalid(format!(
                "subset index {bad} is past the data set's {len} samples"
            )));
        }
        Ok(Subset { dataset, indices })
    }

    /// The indices into the whole data set.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// The whole data set.
    pub fn dataset(&self) -> &D {
        &self.dataset
    }
}

impl<D: Dataset> Dataset for Subset<D> {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn batch(&self, indices: &[usize], ctx: &BatchContext<'_>) -> Result<Batch, DataError> {
        let mapped: Result<Vec<usize>, DataError> = indices
            .iter()
            .map(|&i| {
                self.indices.get(i).copied().ok_or_else(|| {
                    DataError::invalid(format!("index {i} of a subset of {}", self.indices.len()))
                })
            })
            .collect();
        self.dataset.batch(&mapped?, ctx)
    }

    fn normalization(&self) -> Option<Normalize> {
        self.dataset.normalization()
    }

    fn unit(&self) -> &'static str {
        self.dataset.unit()
    }
}

/// Subsets and splits of any data set.
pub trait DatasetExt: Dataset + Sized {
    /// The samples at `indices`.
    fn subset(self, indices: Vec<usize>) -> Result<Subset<Self>, DataError> {
        Subset::new(Arc::new(self), indices)
    }

    /// A random split into a first part of `fraction` of the samples (rounded) and the rest,
    /// the same for the same `seed` (as `random_split(ds, [f, 1 - f], generator)`).
    fn split(self, fraction: f64, seed: u64) -> Result<(Subset<Self>, Subset<Self>), DataError> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(DataError::invalid(format!(
                "split fraction {fraction}: it must be between 0 and 1"
            )));
        }
        let len = self.len();
        let order = notebook_helpers::ShardedSampler::for_rank(len, 0, 1)
            .seed(seed)
            .indices(0);
        let first = (len as f64 * fraction).round() as usize;
        let dataset = Arc::new(self);
        Ok((
            Subset::new(dataset.clone(), order[..first].to_vec())?,
            Subset::new(dataset, order[first..].to_vec())?,
        ))
    }
}

impl<D: Dataset + Sized> DatasetExt for D {}
