//! torchvision's image transforms, by their names: `RandomResizedCrop`, `RandomHorizontalFlip`,
//! `Resize`, `CenterCrop`, `Normalize`, and `Compose` to chain them.
//!
//! They work on 8-bit RGB images in the loader's workers. `Normalize` is the exception: it is
//! kept aside and applied by the loader to whole batches on the device they go to, so that a
//! batch crosses PCIe as bytes (4x fewer than floats) and the GPU does the arithmetic.
//!
//! Random transforms draw from the generator the loader seeds for each sample from the loader's
//! seed, the epoch and the sample's index: a fixed seed gives the same images whatever the
//! number of workers or ranks.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use fast_image_resize as fir;
use rand::Rng as _;

use crate::image::RgbImage;

/// The random generator a transform draws from (one per sample, seeded by the loader).
pub type Rng = rand_chacha::ChaCha8Rng;

/// ImageNet's channel means and standard deviations, as torchvision's models expect them.
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
/// See [`IMAGENET_MEAN`].
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// One step of an image pipeline.
pub trait Transform: Send + Sync {
    /// The transformed image. An error is reported with the file it came from.
    fn apply(&self, image: RgbImage, rng: &mut Rng) -> Result<RgbImage, String>;

    /// The normalization the loader applies to batches on their device (only [`Normalize`]
    /// and the [`Compose`] that holds one have it).
    fn normalization(&self) -> Option<Normalize> {
        None
    }

    /// How it prints (as torchvision's `repr`).
    fn describe(&self) -> String;
}

impl<T: Transform + ?Sized> Transform for Arc<T> {
    fn apply(&self, image: RgbImage, rng: &mut Rng) -> Result<RgbImage, String> {
        (**self).apply(image, rng)
    }
    fn normalization(&self) -> Option<Normalize> {
        (**self).normalization()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// Transforms applied in turn, as `torchvision.transforms.Compose([...])`.
#[derive(Clone, Default)]
pub struct Compose(Vec<Arc<dyn Transform>>);

impl Compose {
    /// An empty pipeline; add steps with [`then`](Self::then).
    pub fn new() -> Compose {
        Compose(Vec::new())
    }

    /// The pipeline with `step` added at its end.
    pub fn then(mut self, step: impl Transform + 'static) -> Compose {
        self.0.push(Arc::new(step));
        self
    }
}

impl Transform for Compose {
    fn apply(&self, mut image: RgbImage, rng: &mut Rng) -> Result<RgbImage, String> {
        for step in &self.0 {
            image = step.apply(image, rng)?;
        }
        Ok(image)
    }

    fn normalization(&self) -> Option<Normalize> {
        self.0.iter().rev().find_map(|step| step.normalization())
    }

    fn describe(&self) -> String {
        let steps: Vec<String> = self
            .0
            .iter()
            .map(|s| format!("    {}", s.describe()))
            .collect();
        format!("Compose(\n{}\n)", steps.join("\n"))
    }
}

impl fmt::Debug for Compose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A random part of the image (between `scale` of its area, with an aspect ratio in `ratio`)
/// resized to `size`: torchvision's `RandomResizedCrop(size)` with its defaults (scale 0.08 to
/// 1, ratio 3/4 to 4/3, bilinear with antialiasing).
#[derive(Clone, Debug)]
pub struct RandomResizedCrop {
    height: u32,
    width: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
}

impl RandomResizedCrop {
    /// Square crops of `size` x `size`.
    pub fn new(size: u32) -> RandomResizedCrop {
        RandomResizedCrop::with_size(size, size)
    }

    /// Crops of `height` x `width`.
    pub fn with_size(height: u32, width: u32) -> RandomResizedCrop {
        RandomResizedCrop {
            height: height.max(1),
            width: width.max(1),
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        }
    }

    /// The range of the crop's area, as fractions of the image's.
    pub fn scale(mut self, low: f64, high: f64) -> Self {
        self.scale = (low, high.max(low));
        self
    }

    /// The range of the crop's aspect ratio (width / height).
    pub fn ratio(mut self, low: f64, high: f64) -> Self {
        self.ratio = (low, high.max(low));
        self
    }

    /// torchvision's `get_params`: ten tries at a random box, then the central box.
    fn window(&self, width: u32, height: u32, rng: &mut Rng) -> (u32, u32, u32, u32) {
        let (w0, h0) = (f64::from(width), f64::from(height));
        let area = w0 * h0;
        let (log_low, log_high) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target = area * uniform(rng, self.scale.0, self.scale.1);
            let aspect = uniform(rng, log_low, log_high).exp();
            let w = (target * aspect).sqrt().round();
            let h = (target / aspect).sqrt().round();
            if w > 0.0 && h > 0.0 && w <= w0 && h <= h0 {
                let (w, h) = (w as u32, h as u32);
                let top = rng.gen_range(0..=height - h);
                let left = rng.gen_range(0..=width - w);
                return (left, top, w, h);
            }
        }
        let in_ratio = w0 / h0;
        let (w, h) = if in_ratio < self.ratio.0 {
            (width, (w0 / self.ratio.0).round() as u32)
        } else if in_ratio > self.ratio.1 {
            ((h0 * self.ratio.1).round() as u32, height)
        } else {
            (width, height)
        };
        let (w, h) = (w.clamp(1, width), h.clamp(1, height));
        ((width - w) / 2, (height - h) / 2, w, h)
    }
}

fn uniform(rng: &mut Rng, low: f64, high: f64) -> f64 {
    if high > low {
        rng.gen_range(low..high)
    } else {
        low
    }
}

impl Transform for RandomResizedCrop {
    fn apply(&self, image: RgbImage, rng: &mut Rng) -> Result<RgbImage, String> {
        let (left, top, w, h) = self.window(image.width, image.height, rng);
        resize_window(&image, (left, top, w, h), self.width, self.height)
    }

