//! Tensors as images: `[C,H,W]` (C = 1, 3 or 4) or `[H,W]` as one PNG, `[N,C,H,W]` as a grid.

use crate::display::Png;
use crate::plot::{PlotError, encode_png};
use tch::{Device, Kind, Tensor};

/// Pixel bytes in 0..=255: uint8 as is; floats in [0, 1] scaled by 255; anything else
/// stretched from its min..max (as torchvision's `normalize=True`).
fn to_u8(t: &Tensor) -> Tensor {
    let t = t.detach().to_device(Device::Cpu);
    if t.kind() == Kind::Uint8 {
        return t;
    }
    let t = t.to_kind(Kind::Float);
    let (min, max) = (t.min().double_value(&[]), t.max().double_value(&[]));
    let scaled = if min >= 0.0 && max <= 1.0 {
        t * 255.0
    } else if max > min {
        (t - min) * (255.0 / (max - min))
    } else {
        t.zeros_like()
    };
    scaled.round().clamp(0.0, 255.0).to_kind(Kind::Uint8)
}

fn check_channels(c: i64) -> Result<png::ColorType, PlotError> {
    match c {
        1 => Ok(png::ColorType::Grayscale),
        3 => Ok(png::ColorType::Rgb),
        4 => Ok(png::ColorType::Rgba),
        _ => Err(PlotError(format!(
            "an image needs 1, 3 or 4 channels, not {c}"
        ))),
    }
}

/// A `[C,H,W]` or `[H,W]` tensor as a PNG image.
pub fn image(t: &Tensor) -> Result<Png, PlotError> {
    let t = match t.dim() {
        2 => t.unsqueeze(0),
        3 => t.shallow_clone(),
        4 if t.size()[0] == 1 => t.squeeze_dim(0),
        d => {
            return Err(PlotError(format!(
                "image() takes a [C,H,W] or [H,W] tensor, not {d} dimensions {:?}; use image_grid for a batch",
                t.size()
            )));
        }
    };
    let (c, h, w) = (t.size()[0], t.size()[1], t.size()[2]);
    let color = check_channels(c)?;
    let hwc = to_u8(&t).permute([1, 2, 0]).contiguous();
    let bytes = Vec::<u8>::try_from(hwc.flatten(0, -1)).map_err(|e| PlotError(e.to_string()))?;
    encode_png(&bytes, w as u32, h as u32, color).map(Png)
}

/// A `[N,C,H,W]` batch as one PNG grid with `columns` images per row (like torchvision's
/// `make_grid`), 2 pixels apart. All images share one normalisation.
pub fn image_grid(t: &Tensor, columns: usize) -> Result<Png, PlotError> {
    if t.dim() != 4 {
        return Err(PlotError(format!(
            "image_grid() takes a [N,C,H,W] tensor, not {:?}",
            t.size()
        )));
    }
    let (n, c, h, w) = (t.size()[0], t.size()[1], t.size()[2], t.size()[3]);
    check_channels(c)?;
    if n == 0 {
        return Err(PlotError("image_grid() got no images".into()));
    }
    let columns = (columns.max(1) as i64).min(n);
    let rows = (n + columns - 1) / columns;
    const PAD: i64 = 2;
    let (gh, gw) = (rows * (h + PAD) + PAD, columns * (w + PAD) + PAD);
    let pixels = to_u8(t);
    let grid = Tensor::zeros([c, gh, gw], (Kind::Uint8, Device::Cpu));
    for i in 0..n {
        let (r, col) = (i / columns, i % columns);
        let (y, x) = (PAD + r * (h + PAD), PAD + col * (w + PAD));
        grid.narrow(1, y, h).narrow(2, x, w).copy_(&pixels.get(i));
    }
    image(&grid)
}
