//! Small real datasets bundled with the prelude, so a first classifier needs no download
//! (compute nodes often have no internet).

#[cfg(feature = "tch")]
use tch::{Device, Kind, Tensor};

#[cfg_attr(not(feature = "tch"), allow(dead_code))]
static DIGITS: &[u8] = include_bytes!("../data/digits.xy");

/// The UCI handwritten digits (1797 grey 8x8 images, as scikit-learn's `load_digits`):
/// `(images [1797, 1, 8, 8] float in 0..=1, labels [1797] int64 in 0..=9)`.
#[cfg(feature = "tch")]
pub fn digits() -> (Tensor, Tensor) {
    let (pixels, labels, n, features) = decode(DIGITS).expect("the bundled digits file is valid");
    debug_assert_eq!(features, 64);
    let images = Tensor::from_slice(&pixels).view([n as i64, 1, 8, 8]) / 16.0;
    let labels = Tensor::from_slice(&labels.iter().map(|l| *l as i64).collect::<Vec<i64>>());
    (images.to_device(Device::Cpu).to_kind(Kind::Float), labels)
}

/// smartcore's layout: features (u64), samples (u64), pixels (f32...), labels (f32...).
#[cfg_attr(not(feature = "tch"), allow(dead_code))]
fn decode(bytes: &[u8]) -> Option<(Vec<f32>, Vec<f32>, usize, usize)> {
    let u64_at =
        |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?) as usize);
    let (features, samples) = (u64_at(0)?, u64_at(8)?);
    let floats = |from: usize, count: usize| -> Option<Vec<f32>> {
        let raw = bytes.get(from..from + count * 4)?;
        Some(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    };
    let pixels = floats(16, samples * features)?;
    let labels = floats(16 + samples * features * 4, samples)?;
    Some((pixels, labels, samples, features))
}

/// CIFAR-10 in its binary format, as loaded by [`cifar10`].
#[cfg(feature = "tch")]
pub struct Cifar10 {
    /// `[N, 3, 32, 32]` float in 0..=1.
    pub train_images: tch::Tensor,
    /// `[N]` int64 in 0..=9.
    pub train_labels: tch::Tensor,
    pub test_images: tch::Tensor,
    pub test_labels: tch::Tensor,
}

/// The class names, in label order.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

#[cfg(feature = "tch")]
const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

/// Reads `cifar-10-batches-bin` (`data_batch_1.bin` .. `data_batch_5.bin`, `test_batch.bin`):
/// records of one label byte and 3072 pixel bytes (red, green, blue planes of 32x32). Unlike
/// tch's loader it takes files of any number of records (a subset, or a small test file), and
/// decodes them in one tensor operation.
#[cfg(feature = "tch")]
pub fn cifar10(dir: impl AsRef<std::path::Path>) -> std::io::Result<Cifar10> {
    let dir = dir.as_ref();
    let read = |name: &str| -> std::io::Result<(Tensor, Tensor)> {
        let path = dir.join(name);
        let bytes = std::fs::read(&path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        if bytes.is_empty() || bytes.len() % CIFAR_RECORD != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: {} bytes is not a whole number of {CIFAR_RECORD}-byte CIFAR-10 records",
                    path.display(),
                    bytes.len()
                ),
            ));
        }
        let n = (bytes.len() / CIFAR_RECORD) as i64;
        let records = Tensor::from_slice(&bytes).view([n, CIFAR_RECORD as i64]);
        let labels = records.select(1, 0).to_kind(Kind::Int64);
        let images = records
            .narrow(1, 1, 3072)
            .view([n, 3, 32, 32])
            .to_kind(Kind::Float)
            / 255.0;
        Ok((images, labels))
    };
    let mut train = Vec::new();
    for i in 1..=5 {
        train.push(read(&format!("data_batch_{i}.bin"))?);
    }
    let (test_images, test_labels) = read("test_batch.bin")?;
    let (images, labels): (Vec<Tensor>, Vec<Tensor>) = train.into_iter().unzip();
    Ok(Cifar10 {
        train_images: Tensor::cat(&images, 0),
        train_labels: Tensor::cat(&labels, 0),
        test_images,
        test_labels,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bundled_digits_decode() {
        let (pixels, labels, n, features) = super::decode(super::DIGITS).unwrap();
        assert_eq!((n, features), (1797, 64));
        assert_eq!(pixels.len(), 1797 * 64);
        assert!(pixels.iter().all(|p| (0.0..=16.0).contains(p)));
        assert!(
            labels
                .iter()
                .all(|l| (0.0..=9.0).contains(l) && l.fract() == 0.0)
        );
        assert_eq!(labels.iter().filter(|l| **l == 0.0).count(), 178);
    }
}