    fn describe(&self) -> String {
        format!(
            "RandomResizedCrop(size=({}, {}), scale=({}, {}), ratio=({:.4}, {:.4}), antialias=True)",
            self.height, self.width, self.scale.0, self.scale.1, self.ratio.0, self.ratio.1
        )
    }
}

/// Mirrors the image left to right with probability `p` (0.5 by default), as
/// `RandomHorizontalFlip(p)`.
#[derive(Clone, Debug)]
pub struct RandomHorizontalFlip {
    p: f64,
}

impl RandomHorizontalFlip {
    pub fn new(p: f64) -> RandomHorizontalFlip {
        RandomHorizontalFlip { p }
    }
}

impl Default for RandomHorizontalFlip {
    fn default() -> Self {
        RandomHorizontalFlip::new(0.5)
    }
}

impl Transform for RandomHorizontalFlip {
    fn apply(&self, mut image: RgbImage, rng: &mut Rng) -> Result<RgbImage, String> {
        if rng.r#gen::<f64>() < self.p {
            for row in image.pixels.chunks_exact_mut(image.width as usize * 3) {
                // Reverse the pixels, each pixel's three bytes staying in order.
                let (mut i, mut j) = (0, row.len() / 3);
                while i + 1 < j {
                    j -= 1;
                    for c in 0..3 {
                        row.swap(i * 3 + c, j * 3 + c);
                    }
                    i += 1;
                }
            }
        }
        Ok(image)
    }

    fn describe(&self) -> String {
        format!("RandomHorizontalFlip(p={})", self.p)
    }
}

/// Resizes (bilinear, antialiased), as `Resize(size)`: [`Resize::new`] sets the shorter side
/// and keeps the aspect ratio, [`Resize::exact`] sets both sides.
#[derive(Clone, Debug)]
pub struct Resize {
    target: ResizeTarget,
}

#[derive(Clone, Debug)]
enum ResizeTarget {
    ShorterSide(u32),
    Exact { height: u32, width: u32 },
}

impl Resize {
    /// The shorter side becomes `size` (as torchvision's `Resize(256)`).
    pub fn new(size: u32) -> Resize {
        Resize {
            target: ResizeTarget::ShorterSide(size.max(1)),
        }
    }

    /// Exactly `height` x `width` (as `Resize((h, w))`).
    pub fn exact(height: u32, width: u32) -> Resize {
        Resize {
            target: ResizeTarget::Exact {
                height: height.max(1),
                width: width.max(1),
            },
        }
    }

    fn output(&self, width: u32, height: u32) -> (u32, u32) {
        match self.target {
            ResizeTarget::Exact { height, width } => (width, height),
            // torchvision truncates the longer side: int(size * long / short).
            ResizeTarget::ShorterSide(size) if width <= height => (
                size,
                ((u64::from(size) * u64::from(height)) / u64::from(width)) as u32,
            ),
            ResizeTarget::ShorterSide(size) => (
                ((u64::from(size) * u64::from(width)) / u64::from(height)) as u32,
                size,
            ),
        }
    }
}

