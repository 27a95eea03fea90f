//! Your own data for tch, as torchvision and `torch.utils.data` name things: image folders and
//! CSV lists of images ([`ImageFolder`]), arrays ([`TensorDataset`] from `.npy`, `.npz`,
//! safetensors), [`Subset`]s and random splits, torchvision's [`transforms`], and a
//! [`DataLoader`] whose worker threads decode and augment whole batches ahead of the loop.
//!
//! | PyTorch | here |
//! |---|---|
//! | `ImageFolder(root, transform=t)` | `ImageFolder::new(root)?.transform(t)` |
//! | `TensorDataset(x, y)` | `TensorDataset::new(x, y)?`, `::from_npy`, `::from_npz`, `::from_safetensors` |
//! | `random_split(ds, [0.9, 0.1], g)` | `ds.split(0.9, seed)?` |
//! | `DataLoader(ds, batch_size, shuffle, num_workers, pin_memory, drop_last)` | `DataLoader::new(ds).batch_size(b).shuffle(true).workers(n).device(d).drop_last(true)` |
//! | `DistributedSampler(ds).set_epoch(e)` | the loader's share by rank (from the launcher), `loader.epoch(e)` |
//! | `transforms.Compose([...])` | `Compose::new().then(...)` |

mod datasets;
mod error;
mod image;
mod loader;
pub mod transforms;

pub use datasets::{Batch, BatchContext, Dataset, DatasetExt, ImageFolder, Subset, TensorDataset};
pub use error::DataError;
pub use image::{IMAGE_EXTENSIONS, RgbImage, decode};
pub use loader::{DataLoader, Epoch, available_cpus};
pub use transforms::{
    CenterCrop, Compose, IMAGENET_MEAN, IMAGENET_STD, Normalize, RandomHorizontalFlip,
    RandomResizedCrop, Resize, Transform,
};