impl Transform for Resize {
    fn apply(&self, image: RgbImage, _: &mut Rng) -> Result<RgbImage, String> {
        let (w, h) = self.output(image.width, image.height);
        if (w, h) == (image.width, image.height) {
            return Ok(image);
        }
        resize_window(&image, (0, 0, image.width, image.height), w, h)
    }

    fn describe(&self) -> String {
        match self.target {
            ResizeTarget::ShorterSide(s) => format!("Resize(size={s}, antialias=True)"),
            ResizeTarget::Exact { height, width } => {
                format!("Resize(size=({height}, {width}), antialias=True)")
            }
        }
    }
}

/// The central `height` x `width` part, as `CenterCrop(size)`; a smaller image is padded with
/// black first, as torchvision does.
#[derive(Clone, Debug)]
pub struct CenterCrop {
    height: u32,
    width: u32,
}

impl CenterCrop {
    pub fn new(size: u32) -> CenterCrop {
        CenterCrop::with_size(size, size)
    }

    pub fn with_size(height: u32, width: u32) -> CenterCrop {
        CenterCrop {
            height: height.max(1),
            width: width.max(1),
        }
    }
}

impl Transform for CenterCrop {
    fn apply(&self, image: RgbImage, _: &mut Rng) -> Result<RgbImage, String> {
        let (w, h) = (self.width, self.height);
        // torchvision: top = int(round((H - h) / 2)), negative when padding.
        let top = ((f64::from(image.height) - f64::from(h)) / 2.0).round() as i64;
        let left = ((f64::from(image.width) - f64::from(w)) / 2.0).round() as i64;
        let mut out = vec![0u8; w as usize * h as usize * 3];
        for y in 0..h as i64 {
            let sy = y + top;
            if sy < 0 || sy >= i64::from(image.height) {
                continue;
            }
            let x0 = left.max(0);
            let x1 = (left + i64::from(w)).min(i64::from(image.width));
            if x1 <= x0 {
                continue;
            }
            let src = (sy as usize * image.width as usize + x0 as usize) * 3;
            let dst = (y as usize * w as usize + (x0 - left) as usize) * 3;
            let n = (x1 - x0) as usize * 3;
            out[dst..dst + n].copy_from_slice(&image.pixels[src..src + n]);
        }
        RgbImage::new(w, h, out)
    }

    fn describe(&self) -> String {
        format!("CenterCrop(size=({}, {}))", self.height, self.width)
    }
}

/// `(x / 255 - mean) / std` per channel, as `ToTensor()` followed by `Normalize(mean, std)`.
/// The loader applies it to each batch on the batch's device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalize {
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

impl Normalize {
    pub fn new(mean: [f64; 3], std: [f64; 3]) -> Normalize {
        Normalize { mean, std }
    }

    /// ImageNet's statistics ([`IMAGENET_MEAN`], [`IMAGENET_STD`]).
    pub fn imagenet() -> Normalize {
        Normalize::new(IMAGENET_MEAN, IMAGENET_STD)
    }

    /// Float images in `[N, 3, H, W]` from bytes, on the bytes' device.
    pub fn apply_to_batch(&self, images: &tch::Tensor) -> Result<tch::Tensor, tch::TchError> {
        let device = images.device();
        let mean = tch::Tensor::from_slice(&self.mean.map(|m| (m * 255.0) as f32))
            .to_device(device)
            .view([1, 3, 1, 1]);
        let scale = tch::Tensor::from_slice(&self.std.map(|s| (1.0 / (s * 255.0)) as f32))
            .to_device(device)
            .view([1, 3, 1, 1]);
        images
            .f_to_kind(tch::Kind::Float)?
            .f_sub(&mean)?
            .f_mul(&scale)
    }
}

impl Transform for Normalize {
    fn apply(&self, image: RgbImage, _: &mut Rng) -> Result<RgbImage, String> {
        Ok(image)
    }

    fn normalization(&self) -> Option<Normalize> {
        Some(*self)
    }

    fn describe(&self) -> String {
        format!("Normalize(mean={:?}, std={:?})", self.mean, self.std)
    }
}

thread_local! {
    /// Each worker keeps its resizer (and its buffers) from image to image.
    static RESIZER: RefCell<fir::Resizer> = RefCell::new(fir::Resizer::new());
}

/// The window `(left, top, width, height)` of `image` resized to `width` x `height`, bilinear
/// with antialiasing (the filter scaled to the reduction, as PIL and torchvision do).
fn resize_window(
    image: &RgbImage,
    (left, top, w, h): (u32, u32, u32, u32),
    width: u32,
    height: u32,
) -> Result<RgbImage, String> {
    let source = fir::images::ImageRef::new(
        image.width,
        image.height,
        &image.pixels,
        fir::PixelType::U8x3,
    )
    .map_err(|e| format!("resize: {e}"))?;
    let mut target = fir::images::Image::new(width, height, fir::PixelType::U8x3);
    let options = fir::ResizeOptions::new()
        .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear))
        .crop(f64::from(left), f64::from(top), f64::from(w), f64::from(h));
    RESIZER
        .with(|r| r.borrow_mut().resize(&source, &mut target, &options))
        .map_err(|e| format!("resize: {e}"))?;
    RgbImage::new(width, height, target.into_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn gradient(width: u32, height: u32) -> RgbImage {
        let pixels = (0..height)
            .flat_map(|y| (0..width).flat_map(move |x| [x as u8, y as u8, 7]))
            .collect();
        RgbImage::new(width, height, pixels).unwrap()
    }

    #[test]
    fn random_resized_crop_gives_the_size_and_the_same_image_for_the_same_seed() {
        let t = Compose::new()
            .then(RandomResizedCrop::new(32))
            .then(RandomHorizontalFlip::default());
        let run = |seed| {
            t.apply(gradient(100, 60), &mut Rng::seed_from_u64(seed))
                .unwrap()
        };
        let a = run(1);
        assert_eq!((a.width, a.height, a.pixels.len()), (32, 32, 32 * 32 * 3));
        assert_eq!(a, run(1));
        assert!((2..20).any(|s| run(s) != a), "the seed changes the crop");
    }

    #[test]
    fn the_window_stays_inside_and_falls_back_to_the_centre() {
        let t = RandomResizedCrop::new(8);
        let mut rng = Rng::seed_from_u64(3);
        for _ in 0..500 {
            let (l, top, w, h) = t.window(50, 30, &mut rng);
            assert!(l + w <= 50 && top + h <= 30 && w > 0 && h > 0);
        }
        // A very wide image with a scale no box can reach: the central box at the widest ratio.
        let t = RandomResizedCrop::new(8).scale(2.0, 2.0);
        assert_eq!(t.window(400, 10, &mut rng), (193, 0, 13, 10));
    }

    #[test]
    fn resize_keeps_the_ratio_and_center_crop_pads() {
        let mut rng = Rng::seed_from_u64(0);
        let r = Resize::new(20).apply(gradient(100, 60), &mut rng).unwrap();
        assert_eq!((r.width, r.height), (33, 20));
        let c = CenterCrop::new(4).apply(gradient(6, 6), &mut rng).unwrap();
        assert_eq!(&c.pixels[..6], &[1, 1, 7, 2, 1, 7]);
        let padded = CenterCrop::new(4).apply(gradient(2, 2), &mut rng).unwrap();
        assert_eq!(&padded.pixels[..6], &[0; 6], "black border");
        assert_eq!(&padded.pixels[15..18], &[0, 0, 7], "image in the middle");
    }

    #[test]
    fn flip_mirrors_rows() {
        let mut rng = Rng::seed_from_u64(0);
        let f = RandomHorizontalFlip::new(1.0)
            .apply(gradient(3, 1), &mut rng)
            .unwrap();
        assert_eq!(f.pixels, vec![2, 0, 7, 1, 0, 7, 0, 0, 7]);
    }

    #[test]
    fn normalize_is_found_in_a_compose_and_applied_to_bytes() {
        let t = Compose::new()
            .then(CenterCrop::new(2))
            .then(Normalize::imagenet());
        assert_eq!(t.normalization(), Some(Normalize::imagenet()));
        let bytes = tch::Tensor::from_slice(&[255u8; 12]).view([1, 3, 2, 2]);
        let x = Normalize::imagenet().apply_to_batch(&bytes).unwrap();
        let r = x.double_value(&[0, 0, 0, 0]);
        assert!((r - (1.0 - 0.485) / 0.229).abs() < 1e-4, "{r}");
    }
}
